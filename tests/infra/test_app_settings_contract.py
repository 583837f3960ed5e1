"""The template and the code agree on app settings, containers and tables.

The rule, both directions (the code side is read by introspection, see code_contract.py):

* Nothing unread: every setting the template sets is read by the code (a Settings alias, an F&O environment key
  for an environment the template lists in FNO_ENVIRONMENTS, an identity-connection key for a connection the
  host or code uses, a %NAME% in host.json or a binding, a literal os.environ read) or is a platform setting on
  the explicit allow-list (AzureWebJobsStorage__*, APPLICATIONINSIGHTS_*).
* Nothing missing: the template sets every setting that
  - has no default in code;
  - is Azure-specific: the identity-based connection keys (blob/queue/table URIs, credential, clientId) of every
    connection, host storage included, and telemetry;
  - names a resource the template creates (*_CONTAINER, *_TABLE) or a schedule (*_SCHEDULE), so template and app
    cannot disagree and operators change them in one place;
  - the local profile (local.settings.example.json) changes from the code default, other than its local-only
    settings (a connection string, the emulator CA), or a %NAME% the host resolves: the local value is not the
    Azure one (TASKHUB_NAME, INBOUND_BLOB_SOURCE, ...);
  - holds job definitions (JSON-list settings defaulting to '[]'): they are deployment parameters;
  - is one of FNO_ENVIRONMENTS and the FNO_MAIN_* keys the code requires for the chosen deployment and auth mode.
* And the whole set, rendered with sample values for what only exists at deployment time, passes the app's own
  ``load_settings``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from croniter import croniter

from dmf.settings import Settings, load_settings
from tests.infra import code_contract as code
from tests.infra.bicep import Unknown
from tests.infra.conftest import VARIANTS, app_settings, evaluate_main, of_type


def render(settings: dict[str, Any]) -> dict[str, str]:
    """App settings as the app would see them, with samples standing in for deployment-time values."""
    out = {}
    for k, v in settings.items():
        if isinstance(v, Unknown):
            out[k] = v.sample
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        else:
            assert isinstance(v, str | int), f"{k} must be a string, got {v!r}"
            out[k] = str(v)
    return out


def code_reads(template_settings: dict[str, Any]) -> set[str]:
    names = set(code.settings_aliases().values())
    envs = [e.strip() for e in str(template_settings.get("FNO_ENVIRONMENTS", "main")).split(",") if e.strip()]
    for env in envs:
        names |= code.fno_setting_names(env)
    names |= {f"{c}__{s}" for c in code.connection_names() for s in code.CONNECTION_SUFFIXES}
    names |= code.percent_references()
    names |= code.environ_reads()
    return names


def required_settings(deployment: str, auth_mode: str) -> set[str]:
    aliases = code.settings_aliases()
    required = set(code.fields_without_default())
    required |= {f"{c}__{s}" for c in code.connection_names() for s in code.CONNECTION_SUFFIXES}
    required |= {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
    required |= {a for a in aliases.values() if a.endswith(("_CONTAINER", "_TABLE", "_SCHEDULE"))}
    local = code.local_profile()
    required |= {a for a in aliases.values() if a in local and a not in code.LOCAL_ONLY}
    required |= {a for a in code.percent_references() if a in aliases.values()}
    required |= {aliases[n] for n, f in Settings.model_fields.items() if n in aliases and f.default == "[]"}
    required |= {"FNO_ENVIRONMENTS"}
    required |= {f"FNO_MAIN_{k}" for k in code.required_fno_keys(deployment, auth_mode)}
    return required


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_template_sets_nothing_the_code_does_not_read(variant: str) -> None:
    settings = app_settings(evaluate_main(variant))
    unread = set(settings) - code_reads(settings) - code.PLATFORM_SETTINGS
    assert not unread, f"set by the template but read by nothing: {sorted(unread)}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_template_sets_everything_azure_needs(variant: str) -> None:
    settings = app_settings(evaluate_main(variant))
    missing = required_settings(settings["FNO_MAIN_DEPLOYMENT"], settings["FNO_MAIN_AUTH_MODE"]) - set(
        settings
    )
    assert not missing, f"read by the code but not set by the template: {sorted(missing)}"
    assert not set(settings) & code.LOCAL_ONLY, (
        "local-only settings (connection strings, emulator CA) in Azure"
    )


def test_the_rule_is_not_empty() -> None:
    # Guards the guard: the introspection finds what it must (a broken import would find nothing).
    req = required_settings("cloud", "client_secret")
    assert {
        "DATA_STORAGE__blobServiceUri",
        "DATA_STORAGE__queueServiceUri",
        "AzureWebJobsStorage__credential",
        "INBOUND_CONTAINER",
        "OUTCOMES_TABLE",
        "TASKHUB_NAME",
        "INBOUND_BLOB_SOURCE",
        "DRAIN_SCHEDULE",
        "RECURRING_EXPORTS",
        "EXPORT_JOBS",
        "FNO_MAIN_BASE_URL",
        "FNO_MAIN_CLIENT_SECRET",
        "FNO_MAIN_TENANT_ID",
    } <= req
    assert "FNO_MAIN_AUTHORITY" in required_settings("onprem", "client_secret")
    assert "DATA_STORAGE" not in req and "FNO_CA_BUNDLE" not in req


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_settings_pass_the_apps_own_validation(variant: str) -> None:
    main = evaluate_main(variant)
    rendered = render(app_settings(main))
    settings = load_settings(rendered)  # raises SettingsError naming every problem
    assert not settings.uses_connection_string
    env = settings.environment("main")
    assert env.auth_mode.value == main.param("fnoAuthMode")
    assert env.deployment.value == main.param("fnoDeployment")
    assert env.base_url == main.param("fnoBaseUrl")
    assert settings.inbound_blob_source == "EventGrid", "Flex Consumption supports only the Event Grid source"


def test_schedules_are_six_field_ncrontab() -> None:
    settings = app_settings(evaluate_main("default"))
    for name in [k for k in settings if k.endswith("_SCHEDULE")]:
        value = settings[name]
        assert len(value.split()) == 6, name
        assert croniter.is_valid(value, second_at_beginning=True), name
        assert value == code.settings_default(name), f"{name}: template default differs from the code default"


def test_job_parameters_become_json_settings() -> None:
    jobs = [{"name": "customers", "environment": "main", "data_project": "Customers export"}]
    drains = [
        {"name": "vendors", "environment": "main", "activity_id": "{5F1B7D4E-0000-4000-8000-000000000001}"}
    ]
    main = evaluate_main("default")
    from tests.infra.bicep import Template

    tpl = Template(main.path, {**main._given, "exportJobs": jobs, "recurringExports": drains})
    settings = load_settings(render(app_settings(tpl)))
    assert [j.data_project for j in settings.export_jobs] == ["Customers export"]
    assert [r.activity_id for r in settings.recurring_exports] == [drains[0]["activity_id"]]
    assert json.loads(app_settings(tpl)["EXPORT_JOBS"]) == jobs


def test_every_container_and_table_the_code_uses_is_created() -> None:
    main = evaluate_main("default")
    settings = app_settings(main)
    containers = {
        str(r.props["name"])
        for r in of_type(main, "Microsoft.Storage/storageAccounts/blobServices/containers")
    }
    tables = {
        str(r.props["name"]) for r in of_type(main, "Microsoft.Storage/storageAccounts/tableServices/tables")
    }
    for alias in code.settings_aliases().values():
        if alias.endswith("_CONTAINER"):
            used = settings.get(alias, code.settings_default(alias))
            assert used in containers, f"{alias}={used} is not created"
            assert used == code.settings_default(alias), f"{alias}: template and code defaults differ"
        if alias.endswith("_TABLE"):
            used = settings.get(alias, code.settings_default(alias))
            assert used in tables, f"{alias}={used} is not created"
    # Plus the deployment package container and the Event Grid dead-letter container.
    (site,) = of_type(main, "Microsoft.Web/sites")
    package = site.props["properties"]["functionAppConfig"]["deployment"]["storage"]["value"]
    assert any(package.sample.endswith("/" + c) for c in containers if isinstance(c, str)), package.sample
    assert main.outputs["DEAD_LETTER_CONTAINER"] in containers


def test_blob_trigger_binding_matches_the_template() -> None:
    """The app's Event Grid blob trigger uses the template's connection and container."""
    triggers = [f for f in code.app_bindings() if any(b["type"] == "blobTrigger" for b in f["bindings"])]
    assert triggers, "the app must declare the inbound blob trigger the Event Grid phase subscribes to"
    settings = app_settings(evaluate_main("default"))
    eventgrid = evaluate_main("default").path.parent / "eventgrid.bicep"
    from tests.infra.bicep import Template

    function_name = Template(
        eventgrid, {"functionAppName": "a", "storageAccountName": "s", "systemTopicName": "t"}
    )
    assert function_name.param("functionName") in {f["name"] for f in triggers}
    for f in triggers:
        (b,) = [b for b in f["bindings"] if b["type"] == "blobTrigger"]
        prefix = b["connection"]
        assert settings[f"{prefix}__credential"] == "managedidentity"
        container = b["path"].split("/")[0]
        if container.startswith("%"):
            container = settings[container.strip("%")]
        assert container == settings["INBOUND_CONTAINER"]
