"""Outbound end to end: the app under the local runner (timers, orchestrations replayed by the Durable SDK,
activities), the F&O emulator over HTTPS and Azurite. The virtual clock moves F&O's visibility timeout and
export durations; nothing is mocked."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from dmf.pipeline.archive import archive_path
from dmf.storage.outcomes import day_key
from tests.e2e_support import Stack, customer_groups_csv

from .conftest import EXPORT_ACTIVITY, IMPORT_ACTIVITY

NEVER = "0 0 0 1 1 *"  # timers fire only when a test fires them
DRAIN_ID = "drain-cust-groups"
JOB = {"name": "groups-nightly", "environment": "main", "data_project": "CustomerGroups-Export",
       "legal_entity": "USMF", "schedule": "0 0 2 * * *"}  # fmt: skip
ROUTES = {"version": 1, "routes": [
    {"name": "xslt", "pattern": "xslt/**", "mode": "enqueue", "environment": "main", "legal_entity_segment": 1,
     "entity": "Customer groups", "activity_id": IMPORT_ACTIVITY},
]}  # fmt: skip
# Timers fire only when a test fires them; the drain knows the emulator's recurring export.
TIMERS_OFF = {"DRAIN_SCHEDULE": NEVER, "EXPORT_SCHEDULE": NEVER, "HOUSEKEEPING_SCHEDULE": NEVER}
DRAINS = {
    "RECURRING_EXPORTS": json.dumps(
        [{"name": "cust-groups", "environment": "main", "activity_id": EXPORT_ACTIVITY}]
    ),
    **TIMERS_OFF,
}


@pytest.fixture
def stack(azurite, unique_name):
    with Stack(
        azurite,
        unique_name,
        **DRAINS,
        EXPORT_JOBS=json.dumps([JOB]),
        FNO_MAX_RETRIES="1",
        ROUTES_JSON=json.dumps(ROUTES),
    ) as s:
        yield s
    assert s.loop_blocks == [], "client functions blocked the event loop"


def _payload(n: int) -> bytes:
    return b"PK\x03\x04" + bytes([n % 251]) * (1000 + n)


def _drain(stack: Stack) -> dict:
    stack.runner.fire_timer("drain_timer")
    status = stack.runner.wait_for_instance(DRAIN_ID, timeout=60)
    assert status["runtimeStatus"] == "Completed", status
    return status["output"]


def _acks(stack: Stack) -> dict[str, str]:
    return {m["correlationId"]: m["status"] for m in stack.emu.admin.outbound(EXPORT_ACTIVITY)}


def _archives(stack: Stack) -> list[str]:
    return stack.blob_names("ARCHIVE_CONTAINER")


def test_n_seeded_messages_make_n_archives_n_acks_n_rows(stack: Stack) -> None:
    cids = [stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n)) for n in range(12)]
    out = _drain(stack)
    assert out["archived"] == 12 and out["status"] == "Succeeded" and out["stop_reason"] == "queue empty"
    assert set(_acks(stack).values()) == {"Acked"}
    day = day_key(datetime.now(UTC))
    assert _archives(stack) == sorted(archive_path("cust-groups", day, c, ".zip") for c in cids)
    rows = [r for r in stack.outcomes() if r.get("Kind") == "message"]
    assert sorted(r["CorrelationId"] for r in rows) == sorted(cids)
    assert {r["Status"] for r in rows} == {"Archived"}
    run = [r for r in stack.outcomes() if r.get("Kind") == "drain"]
    assert len(run) == 1 and run[0]["Status"] == "Succeeded" and run[0]["Archived"] == 12
    assert all(r["RowKey"].startswith(run[0]["RowKey"] + "~") for r in rows)


def test_failed_archive_write_comes_back_after_the_visibility_timeout_and_is_archived_once(
    stack: Stack,
) -> None:
    cids = [stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n)) for n in range(3)]
    victim = cids[0]
    day = day_key(datetime.now(UTC))
    archive = stack.container("ARCHIVE_CONTAINER")
    archive.create_container()
    blocker = archive.get_blob_client(archive_path("cust-groups", day, victim, ".zip"))
    blocker.upload_blob(b"held by another writer")
    lease = blocker.acquire_lease(lease_duration=-1)

    out = _drain(stack)
    assert out["archived"] == 2 and out["failed"] == 1 and out["status"] == "PartiallySucceeded"
    assert _acks(stack)[victim] == "Dequeued"
    lease.release()

    stack.runner.advance(timedelta(minutes=10))
    assert _drain(stack)["taken"] == 0  # still invisible
    stack.runner.advance(timedelta(minutes=21))  # past F&O's 30-minute visibility timeout
    out3 = _drain(stack)
    assert out3["archived"] == 1 and out3["taken"] == 1
    assert set(_acks(stack).values()) == {"Acked"}
    assert [n for n in _archives(stack) if victim in n] == [archive_path("cust-groups", day, victim, ".zip")]
    assert archive.get_blob_client(
        archive_path("cust-groups", day, victim, ".zip")
    ).download_blob().readall() == (_payload(0))
    victim_rows = sorted(r["Status"] for r in stack.outcomes() if r.get("CorrelationId") == victim)
    assert victim_rows == ["Archived", "Failed"]


def test_failed_ack_redelivers_and_still_makes_one_archive(stack: Stack) -> None:
    cid = stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(7))
    stack.emu.admin.inject_fault("ack", "500", next_n=2)  # the HTTP layer's 2 tries (FNO_MAX_RETRIES=1)
    out = _drain(stack)
    assert out["not_acked"] == 1
    name = archive_path("cust-groups", day_key(datetime.now(UTC)), cid, ".zip")
    etag = stack.container("ARCHIVE_CONTAINER").get_blob_client(name).get_blob_properties().etag
    stack.runner.advance(timedelta(minutes=31))
    out2 = _drain(stack)
    assert out2["duplicate"] == 1 and out2["archived"] == 0
    assert _acks(stack)[cid] == "Acked"
    assert _archives(stack) == [name]
    assert stack.container("ARCHIVE_CONTAINER").get_blob_client(name).get_blob_properties().etag == etag


def test_two_timer_firings_while_a_drain_runs_start_no_second_drain(stack: Stack) -> None:
    for n in range(4):
        stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n))
    # Slow downloads keep the first drain running while the timer fires again, twice, concurrently.
    stack.emu.admin.inject_fault("download", "slow", next_n=4, delay_seconds=0.5)
    stack.runner.fire_timer("drain_timer")
    status = stack.runner.get_status(DRAIN_ID)
    assert status["runtimeStatus"] in ("Pending", "Running")
    first_input = status["input"]
    firings = [threading.Thread(target=stack.runner.fire_timer, args=("drain_timer",)) for _ in range(2)]
    for t in firings:
        t.start()
    for t in firings:
        t.join()
    final = stack.runner.wait_for_instance(DRAIN_ID, timeout=60)
    assert final["input"] == first_input  # never replaced by a second run
    assert final["output"]["archived"] == 4
    runs = [r for r in stack.outcomes() if r.get("Kind") == "drain"]
    assert len(runs) == 1, runs
    # And once it is done, the next firing starts the next run (the guard was released).
    assert _drain(stack)["taken"] == 0
    assert len([r for r in stack.outcomes() if r.get("Kind") == "drain"]) == 2


def test_simultaneous_firings_with_no_drain_running_start_one(stack: Stack) -> None:
    stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(1))
    firings = [threading.Thread(target=stack.runner.fire_timer, args=("drain_timer",)) for _ in range(3)]
    for t in firings:
        t.start()
    for t in firings:
        t.join()
    stack.runner.wait_for_instance(DRAIN_ID, timeout=60)
    stack.runner.wait_until_idle(30)
    assert len([r for r in stack.outcomes() if r.get("Kind") == "drain"]) == 1
    assert len(stack.emu.admin.calls("ack")) == 1


def test_import_then_scheduled_export_round_trips_the_rows(stack: Stack) -> None:
    stack.drop("USMF/CustomerGroups-Import/Customer groups.csv", customer_groups_csv(["RT1", "RT2", "RT3"]))
    stack.settle()
    assert stack.drops()[0]["Status"] == "Succeeded", stack.drops()
    # The job last ran yesterday: its 02:00 run is due now.
    ledger = TableServiceClient.from_connection_string(stack.az.connection_string).create_table_if_not_exists(
        stack.names["LEDGER_TABLE"]
    )
    ledger.upsert_entity({"PartitionKey": "export-schedule", "RowKey": "groups-nightly",
                          "LastDue": datetime.now(UTC) - timedelta(days=1)})  # fmt: skip
    stack.runner.fire_timer("export_timer")
    status = stack.runner.wait_for_instance("export-groups-nightly", timeout=120)
    assert status["runtimeStatus"] == "Completed", status
    out = status["output"]
    assert out["status"] == "Succeeded", out
    data = stack.blobs.get_blob_client(*out["archived"].split("/", 1)).download_blob().readall()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        csv = next(n for n in zf.namelist() if n.lower().endswith(".csv"))
        text = zf.read(csv).decode("utf-16")
    ids = {line.split(",")[0].strip('"') for line in text.splitlines()[1:] if line.strip()}
    assert ids == {"RT1", "RT2", "RT3"}
    row = next(r for r in stack.outcomes() if r.get("Kind") == "export")
    assert row["Status"] == "Succeeded" and row["ArchivedBlob"] == out["archived"]
    assert len(stack.emu.admin.calls("ExportToPackageAsync")) == 1
    # The same tick again: nothing due, nothing started.
    stack.runner.fire_timer("export_timer")
    stack.runner.wait_until_idle(30)
    assert len(stack.emu.admin.calls("ExportToPackageAsync")) == 1


def test_enqueue_route_records_processed_with_errors_and_preprocessing_error(stack: Stack) -> None:
    def unicode_csv(ids, bad=0):
        return b"\xff\xfe" + customer_groups_csv(ids, bad_rows=bad, encoding="utf-16-le")

    stack.drop("xslt/USMF/good.csv", unicode_csv(["Q1", "Q2"]))
    stack.drop("xslt/USMF/some-bad.csv", unicode_csv(["Q3"], bad=2))
    stack.drop("xslt/NOPE/unknown-company.csv", unicode_csv(["Q4"]))
    stack.settle()
    by_name = {d["SourceBlob"].rsplit("/", 1)[1]: d for d in stack.drops()}
    assert {k: v["Status"] for k, v in by_name.items()} == {
        "good.csv": "Succeeded",
        "some-bad.csv": "PartiallySucceeded",
        "unknown-company.csv": "Failed",
    }
    rows = {r["RowKey"].split("~")[0]: r for r in stack.outcomes() if r.get("Kind") == "enqueue"}
    expect = {
        "good.csv": "Processed",
        "some-bad.csv": "ProcessedWithErrors",
        "unknown-company.csv": "PreProcessingError",
    }
    for name, message_status in expect.items():
        row = rows[by_name[name]["RowKey"]]
        assert row["MessageStatus"] == message_status and row["MessageId"]
    assert rows[by_name["some-bad.csv"]["RowKey"]]["ErrorCount"] == 2
    assert len(stack.emu.admin.calls("enqueue")) == 3
    assert {r["CUSTOMERGROUPID"] for r in stack.emu.admin.data("USMF", "Customer groups")} >= {
        "Q1",
        "Q2",
        "Q3",
    }


def test_count_budget_stops_the_run_and_the_next_run_continues(azurite, unique_name) -> None:
    with Stack(
        azurite,
        unique_name,
        **DRAINS,
        DRAIN_MAX_MESSAGES="5",
    ) as stack:
        for n in range(8):
            stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n))
        out = _drain(stack)
        assert out["archived"] == 5 and "count budget" in out["stop_reason"]
        assert sorted(_acks(stack).values()) == ["Acked"] * 5 + ["Enqueued"] * 3  # the rest never dequeued
        out2 = _drain(stack)
        assert out2["archived"] == 3 and out2["stop_reason"] == "queue empty"


def test_housekeeping_purges_old_terminal_histories_and_old_archives(azurite, unique_name) -> None:
    from dmf.pipeline.services import services, utc_now

    with Stack(
        azurite,
        unique_name,
        virtual_clock=False,  # retention compares real instance timestamps and blob Last-Modified
        **DRAINS,
        HISTORY_RETENTION_DAYS="0.00005",  # about 4 seconds
        ARCHIVE_RETENTION_DAYS="0.00005",
    ) as stack:
        stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(1))
        _drain(stack)
        assert stack.runner.get_status(DRAIN_ID) is not None
        assert len(_archives(stack)) == 1
        stack.runner.fire_timer("housekeeping_timer")  # too young: kept
        assert stack.runner.get_status(DRAIN_ID) is not None and len(_archives(stack)) == 1
        # Ten seconds later (retention is about 4 s), by the app's clock rather than a real sleep.
        svc = services()
        svc.clock = lambda: utc_now() + timedelta(seconds=10)
        stack.runner.fire_timer("housekeeping_timer")
        assert stack.runner.get_status(DRAIN_ID) is None
        assert _archives(stack) == []


def test_http_routes_start_an_export_and_refuse_an_overlapping_one(stack: Stack) -> None:
    import requests

    base = stack.runner.http_base_url
    key = {"x-functions-key": stack.runner.function_key}
    stack.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "H1", "DESCRIPTION": "h"}])
    # FUNCTION-level routes: without the key the host answers 401 and starts nothing
    assert requests.post(f"{base}/api/outbound/exports/groups-nightly", timeout=30).status_code == 401
    assert (
        requests.post(f"{base}/api/outbound/exports/groups-nightly?code=wrong", timeout=30).status_code == 401
    )
    with stack.runner.hold_clock():  # keep the export running (polling on a durable timer)
        first = requests.post(f"{base}/api/outbound/exports/groups-nightly", headers=key, timeout=30)
        assert first.status_code == 202, first.text
        assert first.json()["id"] == "export-groups-nightly" and "statusQueryGetUri" in first.json()
        second = requests.post(f"{base}/api/outbound/exports/groups-nightly", headers=key, timeout=30)
        assert second.status_code == 409 and "still" in second.json()["reason"]
        assert requests.post(f"{base}/api/outbound/exports/nope", headers=key, timeout=30).status_code == 404
    status = stack.runner.wait_for_instance("export-groups-nightly", timeout=120)
    assert status["output"]["status"] == "Succeeded"
    assert len(stack.emu.admin.calls("ExportToPackageAsync")) == 1
    drained = requests.post(
        f"{base}/api/outbound/drains/cust-groups?code={stack.runner.function_key}", timeout=30
    )
    # Started: the standard Durable check-status payload, whose status URL answers for the run.
    assert drained.status_code == 202 and drained.json()["id"] == DRAIN_ID
    assert requests.get(drained.json()["statusQueryGetUri"], timeout=30).json()["instanceId"] == DRAIN_ID


def test_a_terminated_drain_does_not_block_the_next_one(stack: Stack) -> None:
    for n in range(3):
        stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n))
    stack.emu.admin.inject_fault("download", "slow", next_n=1, delay_seconds=1.0)
    stack.runner.fire_timer("drain_timer")
    first = stack.runner.get_status(DRAIN_ID)["input"]
    stack.runner.terminate(DRAIN_ID, "operator stopped it")
    assert stack.runner.wait_for_instance(DRAIN_ID, timeout=30)["runtimeStatus"] == "Terminated"
    stack.runner.wait_until_idle(30)
    # Its run guard was never released, but its instance has ended: the next firing takes over at once.
    _drain(stack)
    assert stack.runner.get_status(DRAIN_ID)["input"] != first
    stack.settle()
    # Terminating does not stop an activity already running (as in Azure), so either drain may have handled
    # the messages: what matters is that the second one ran and every message was archived exactly once.
    assert len(stack.blob_names("ARCHIVE_CONTAINER")) == 3
    assert set(_acks(stack).values()) == {"Acked"}


def test_enqueue_route_times_out_when_f_and_o_never_finishes(azurite, unique_name) -> None:
    with Stack(
        azurite,
        unique_name,
        **TIMERS_OFF,
        ROUTES_JSON=json.dumps(ROUTES),
        POLL_DEADLINE_MINUTES="0.05",  # 3 s: F&O picks messages up only after 5 s
    ) as stack:
        stack.drop("xslt/USMF/slow.csv", b"\xff\xfe" + customer_groups_csv(["S1"], encoding="utf-16-le"))
        stack.settle()
        drop = stack.drops()[0]
        assert drop["Status"] == "Failed"
        row = next(r for r in stack.outcomes() if r.get("Kind") == "enqueue")
        assert row["Status"] == "TimedOut" and row["MessageStatus"] == "Enqueued"
        assert "not processed after" in row["Reason"]


@pytest.mark.parametrize("kind", ["drain", "export"])
def test_a_guard_orphaned_by_a_crash_before_its_instance_started_does_not_block(
    stack: Stack, kind: str
) -> None:
    """The host died between taking a run guard and starting the instance (found by the fault matrix's
    SIGKILL row): no instance exists under the guard, so after a short grace the next firing takes over,
    instead of waiting out the guard's max age (minutes for a drain, the poll deadline + 1 h for an export)."""
    from dmf.storage.outcomes import safe_key

    ledger = TableServiceClient.from_connection_string(stack.az.connection_string).create_table_if_not_exists(
        stack.names["LEDGER_TABLE"]
    )
    guard = "drain:cust-groups" if kind == "drain" else "export:groups-nightly"
    ledger.upsert_entity({"PartitionKey": "run", "RowKey": safe_key(guard), "RunId": "crashed-run#00000000",
                          "Since": datetime.now(UTC) - timedelta(minutes=3)})  # fmt: skip
    stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(1))
    import requests

    key = {"x-functions-key": stack.runner.function_key}
    path = "drains/cust-groups" if kind == "drain" else "exports/groups-nightly"
    r = requests.post(f"{stack.runner.http_base_url}/api/outbound/{path}", headers=key, timeout=30)
    assert r.status_code == 202, r.text
    iid = DRAIN_ID if kind == "drain" else "export-groups-nightly"
    assert stack.runner.wait_for_instance(iid, timeout=120)["runtimeStatus"] == "Completed"
    # The same once an earlier run's instance exists (ended): the crashed firing's guard is not its own.
    ledger.upsert_entity({"PartitionKey": "run", "RowKey": safe_key(guard), "RunId": "crashed-again#00000000",
                          "Since": datetime.now(UTC) - timedelta(minutes=3)})  # fmt: skip
    r = requests.post(f"{stack.runner.http_base_url}/api/outbound/{path}", headers=key, timeout=30)
    assert r.status_code == 202, r.text
    assert stack.runner.wait_for_instance(iid, timeout=120)["runtimeStatus"] == "Completed"
    # ...but a guard just taken (its firing is about to start the instance) still holds.
    ledger.upsert_entity({"PartitionKey": "run", "RowKey": safe_key(guard), "RunId": "starting-run#00000000",
                          "Since": datetime.now(UTC)})  # fmt: skip
    r = requests.post(f"{stack.runner.http_base_url}/api/outbound/{path}", headers=key, timeout=30)
    assert r.status_code == 409 and "starting-run" in r.json()["reason"], r.text
