"""The `event` log lines the operations workbook and alerts read (docs/RUNBOOK.md) are written, with their fields.

The gate runs on a real Azurite; the import and drain results on stand-in services (only their log line matters).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from unittest.mock import MagicMock

import pytest
from azure.data.tables import TableServiceClient

from dmf.gate import ImportGate
from dmf.pipeline import imports, outbound

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


@pytest.fixture
def gate(storage_conn: str, unique_name: str):
    svc = TableServiceClient.from_connection_string(storage_conn)
    table = svc.create_table(unique_name + "gates")
    yield ImportGate(table, "Main", permits=1)
    svc.delete_table(table.table_name)


def test_gate_acquired_released_and_freed(gate: ImportGate, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dmf")
    kw = {"lease_seconds": 60.0, "stale_after_seconds": 600.0}
    gate.enqueue("t1", "i1", T0)
    gate.enqueue("t2", "i2", T0 + timedelta(seconds=1))
    assert gate.try_acquire("t1", "i1", T0 + timedelta(seconds=5), **kw).granted
    assert not gate.try_acquire("t2", "i2", T0 + timedelta(seconds=6), **kw).granted
    gate.release("t1", T0 + timedelta(seconds=125), stale_after_seconds=600.0)
    assert gate.try_acquire("t2", "i2", T0 + timedelta(seconds=131), **kw).granted
    # t2's lease runs out (its orchestration died): the next waiter frees the permit.
    gate.enqueue("t3", "i3", T0 + timedelta(seconds=140))
    assert gate.try_acquire("t3", "i3", T0 + timedelta(seconds=300), **kw).granted

    acquired = {r.ticket: r for r in _events(caplog, "gate_acquired")}
    assert acquired["t1"].waited_seconds == 5.0 and acquired["t2"].waited_seconds == 130.0
    assert all(r.gate == "main" for r in acquired.values())
    (released,) = _events(caplog, "gate_released")
    assert (released.ticket, released.held_seconds) == ("t1", 120.0)
    (freed,) = _events(caplog, "gate_freed")
    assert (freed.ticket, freed.reason, freed.held_seconds) == ("t2", "lease expired", 169.0)
    assert freed.levelno == logging.WARNING


def test_gate_eviction_is_a_freed_permit(gate: ImportGate, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dmf")
    gate.enqueue("t1", "i1", T0)
    assert gate.try_acquire("t1", "i1", T0, lease_seconds=600.0, stale_after_seconds=600.0).granted
    gate.evict({"i1"}, T0 + timedelta(minutes=3), stale_after_seconds=600.0)
    (freed,) = _events(caplog, "gate_freed")
    assert (freed.ticket, freed.reason, freed.held_seconds) == ("t1", "orchestration ended", 180.0)


def test_import_finished_carries_route_status_and_durations(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dmf")
    svc = MagicMock()
    req = {
        "drop_id": "drop-abc",
        "day": "20261129",
        "seq": 1,
        "route": {"environment": "main", "data_project": "Customers", "legal_entity": "USMF"},
        "execution_id": "Customers-exec-1",
        "status": "TimedOut",
        "started_at": T0.isoformat(),
        "confirmed_start_at": (T0 + timedelta(seconds=40)).isoformat(),
        "finished_at": (T0 + timedelta(seconds=100)).isoformat(),
        "errors": {"error_count": 3},
    }
    imports.record_import_result(svc, req)
    (r,) = _events(caplog, "import_finished")
    assert r.levelno == logging.WARNING
    assert (r.status, r.environment, r.legal_entity, r.data_project) == (
        "TimedOut",
        "main",
        "USMF",
        "Customers",
    )
    assert (r.execution_id, r.drop_id, r.error_count) == ("Customers-exec-1", "drop-abc", 3)
    assert (r.import_seconds, r.total_seconds) == (60.0, 100.0)


@pytest.mark.parametrize(
    ("stop", "backlog", "level"),
    [
        ("count budget of 200 messages reached", True, logging.WARNING),
        ("time budget of 240s reached", True, logging.WARNING),
        ("queue empty", False, logging.INFO),
    ],
)
def test_drain_finished_says_whether_messages_were_left(
    stop: str, backlog: bool, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dmf")
    req = {
        "export": {"name": "vendors", "environment": "main", "activity_id": "{A}"},
        "run_id": "drain-vendors-1",
        "day": "20261129",
        "totals": {"archived": 7, "duplicate": 2, "failed": 0, "not_acked": 0},
        "stop_reason": stop,
        "started_at": T0.isoformat(),
        "finished_at": (T0 + timedelta(seconds=30)).isoformat(),
    }
    outbound.record_drain_result(MagicMock(), req)
    (r,) = _events(caplog, "drain_finished")
    assert (r.export, r.environment, r.status, r.backlog, r.levelno) == (
        "vendors",
        "main",
        "Succeeded",
        backlog,
        level,
    )
    assert (r.messages, r.duplicates, r.failed, r.duration_seconds) == (9, 2, 0, 30.0)


def test_drop_finished_carries_the_routes_fields(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dmf.pipeline import drops

    caplog.set_level(logging.INFO, logger="dmf")
    monkeypatch.setattr(drops, "_move", lambda *a, **k: None)  # only the outcome and its log line matter here
    svc = MagicMock()
    svc.outcomes.get.return_value = {
        "Environment": "main",
        "LegalEntity": "DEMF",
        "DataProject": "Vendors",
        "StartedAt": datetime.now(UTC) - timedelta(seconds=42),
    }
    req = {
        "instance_id": "drop-abc",
        "day": "20261129",
        "source": "inbound/DEMF/Vendors/v.csv",
        "results": [{"seq": 1, "status": "Failed", "reason": "F&O said no"}],
        "rejected": [],
    }
    assert drops.finalize_drop(svc, req)["status"] == "Failed"
    (r,) = _events(caplog, "drop_finished")
    assert (r.status, r.environment, r.legal_entity, r.data_project) == ("Failed", "main", "DEMF", "Vendors")
    assert (r.drop_id, r.packages, r.levelno) == ("drop-abc", 1, logging.WARNING)
    assert 41 < r.duration_seconds < 60
