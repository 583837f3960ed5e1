"""Housekeeping purges outcome and ledger rows past their retention, on a real Azurite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from dmf.pipeline import outbound_housekeeping as hk
from dmf.storage.outcomes import day_key

NOW = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)


@pytest.fixture
def tables(storage_conn: str, unique_name: str):
    svc = TableServiceClient.from_connection_string(storage_conn)
    outcomes = svc.create_table(unique_name + "out")
    ledger = svc.create_table(unique_name + "led")
    yield outcomes, ledger
    svc.delete_table(outcomes.table_name)
    svc.delete_table(ledger.table_name)


def _keys(table) -> set[tuple[str, str]]:
    return {(e["PartitionKey"], e["RowKey"]) for e in table.list_entities(select=["PartitionKey", "RowKey"])}


def _fill_day(table, day: datetime, rows: int) -> None:
    pk = day_key(day)
    for start in range(0, rows, 100):
        ops = [
            ("upsert", {"PartitionKey": pk, "RowKey": f"drop-{i:04d}", "Kind": "drop", "Status": "Succeeded"})
            for i in range(start, min(rows, start + 100))
        ]
        table.submit_transaction(ops)


def test_outcome_days_before_the_cutoff_go_whole_and_in_batches(tables) -> None:
    outcomes, _ = tables
    cutoff = NOW - timedelta(days=30)
    old_day, edge_day, new_day = cutoff - timedelta(days=3), cutoff, NOW
    _fill_day(outcomes, old_day, 250)  # three transactions: 100 + 100 + 50
    _fill_day(outcomes, cutoff - timedelta(days=1), 5)
    _fill_day(outcomes, edge_day, 3)  # the cutoff's own day stays
    _fill_day(outcomes, new_day, 4)
    outcomes.upsert_entity({"PartitionKey": "not-a-day", "RowKey": "x"})  # never ours to delete

    result = hk.purge_outcomes(outcomes, cutoff)

    assert result.deleted == 255 and result.partitions == 2 and result.complete
    left = _keys(outcomes)
    assert {pk for pk, _ in left} == {day_key(edge_day), day_key(new_day), "not-a-day"}
    assert len(left) == 3 + 4 + 1


def test_time_budget_stops_between_batches_and_the_next_run_goes_on(tables) -> None:
    outcomes, _ = tables
    cutoff = NOW - timedelta(days=30)
    _fill_day(outcomes, cutoff - timedelta(days=2), 150)
    ticks = iter([0.0, 0.0, 10.0])  # start, first batch in time, second batch past the budget

    first = hk.purge_outcomes(outcomes, cutoff, clock=lambda: next(ticks), max_seconds=5.0)

    assert (first.deleted, first.complete) == (100, False)
    assert len(_keys(outcomes)) == 50
    second = hk.purge_outcomes(outcomes, cutoff)
    assert (second.deleted, second.complete) == (50, True)
    assert _keys(outcomes) == set()


def test_ledger_keeps_what_must_outlive_retention(tables) -> None:
    _, ledger = tables
    for pk, rk in [
        ("content", "sha-old"),
        ("outbound-archive", "activity|cid"),
        ("duration", "main|Customers"),
        ("run", "drain_vendors"),
        ("export-schedule", "customers"),
    ]:
        ledger.upsert_entity({"PartitionKey": pk, "RowKey": rk})
    # Table Timestamps are the server's clock: everything above is "now", so a cutoff in the future makes all
    # of it old, and one in the past makes none of it.
    assert hk.purge_ledger(ledger, datetime.now(UTC) - timedelta(days=1)).deleted == 0
    result = hk.purge_ledger(ledger, datetime.now(UTC) + timedelta(minutes=5))
    assert result.deleted == 2 and result.complete
    assert _keys(ledger) == {
        ("duration", "main|Customers"),
        ("run", "drain_vendors"),
        ("export-schedule", "customers"),
    }


class _Settings:
    def __init__(self, days: float) -> None:
        self.outcome_retention_days = days


class _Svc:
    def __init__(self, outcomes, ledger, days: float) -> None:
        self.settings = _Settings(days)
        self.outcomes = type("O", (), {"table": outcomes})()
        self.ledger = type("L", (), {"table": ledger})()


def test_the_housekeeping_step_reads_the_setting(tables) -> None:
    outcomes, ledger = tables
    _fill_day(outcomes, NOW - timedelta(days=400), 2)
    _fill_day(outcomes, NOW - timedelta(days=10), 2)
    assert hk.purge_expired_rows(_Svc(outcomes, ledger, 0), NOW) == {
        "outcome_rows_deleted": 0,
        "ledger_rows_deleted": 0,
        "complete": True,
    }
    assert len(_keys(outcomes)) == 4
    got = hk.purge_expired_rows(_Svc(outcomes, ledger, 365), NOW)
    assert got["outcome_rows_deleted"] == 2 and got["complete"]
    assert {pk for pk, _ in _keys(outcomes)} == {day_key(NOW - timedelta(days=10))}


def test_setting_is_documented_with_its_default() -> None:
    from pathlib import Path

    from dmf.settings import Settings

    assert Settings.model_fields["outcome_retention_days"].default == 365.0
    doc = (Path(__file__).resolve().parents[2] / "docs" / "SETTINGS.md").read_text()
    (line,) = [x for x in doc.splitlines() if x.startswith("| `OUTCOME_RETENTION_DAYS`")]
    assert "| `365` |" in line


def test_the_housekeeping_call_works_with_the_real_services(storage_conn: str, unique_name: str) -> None:
    """What triggers/outbound_timers.py's housekeeping adds:
    ``result |= await asyncio.to_thread(outbound_housekeeping.purge_expired_rows, svc, now)``."""
    import asyncio

    from dmf.pipeline.services import Services
    from dmf.settings import load_settings

    settings = load_settings(
        {
            "DATA_STORAGE": storage_conn,
            "OUTCOMES_TABLE": unique_name + "o",
            "LEDGER_TABLE": unique_name + "l",
            "OUTCOME_RETENTION_DAYS": "30",
            "FNO_MAIN_BASE_URL": "https://fno.example.com",
            "FNO_MAIN_TENANT_ID": "t",
            "FNO_MAIN_CLIENT_ID": "c",
            "FNO_MAIN_CLIENT_SECRET": "s",
        }
    )
    svc = Services(settings)
    svc.outcomes.upsert(day_key(NOW - timedelta(days=31)), "drop-old", {"Kind": "drop", "Status": "Failed"})
    svc.outcomes.upsert(day_key(NOW), "drop-new", {"Kind": "drop", "Status": "Succeeded"})

    async def housekeeping() -> dict:
        result = {"instances_purged": 0, "archives_deleted": 0}
        result |= await asyncio.to_thread(hk.purge_expired_rows, svc, NOW)
        return result

    result = asyncio.run(housekeeping())
    assert result["outcome_rows_deleted"] == 1 and result["complete"] and "archives_deleted" in result
    assert svc.outcomes.get(day_key(NOW), "drop-new") is not None
    assert svc.outcomes.get(day_key(NOW - timedelta(days=31)), "drop-old") is None
