"""Fault matrix, fast: {429 storm, 5xx at ~20%, answers lost after the handler} × {inbound drops, outbound
drain, scheduled export}, each fault profile on one embedded stack (virtual clock) running all three flows
at once. Counted from the emulator's admin API (executions, messages, violations), the archive container,
the outcome table and an audit of the app's ack calls; every count must be 0:

- inbound: lost drops (a drop not ending Succeeded, or rows missing in F&O), double imports (an execution
  id imported twice, or more imports than packages), overlapping imports (the emulator's parallel-import
  violations, peak concurrent imports > 1);
- drain: lost messages (seeded but never archived-and-acked, even after F&O's redelivery), messages
  archived twice (more than one archive blob or "Archived" row), acks before archive (an ack sent while
  the message had no verified archive);
- scheduled export: lost exports (the run not Succeeded or without its archive), double exports.

Faults stay on while the work runs; a message the faults left un-acked gets F&O's redelivery (virtual clock
past the visibility timeout) and another drain, with the faults still on, as production would.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
from azure.data.tables import TableServiceClient

from local.embedded_stack import Stack
from local.fno_emulator import EmulatorConfig
from local.samples import customer_groups_csv

EXPORT_ACTIVITY = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"
NEVER = "0 0 0 1 1 *"
JOB = {"name": "groups-nightly", "environment": "main", "data_project": "CustomerGroups-Export",
       "legal_entity": "USMF", "schedule": "0 0 2 * * *", "package_name": "{job}-{date}"}  # fmt: skip
DROPS = 4
MESSAGES = 6
DRAIN_ROUNDS = 4

API = ["GetAzureWriteUrl", "ImportFromPackageAsync", "GetExecutionSummaryStatus", "ExportToPackageAsync",
       "GetExportedPackageUrl", "GetExecutionErrors", "dequeue", "download", "ack"]  # fmt: skip


def _storm(admin) -> None:
    # Half of every F&O call throttled, Retry-After 0..1 s (safe calls are repeated by the client, start
    # calls by the orchestration's durable timer); each start call at least once.
    admin.inject_fault("ImportFromPackageAsync", "429", next_n=1, retry_after=1)
    admin.inject_fault("ExportToPackageAsync", "429", next_n=1, retry_after=1)
    for n, endpoint in enumerate(API):
        admin.inject_fault(endpoint, "429", rate=0.5, retry_after=n % 2)


def _five_hundreds(admin) -> None:
    # ~20% of every call (token included) fails with a 5xx; each start call at least once.
    admin.inject_fault("ImportFromPackageAsync", "500", next_n=1)
    admin.inject_fault("ExportToPackageAsync", "503", next_n=1)
    for kind in ("500", "502", "503"):
        admin.inject_fault("*", kind, rate=0.07)


def _lost_answers(admin) -> None:
    # The call takes effect in F&O, then the client gets a 5xx or a reset instead of the answer.
    admin.inject_fault("ImportFromPackageAsync", "after_503", next_n=1)
    admin.inject_fault("ExportToPackageAsync", "after_drop", next_n=1)
    admin.inject_fault("ack", "after_503", next_n=2)
    admin.inject_fault("dequeue", "after_drop", next_n=1)
    admin.inject_fault("*", "after_503", rate=0.1)


PROFILES = {"429-storm": _storm, "5xx-20pct": _five_hundreds, "lost-answers": _lost_answers}


def _audit_acks(stack: Stack, monkeypatch) -> list[str]:
    from dmf.fno.recurring_api import RecurringApi

    early: list[str] = []
    real_ack = RecurringApi.ack

    def audited(self, activity_id, message):
        cid = message.correlation_id
        archive = stack.container("ARCHIVE_CONTAINER")
        if not any(
            cid in b.name and (b.metadata or {}).get("verified") == "1"
            for b in archive.list_blobs(include=["metadata"])
        ):
            early.append(cid)
        return real_ack(self, activity_id, message)

    monkeypatch.setattr(RecurringApi, "ack", audited)
    return early


def _drain(stack: Stack) -> None:
    stack.runner.fire_timer("drain_timer")
    status = stack.runner.wait_for_instance("drain-cust-groups", timeout=60)
    assert status["runtimeStatus"] == "Completed", status


def _acked(stack: Stack) -> dict[str, str]:
    return {m["correlationId"]: m["status"] for m in stack.emu.admin.outbound(EXPORT_ACTIVITY)}


def _count(stack: Stack, cids: list[str], early: list[str]) -> dict[str, dict[str, int]]:
    admin = stack.emu.admin
    rows = stack.outcomes()
    executions = admin.executions()

    drops = [r for r in rows if r.get("Kind") == "drop"]
    packages = [r for r in rows if r.get("Kind") == "package"]
    imports = Counter(e["executionId"] for e in executions if e["kind"] == "import")
    data = {r["CUSTOMERGROUPID"] for r in admin.data("USMF", "Customer groups")}
    expected = {f"M{n}" for n in range(DROPS)}
    inbound = {
        "lost drops": (DROPS - sum(d["Status"] == "Succeeded" for d in drops)) + len(expected - data),
        "double imports": sum(n - 1 for n in imports.values())
        + max(0, sum(imports.values()) - len(packages)),
        "overlapping imports": admin.violations + max(0, admin.peak_concurrent_imports - 1),
    }

    acked = _acked(stack)
    archives = stack.blob_names("ARCHIVE_CONTAINER")
    per_cid = {c: [n for n in archives if c in n] for c in cids}
    archived_rows = Counter(
        r["CorrelationId"] for r in rows if r.get("Kind") == "message" and r["Status"] == "Archived"
    )
    drain = {
        "lost messages": sum(1 for c in cids if acked.get(c) != "Acked" or not per_cid[c]),
        "messages archived twice": sum(1 for c in cids if len(per_cid[c]) > 1 or archived_rows[c] > 1),
        "acks before archive": len(early),
    }

    runs = [r for r in rows if r.get("Kind") == "export"]
    exports = Counter(e["executionId"] for e in executions if e["kind"] == "export")
    export_archives = [n for n in archives if n.startswith("exports/")]
    export = {
        "lost exports": sum(1 for r in runs if r["Status"] != "Succeeded")
        + (1 - len(runs))
        + (0 if len(export_archives) == 1 else 1),
        "double exports": sum(n - 1 for n in exports.values()) + max(0, len(exports) - 1),
    }
    return {"inbound": inbound, "outbound drain": drain, "scheduled export": export}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_fault_matrix(azurite, unique_name, monkeypatch, profile: str) -> None:
    cfg = EmulatorConfig()
    cfg.fault_seed = 20261129
    with Stack(
        azurite,
        unique_name,
        emulator_config=cfg,
        RECURRING_EXPORTS=json.dumps(
            [{"name": "cust-groups", "environment": "main", "activity_id": EXPORT_ACTIVITY}]
        ),
        EXPORT_JOBS=json.dumps([JOB]),
        DRAIN_SCHEDULE=NEVER,
        EXPORT_SCHEDULE=NEVER,
        HOUSEKEEPING_SCHEDULE=NEVER,
        FNO_HTTP_TIMEOUT_SECONDS="5",
    ) as stack:
        early = _audit_acks(stack, monkeypatch)
        admin = stack.emu.admin
        cids = [
            admin.seed_outbound(EXPORT_ACTIVITY, b"PK\x03\x04" + bytes([n]) * (500 + n))
            for n in range(MESSAGES)
        ]
        # The export job's 02:00 run is due (it last ran yesterday).
        ledger = TableServiceClient.from_connection_string(
            azurite.connection_string
        ).create_table_if_not_exists(stack.names["LEDGER_TABLE"])
        ledger.upsert_entity({"PartitionKey": "export-schedule", "RowKey": JOB["name"],
                              "LastDue": stack.clock.now() - timedelta(days=1)})  # fmt: skip
        PROFILES[profile](admin)

        for n in range(DROPS):
            stack.drop(f"USMF/CustomerGroups-Import/Customer groups__{n}.csv", customer_groups_csv([f"M{n}"]))
        stack.runner.fire_timer("export_timer")
        _drain(stack)
        stack.settle(timeout=120)
        export = stack.runner.wait_for_instance("export-groups-nightly", timeout=60)
        assert export["runtimeStatus"] == "Completed", export
        for _ in range(DRAIN_ROUNDS):
            if all(s == "Acked" for s in _acked(stack).values()):
                break
            stack.runner.advance(timedelta(seconds=1801))  # F&O offers un-acked messages again
            _drain(stack)

        counts = _count(stack, cids, early)
        faults = Counter((c["endpoint"], c["fault"]) for c in admin.calls() if c["fault"])
        hit = {endpoint for endpoint, _ in faults}
        # Every flow met the faults: an import start, the connector, the export.
        assert hit & {"ImportFromPackageAsync"} and hit & {"dequeue", "download", "ack"}, faults
        assert hit & {"ExportToPackageAsync", "GetExportedPackageUrl"}, faults
        table = "\n".join(f"{flow:17s} {name:24s} {n}" for flow, c in counts.items() for name, n in c.items())
        assert all(n == 0 for c in counts.values() for n in c.values()), (
            f"{profile}:\n{table}\nfaults: {faults}"
        )
        assert admin.server_errors() == []
