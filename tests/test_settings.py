"""Settings: validation names every problem; every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmf.settings import (
    ENV_FIELDS,
    AuthMode,
    Deployment,
    Settings,
    SettingsError,
    _env_name_for,
    load_settings,
)

DOC = (Path(__file__).resolve().parents[1] / "docs" / "SETTINGS.md").read_text()
BASE = {"DATA_STORAGE": "UseDevelopmentStorage=true"}


def test_every_setting_is_documented() -> None:
    for field in Settings.model_fields:
        if field == "environments":
            continue
        assert f"`{_env_name_for(field)}`" in DOC, f"{_env_name_for(field)} missing from docs/SETTINGS.md"
    for key in ENV_FIELDS:
        assert f"`FNO_<NAME>_{key}`" in DOC


@pytest.mark.parametrize(
    "environ,expected",
    [
        (
            {
                "FNO_ENVIRONMENTS": "main,test",
                "FNO_MAIN_BASE_URL": "http://not-tls",
                "POLL_INITIAL_SECONDS": "soon",
                "FNO_TEST_BASE_URL": "https://test.example.com",
                "FNO_TEST_AUTH_MODE": "certificate",
            },
            ["POLL_INITIAL_SECONDS", "DATA_STORAGE", "FNO_MAIN_BASE_URL", "FNO_TEST_CLIENT_ID",
             "FNO_TEST_CERTIFICATE_PATH", "FNO_TEST_TENANT_ID"],
        ),
        (  # JSON settings are typed: their problems, item by item, join the others
            {
                "POLL_INITIAL_SECONDS": "soon",
                "RECURRING_EXPORTS": '[{"name": "a", "environment": "main"}]',
                "EXPORT_JOBS": "[{]",
                "ROUTES_JSON": '{"version": 1, "routes": [{"name": "r"}]}',
                "FNO_MAIN_BASE_URL": "https://x.example.com",
            },
            ["POLL_INITIAL_SECONDS", "RECURRING_EXPORTS.0.activity_id", "EXPORT_JOBS: Invalid JSON",
             "ROUTES_JSON.routes.0.pattern", "DATA_STORAGE", "FNO_MAIN_CLIENT_ID"],
        ),
    ],
)  # fmt: skip
def test_errors_name_each_bad_setting_at_once(environ: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(SettingsError) as e:
        load_settings(environ)
    msg = str(e.value)
    for name in expected:
        assert name in msg, (name, msg)


def test_cloud_and_onprem_environments() -> None:
    s = load_settings(
        {
            **BASE,
            "FNO_ENVIRONMENTS": "prod, onprem",
            "FNO_PROD_BASE_URL": "https://contoso.operations.dynamics.com/",
            "FNO_PROD_TENANT_ID": "t",
            "FNO_PROD_CLIENT_ID": "c",
            "FNO_PROD_CLIENT_SECRET": "s3cret",
            "FNO_ONPREM_BASE_URL": "https://ax.contoso.local",
            "FNO_ONPREM_DEPLOYMENT": "onprem",
            "FNO_ONPREM_AUTHORITY": "https://adfs.contoso.local",
            "FNO_ONPREM_CLIENT_ID": "c2",
            "FNO_ONPREM_CLIENT_SECRET": "x",
            "FNO_ONPREM_IMPORT_PERMITS": "2",
        }
    )
    prod, onprem = s.environment("prod"), s.environment("ONPREM")
    assert prod.api_root == "https://contoso.operations.dynamics.com"
    assert prod.token_scope == "https://contoso.operations.dynamics.com/.default"
    assert prod.auth_mode is AuthMode.CLIENT_SECRET and "s3cret" not in repr(prod)
    assert onprem.deployment is Deployment.ONPREM
    assert onprem.api_root == "https://ax.contoso.local/namespaces/AXSF"
    assert onprem.import_permits == 2
    assert s.environment(None).name == "prod"


def test_managed_identity_storage_needs_blob_and_table_uris() -> None:
    env = {"FNO_MAIN_BASE_URL": "https://x.example.com", "FNO_MAIN_AUTH_MODE": "managed_identity"}
    with pytest.raises(SettingsError, match="DATA_STORAGE"):
        load_settings({**env, "DATA_STORAGE__blobServiceUri": "https://a.blob.core.windows.net"})
    s = load_settings(
        {
            **env,
            "DATA_STORAGE__blobServiceUri": "https://a.blob.core.windows.net",
            "DATA_STORAGE__tableServiceUri": "https://a.table.core.windows.net",
        }
    )
    assert not s.uses_connection_string


def test_json_job_settings_are_validated() -> None:
    env = {**BASE, "FNO_MAIN_BASE_URL": "https://x.example.com", "FNO_MAIN_AUTH_MODE": "managed_identity"}
    with pytest.raises(SettingsError, match="EXPORT_JOBS"):
        load_settings({**env, "EXPORT_JOBS": "[{]"})
    s = load_settings(
        {**env, "RECURRING_EXPORTS": '[{"name": "a", "environment": "main", "activity_id": "x"}]'}
    )
    assert s.recurring_exports[0].activity_id == "x"


def test_json_settings_are_typed() -> None:
    s = load_settings(
        {
            **BASE,
            "fno_main_base_url": "https://x.example.com",  # names are case-insensitive, as on the host
            "FNO_MAIN_AUTH_MODE": "managed_identity",
            "EXPORT_JOBS": '[{"name": "j", "environment": "main", "data_project": "P"}]',
            "ROUTES_JSON": '{"version": 1, "routes": [{"name": "r", "pattern": "a/*.zip", "data_project": "P"}]}',
        }
    )
    assert s.export_jobs[0].schedule == "0 0 2 * * *" and s.recurring_exports == []
    assert s.routes is not None and s.routes.routes[0].name == "r"
    assert s.environment("main").base_url == "https://x.example.com"


def test_log_level_applies_when_the_settings_are_first_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from dmf.settings import get_settings

    for k, v in {**BASE, "FNO_MAIN_BASE_URL": "https://x.example.com", "FNO_MAIN_AUTH_MODE": "managed_identity",
                 "LOG_LEVEL": "warning"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    root = logging.getLogger()
    before = root.level
    get_settings.cache_clear()
    try:
        get_settings()
        assert root.level == logging.WARNING
    finally:
        get_settings.cache_clear()
        root.setLevel(before)
