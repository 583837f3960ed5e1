"""Operations in the deployment: the workbook and log alerts (infra/app/operations.bicep) and blob retention
(lifecycle rules in infra/app/storage.bicep), wired from main.bicep behind parameters.

The queries are checked against what the app really logs: every ``Properties.<field>`` and every event name they
read is one that an ``ops_event(...)`` call in the deployed code writes (found by reading the code, not a copied
list), and one such line, sent through the real OpenTelemetry log handler with the app's filters and the Azure
Monitor exporter's own conversion, arrives with exactly those custom dimensions.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from dmf.logs import CONTEXT_FIELDS, ContextFilter, log_context, ops_event
from dmf.redact import RedactingFilter
from tests.infra.bicep import Template, Unknown
from tests.infra.code_contract import APP_PACKAGES
from tests.infra.conftest import BASE_PARAMS, INFRA, ROOT, evaluate_main, of_type

APP = INFRA / "app"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
# What the Functions host itself logs and the poison query reads (not the app's events).
HOST_FIELDS = {"FunctionName"}
ALERTS = {"failed-imports", "poison-blobs", "gate-held", "drain-backlog"}


def main_with(**params: Any) -> Template:
    return Template(INFRA / "main.bicep", {**BASE_PARAMS, **params})


@cache
def emitted() -> dict[str, set[str]]:
    """Event name -> the fields its ops_event calls pass, from every call in the deployed packages."""
    events: dict[str, set[str]] = {}
    files = [ROOT / "function_app.py"] + [p for pkg in APP_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ops_event":
                name = node.args[1]
                assert isinstance(name, ast.Constant), f"{path}: event names must be literals"
                fields = {k.arg for k in node.keywords if k.arg and k.arg != "level"}
                events.setdefault(name.value, set()).update(fields)
    return events


def query_fields(kql: str) -> set[str]:
    return set(re.findall(r"Properties\.(\w+)", kql)) | set(re.findall(r"Properties\[\"(\w+)\"\]", kql))


def query_events(kql: str) -> set[str]:
    names: set[str] = set()
    for m in re.finditer(r"Properties\.event\)\s*(==|in)\s*(\([^)]*\)|\"[^\"]*\")", kql):
        names |= set(re.findall(r"\"(\w+)\"", m.group(2)))
    return names


def alert_rules(main: Template) -> dict[str, Any]:
    return {
        str(r.props["name"]).split("-", 1)[1].rsplit("-", 1)[0]: r
        for r in of_type(main, "Microsoft.Insights/scheduledQueryRules")
    }


def workbook_queries() -> list[str]:
    doc = json.loads((APP / "workbooks" / "operations.json").read_text())
    return [i["content"]["query"] for i in doc["items"] if i["type"] == 3]


# -- the app's side ------------------------------------------------------------------------------------------


def test_the_code_writes_the_events_the_queries_need() -> None:
    ev = emitted()
    assert {
        "import_finished",
        "drop_finished",
        "gate_acquired",
        "gate_released",
        "gate_freed",
        "drain_finished",
    } <= set(ev)
    assert {"status", "environment", "legal_entity", "data_project", "import_seconds"} <= ev[
        "import_finished"
    ]
    assert {"gate", "ticket", "waited_seconds"} <= ev["gate_acquired"]
    assert {"gate", "ticket", "held_seconds"} <= ev["gate_released"] & ev["gate_freed"]
    assert {"export", "backlog", "messages", "status"} <= ev["drain_finished"]


def _exported_properties(record_fn) -> dict[str, str]:
    """One log line through the OpenTelemetry handler (the worker's) and the Azure Monitor exporter's conversion."""
    from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope

    # The handler configure_azure_monitor() (the worker's exporter set-up) puts on the root logger.
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    # As dmf.logs.configure_logging does to every root handler, the worker's included.
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("dmf.test_operations")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        record_fn(logger)
    finally:
        logger.removeHandler(handler)
    (log,) = exporter.get_finished_logs()
    envelope = _convert_log_to_envelope(log)
    return dict(envelope.data.base_data.properties)


def test_an_event_reaches_app_insights_with_its_fields_as_custom_dimensions() -> None:
    def emit(logger: logging.Logger) -> None:
        with log_context(instance_id="drain-vendors", data_project="ignored-by-extra"):
            ops_event(
                logger,
                "drain_finished",
                "drain %s ended",
                "r1",
                level=logging.WARNING,
                export="vendors",
                backlog=True,
                messages=9,
                stop_reason="token sig=abcdefsecret",
                data_project=None,
            )

    props = _exported_properties(emit)
    assert props["event"] == "drain_finished"
    assert props["export"] == "vendors" and props["messages"] == "9"
    # Booleans arrive as Python spells them: the queries compare with =~ "true".
    assert props["backlog"] == "True"
    assert "abcdefsecret" not in props["stop_reason"], "string fields are redacted before they leave"
    assert props["instance_id"] == "drain-vendors" and props["data_project"] == "ignored-by-extra"
    assert set(CONTEXT_FIELDS) <= set(props)


def test_drain_query_reads_booleans_case_insensitively() -> None:
    text = (APP / "queries" / "alert-drain-backlog.kql").read_text()
    assert 'tostring(Properties.backlog) =~ "true"' in text


# -- the queries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((APP / "queries").glob("*.kql")), ids=lambda p: p.name)
def test_each_alert_query_reads_only_what_the_app_logs(path: Path) -> None:
    kql = path.read_text()
    ev = emitted()
    known = set().union(*ev.values()) | {"event"} | set(CONTEXT_FIELDS) | HOST_FIELDS
    assert query_fields(kql) <= known, f"{path.name} reads fields nothing logs: {query_fields(kql) - known}"
    assert query_events(kql) <= set(ev), (
        f"{path.name} reads events nothing logs: {query_events(kql) - set(ev)}"
    )
    if query_events(kql):
        # Every event field the query reads is written by one of the events it selects.
        used = query_fields(kql) - {"event"} - HOST_FIELDS - set(CONTEXT_FIELDS)
        assert used <= set().union(*(ev[e] for e in query_events(kql))), path.name


def test_every_workbook_query_reads_only_what_the_app_logs() -> None:
    ev = emitted()
    known = set().union(*ev.values()) | {"event"} | set(CONTEXT_FIELDS) | HOST_FIELDS
    queries = workbook_queries()
    assert len(queries) >= 6
    for kql in queries:
        assert query_fields(kql) <= known, kql
        assert query_events(kql) <= set(ev), kql
    text = "\n".join(queries)
    for needed in ("legal_entity", "import_seconds", "waited_seconds", "backlog"):
        assert f"Properties.{needed}" in text, needed


def test_poison_query_matches_the_hosts_message() -> None:
    # The host logs "Message has reached MaxDequeueCount of 5. Moving message to queue 'webjobs-blobtrigger-poison'."
    assert 'has "webjobs-blobtrigger-poison"' in (APP / "queries" / "alert-poison-blobs.kql").read_text()


# -- the template --------------------------------------------------------------------------------------------


def test_alerts_and_workbook_are_deployed_by_default_into_the_workspace() -> None:
    main = evaluate_main("default")
    (ws,) = of_type(main, "Microsoft.OperationalInsights/workspaces")
    rules = alert_rules(main)
    assert set(rules) == ALERTS
    for name, r in rules.items():
        p = r.props["properties"]
        assert r.props["kind"] == "LogAlert"
        assert [s.expr for s in p["scopes"]] == [f"resourceId({ws.type}, {ws.name})"], name
        assert p["actions"]["actionGroups"] == [], "no action group unless one is given"
        (crit,) = p["criteria"]["allOf"]
        assert crit["operator"] == "GreaterThan" and crit["threshold"] == 0
        assert "{" not in crit["query"], f"{name}: a threshold placeholder was left in the query"
        assert re.fullmatch(r"PT\d+M|PT\d+H|P[12]D", p["windowSize"]), name
        assert p["description"].endswith('".') and "docs/RUNBOOK.md" in p["description"]
    (wb,) = of_type(main, "Microsoft.Insights/workbooks")
    assert wb.props["properties"]["sourceId"].expr == f"resourceId({ws.type}, {ws.name})"
    assert wb.props["properties"]["version"] == "Notebook/1.0"


def test_parameters_switch_and_tune_the_alerts() -> None:
    off = main_with(opsAlertsEnabled=False, opsWorkbookEnabled=False)
    assert of_type(off, "Microsoft.Insights/scheduledQueryRules") == []
    assert of_type(off, "Microsoft.Insights/workbooks") == []
    group = "/subscriptions/s/resourceGroups/ops/providers/microsoft.insights/actionGroups/oncall"
    tuned = alert_rules(main_with(opsActionGroupId=group, opsGateHeldMinutes=45, opsDrainBacklogRuns=5))
    for r in tuned.values():
        assert r.props["properties"]["actions"]["actionGroups"] == [group]
    gate_q = tuned["gate-held"].props["properties"]["criteria"]["allOf"][0]["query"]
    drain_q = tuned["drain-backlog"].props["properties"]["criteria"]["allOf"][0]["query"]
    assert "let threshold = 45m;" in gate_q
    assert "backlog_runs >= 5" in drain_q
    # main.bicep passes its parameters through unchanged.
    ops = main_with(opsGateHeldMinutes=45).modules["operations"]
    assert ops.params["gateHeldMinutes"] == 45 and ops.params["alertsEnabled"] is True


def test_workbook_json_is_valid_and_points_every_query_at_the_workspace() -> None:
    raw = (APP / "workbooks" / "operations.json").read_text()
    rendered = raw.replace("__WORKSPACE_ID__", "/subscriptions/s/resourceGroups/r/providers/x/workspaces/w")
    doc = json.loads(rendered)
    assert doc["version"] == "Notebook/1.0"
    params = [i for i in doc["items"] if i["type"] == 9]
    assert [p["name"] for p in params[0]["content"]["parameters"]] == ["TimeRange"]
    for item in (i for i in doc["items"] if i["type"] == 3):
        c = item["content"]
        assert c["crossComponentResources"] == ["/subscriptions/s/resourceGroups/r/providers/x/workspaces/w"]
        assert c["timeContextFromParameter"] == "TimeRange"
    titles = " ".join(i["content"]["title"] for i in doc["items"] if i["type"] == 3).lower()
    for topic in ("data project and legal entity", "import duration", "gate: wait", "drain"):
        assert topic in titles, topic
    assert not re.search(r"(?i)password|AccountKey|[?&]sig=", raw)


# -- retention ------------------------------------------------------------------------------------------------


def _lifecycle(main: Template) -> dict[str, int]:
    policies = of_type(main, "Microsoft.Storage/storageAccounts/managementPolicies")
    if not policies:
        return {}
    (policy,) = policies
    out = {}
    for rule in policy.props["properties"]["policy"]["rules"]:
        assert rule["enabled"] is True and rule["type"] == "Lifecycle"
        assert re.fullmatch(r"[A-Za-z0-9]+", rule["name"]), "lifecycle rule names are alphanumeric"
        (prefix,) = rule["definition"]["filters"]["prefixMatch"]
        days = rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
        assert rule["definition"]["actions"]["snapshot"]["delete"]["daysAfterCreationGreaterThan"] == days
        out[prefix.rstrip("/")] = days
    return out


def test_lifecycle_rules_cover_the_data_containers_with_parameter_days() -> None:
    main = evaluate_main("default")
    containers = main.var("dataContainers")
    assert _lifecycle(main) == {
        containers["STAGING_CONTAINER"]: 90,
        containers["PROCESSED_CONTAINER"]: 90,
        containers["FAILED_CONTAINER"]: 180,
        containers["REJECTED_CONTAINER"]: 90,
        containers["ERRORS_CONTAINER"]: 180,
    }, "archive is kept by default (ARCHIVE_RETENTION_DAYS does that job in code when asked)"
    tuned = main_with(stagingRetentionDays=7, archiveRetentionDays=365, rejectedRetentionDays=0)
    got = _lifecycle(tuned)
    assert got[containers["STAGING_CONTAINER"]] == 7 and got[containers["ARCHIVE_CONTAINER"]] == 365
    assert containers["REJECTED_CONTAINER"] not in got
    assert containers["INBOUND_CONTAINER"] not in got, "drops leave inbound on their own"


def test_no_policy_when_every_retention_is_zero() -> None:
    zero = {
        k: 0
        for k in (
            "stagingRetentionDays",
            "processedRetentionDays",
            "failedRetentionDays",
            "rejectedRetentionDays",
            "importErrorsRetentionDays",
            "archiveRetentionDays",
        )
    }
    assert _lifecycle(main_with(**zero)) == {}
    assert main_with(**zero).modules["storage"].params["retention"] == []


def test_lifecycle_containers_are_the_ones_the_app_uses() -> None:
    from dmf.settings import Settings

    defaults = {
        Settings.model_fields[f].default
        for f in ("staging_container", "processed_container", "failed_container", "rejected_container")
    } | {Settings.model_fields["errors_container"].default}
    assert defaults <= set(_lifecycle(evaluate_main("default")))


# -- the runbook ------------------------------------------------------------------------------------------------


def test_runbook_explains_every_alert_and_query_file() -> None:
    text = RUNBOOK.read_text()
    for name in ALERTS:
        assert f"`{name}`" in text, name
    for path in (APP / "queries").glob("*.kql"):
        assert f"infra/app/queries/{path.name}" in text, path.name
    assert "OUTCOME_RETENTION_DAYS" in text and "ARCHIVE_RETENTION_DAYS" in text


def test_workbook_name_is_a_deployment_time_guid() -> None:
    (wb,) = of_type(evaluate_main("default"), "Microsoft.Insights/workbooks")
    assert isinstance(wb.props["name"], Unknown) and wb.props["name"].expr.startswith("guid(")
