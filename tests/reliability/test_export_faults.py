"""ExportToPackage refused (429 / 503 with Retry-After) on the embedded stack: the scheduled export waits
Retry-After with a durable timer and calls again, however often F&O refuses, and exports once."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from azure.data.tables import TableServiceClient

from local.embedded_stack import Stack

NEVER = "0 0 0 1 1 *"
JOB = {"name": "groups-nightly", "environment": "main", "data_project": "CustomerGroups-Export",
       "legal_entity": "USMF", "schedule": "0 0 2 * * *"}  # fmt: skip


def _mark_due(stack: Stack) -> None:
    """The export job's last run a day ago: the export timer starts it."""
    ledger = TableServiceClient.from_connection_string(stack.az.connection_string).create_table_if_not_exists(
        stack.names["LEDGER_TABLE"]
    )
    ledger.upsert_entity({"PartitionKey": "export-schedule", "RowKey": JOB["name"],
                          "LastDue": stack.clock.now() - timedelta(days=1)})  # fmt: skip


@pytest.mark.parametrize("kind", ["429", "503"])
def test_a_refused_export_start_is_retried_after_retry_after_until_accepted(
    azurite, unique_name, kind
) -> None:
    with Stack(azurite, unique_name, EXPORT_JOBS=json.dumps([JOB]), DRAIN_SCHEDULE=NEVER, EXPORT_SCHEDULE=NEVER,
               HOUSEKEEPING_SCHEDULE=NEVER) as stack:  # fmt: skip
        _mark_due(stack)
        # More refusals in a row than the start's few backoff retries would allow.
        stack.emu.admin.inject_fault("ExportToPackageAsync", kind, next_n=8, retry_after=2)
        stack.runner.fire_timer("export_timer")
        status = stack.runner.wait_for_instance("export-groups-nightly", timeout=120)
        assert status["runtimeStatus"] == "Completed" and status["output"]["status"] == "Succeeded", status
        calls = stack.emu.admin.calls("ExportToPackageAsync")
        assert [c["status"] for c in calls] == [int(kind)] * 8 + [200]
        gaps = [
            (datetime.fromisoformat(b["arrived"]) - datetime.fromisoformat(a["arrived"])).total_seconds()
            for a, b in pairwise(calls)
        ]
        assert all(2 <= g < 10 for g in gaps), gaps  # Retry-After, not a growing backoff
        exports = [e for e in stack.emu.admin.executions() if e["kind"] == "export"]
        assert len(exports) == 1
        assert len([n for n in stack.blob_names("ARCHIVE_CONTAINER") if n.startswith("exports/")]) == 1


def test_an_export_start_whose_recall_is_ambiguous_too_is_recalled_again(azurite, unique_name) -> None:
    """ExportToPackage answers 502 (F&O did not start it) to the first call and to the recall after the
    not-found grace: seen in the fault matrix's 5xx row. The export is called once more after another grace,
    as imports are (MAX_RECALLS), and runs once; before, the run ended Failed "no record of execution"."""
    with Stack(azurite, unique_name, EXPORT_JOBS=json.dumps([JOB]), DRAIN_SCHEDULE=NEVER, EXPORT_SCHEDULE=NEVER,
               HOUSEKEEPING_SCHEDULE=NEVER) as stack:  # fmt: skip
        _mark_due(stack)
        stack.emu.admin.inject_fault("ExportToPackageAsync", "502", next_n=2)
        stack.runner.fire_timer("export_timer")
        status = stack.runner.wait_for_instance("export-groups-nightly", timeout=120)
        assert status["runtimeStatus"] == "Completed" and status["output"]["status"] == "Succeeded", status
        calls = stack.emu.admin.calls("ExportToPackageAsync")
        assert [c["status"] for c in calls] == [502, 502, 200]
        exports = [e for e in stack.emu.admin.executions() if e["kind"] == "export"]
        assert len(exports) == 1
        assert len([n for n in stack.blob_names("ARCHIVE_CONTAINER") if n.startswith("exports/")]) == 1
