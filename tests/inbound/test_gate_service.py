"""The gate service against a real Azurite: the sweeper, hand-over, read-only status, and the package row of a
holder whose orchestration ended without recording it. The Durable client is a small stand-in (it only
answers statuses and records raised events); storage is real."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest
from azure.data.tables import TableServiceClient

from dmf.gate import GateService, gate_service
from dmf.pipeline.services import Services
from dmf.settings import load_settings

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DAY = "20261129"


@dataclass
class Status:
    runtime_status: df.OrchestrationRuntimeStatus | None
    input_: Any = None
    custom_status: Any = None
    output: Any = None


@dataclass
class Client:
    statuses: dict[str, Status]
    raised: list[tuple[str, str]] = field(default_factory=list)

    async def get_status(self, instance_id: str, show_input: bool = False) -> Status | None:
        st = self.statuses.get(instance_id)
        if st is not None and not show_input:
            return Status(st.runtime_status, None, st.custom_status, st.output)
        return st

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        self.raised.append((instance_id, name))


@pytest.fixture
def gates(storage_conn: str, unique_name: str) -> GateService:
    settings = load_settings(
        {
            "DATA_STORAGE": storage_conn,
            "OUTCOMES_TABLE": unique_name + "o",
            "LEDGER_TABLE": unique_name + "l",
            "GATES_TABLE": unique_name + "g",
            "GATE_LEASE_SECONDS": "600",
            "FNO_MAIN_BASE_URL": "https://fno.example.com",
            "FNO_MAIN_TENANT_ID": "t",
            "FNO_MAIN_CLIENT_ID": "c",
            "FNO_MAIN_CLIENT_SECRET": "s",
        }
    )
    return gate_service(Services(settings))


def _import_status(drop: str, seq: int, runtime: df.OrchestrationRuntimeStatus, **kw: Any) -> Status:
    return Status(runtime, {"drop_id": drop, "day": DAY, "seq": seq, "route": {"environment": "main"}}, **kw)


def _hold(gates: GateService, ticket: str, now: datetime = T0) -> None:
    gates.enqueue("main", ticket, ticket, now)
    assert gates.try_acquire("main", ticket, ticket, now).granted


def test_sweeping_a_terminated_holder_fails_its_importing_package_and_wakes_the_next(
    gates: GateService,
) -> None:
    holder, waiter = "drop-a-p001", "drop-b-p001"
    gates.svc.outcomes.upsert(DAY, "drop-a~001", {"Kind": "package", "Status": "Importing"})
    _hold(gates, holder)
    gates.enqueue("main", waiter, waiter, T0 + timedelta(seconds=1))
    assert not gates.try_acquire("main", waiter, waiter, T0 + timedelta(seconds=1)).granted
    client = Client(
        {
            holder: _import_status(
                "drop-a", 1, df.OrchestrationRuntimeStatus.Terminated, output="operator stopped it"
            ),
            waiter: Status(df.OrchestrationRuntimeStatus.Running, custom_status={"wake": "gate_open_3"}),
        }
    )
    evicted = asyncio.run(gates.sweep(client, T0 + timedelta(seconds=5)))
    assert evicted == {"main": [holder]}
    assert client.raised == [(waiter, "gate_open_3")]  # the name the waiter published
    row = gates.svc.outcomes.get(DAY, "drop-a~001")
    assert row["Status"] == "Failed"
    assert "Terminated: operator stopped it" in row["Reason"] and "without recording" in row["Reason"]
    assert [h["instance_id"] for h in gates.status("main")["holders"]] == []


def _freed_by_next_waiter(gates: GateService, drop: str, holder: str, waiter: str) -> datetime:
    """``holder`` imports ``drop``'s package; its lease runs out and ``waiter`` gets the permit before any
    sweep. Answers when."""
    gates.svc.outcomes.upsert(DAY, f"{drop}~001", {"Kind": "package", "Status": "Importing"})
    _hold(gates, holder)
    later = T0 + timedelta(seconds=601)  # GATE_LEASE_SECONDS 600
    gates.enqueue("main", waiter, waiter, later)
    assert gates.try_acquire("main", waiter, waiter, later).granted
    return later


def test_a_holder_a_waiter_freed_before_any_sweep_still_gets_its_package_row_closed(
    gates: GateService,
) -> None:
    # The holder was terminated and its lease ran out before a sweep looked: the next waiter freed the permit,
    # so no sweep saw it among the holders, and its package row stayed Importing for good.
    holder, waiter = "drop-e-p001", "drop-f-p001"
    later = _freed_by_next_waiter(gates, "drop-e", holder, waiter)
    assert [h["instance_id"] for h in gates.status("main")["freed"]] == [holder]
    client = Client(
        {
            holder: _import_status("drop-e", 1, df.OrchestrationRuntimeStatus.Terminated),
            waiter: _import_status("drop-f", 1, df.OrchestrationRuntimeStatus.Running),
        }
    )
    assert asyncio.run(gates.sweep(client, later)) == {}  # nobody to evict: the waiter holds, running
    row = gates.svc.outcomes.get(DAY, "drop-e~001")
    assert row["Status"] == "Failed" and "Terminated" in row["Reason"]
    assert gates.status("main")["freed"] == []
    assert [h["instance_id"] for h in gates.status("main")["holders"]] == [waiter]


def test_a_freed_holder_still_running_stays_listed_until_it_ends(gates: GateService) -> None:
    slow = "drop-g-p001"
    later = _freed_by_next_waiter(gates, "drop-g", slow, "drop-h-p001")
    client = Client({slow: _import_status("drop-g", 1, df.OrchestrationRuntimeStatus.Running)})
    asyncio.run(gates.sweep(client, later))
    assert [h["instance_id"] for h in gates.status("main")["freed"]] == [slow]  # it records its own end
    gates.svc.outcomes.upsert(DAY, "drop-g~001", {"Kind": "package", "Status": "Succeeded"})
    client.statuses[slow] = _import_status("drop-g", 1, df.OrchestrationRuntimeStatus.Completed)
    asyncio.run(gates.sweep(client, later))
    assert gates.status("main")["freed"] == []
    assert gates.svc.outcomes.get(DAY, "drop-g~001")["Status"] == "Succeeded"


def test_sweeping_leaves_a_recorded_outcome_and_running_imports_alone(gates: GateService) -> None:
    done, running = "drop-c-p001", "drop-d-p001"
    gates.svc.outcomes.upsert(DAY, "drop-c~001", {"Kind": "package", "Status": "Succeeded"})
    gates.svc.outcomes.upsert(DAY, "drop-d~001", {"Kind": "package", "Status": "Importing"})
    _hold(gates, done)
    gates.enqueue("main", running, running, T0)
    client = Client(
        {
            done: _import_status("drop-c", 1, df.OrchestrationRuntimeStatus.Completed),
            running: _import_status("drop-d", 1, df.OrchestrationRuntimeStatus.Running),
        }
    )
    assert asyncio.run(gates.sweep(client, T0)) == {"main": [done]}
    assert gates.svc.outcomes.get(DAY, "drop-c~001")["Status"] == "Succeeded"
    assert gates.svc.outcomes.get(DAY, "drop-d~001")["Status"] == "Importing"
    assert [w["instance_id"] for w in gates.status("main")["waiters"]] == [running]


def test_an_ended_holder_keeps_its_permit_while_fno_still_runs_its_execution(
    gates: GateService, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = "drop-e-p001"
    gates.svc.outcomes.upsert(DAY, "drop-e~001", {"Kind": "package", "Status": "Importing"})
    gates.enqueue("main", holder, holder, T0)
    assert gates.try_acquire("main", holder, holder, T0, execution_id="X-drop-e-p001").granted
    fno = {"X-drop-e-p001": "Executing"}
    monkeypatch.setattr(GateService, "fno_status", lambda self, env, exec_id: fno.get(exec_id or ""))
    client = Client({holder: _import_status("drop-e", 1, df.OrchestrationRuntimeStatus.Terminated)})

    assert asyncio.run(gates.sweep(client, T0 + timedelta(seconds=700))) == {}  # F&O still imports
    snap = gates.status("main")
    assert [h["instance_id"] for h in snap["holders"]] == [holder]
    assert datetime.fromisoformat(snap["holders"][0]["lease_until"]) > T0 + timedelta(seconds=700)
    row = gates.svc.outcomes.get(DAY, "drop-e~001")
    assert row["Status"] == "Failed" and row["LastFnoStatus"] == "Executing"
    assert "stays held until F&O ends it" in row["Reason"]

    fno["X-drop-e-p001"] = "Succeeded"
    assert asyncio.run(gates.sweep(client, T0 + timedelta(seconds=800))) == {"main": [holder]}
    assert gates.status("main")["holders"] == []


def test_release_keeps_the_permit_while_fno_may_still_run(
    gates: GateService, monkeypatch: pytest.MonkeyPatch
) -> None:
    gates.enqueue("main", "t1", "t1", T0)
    assert gates.try_acquire("main", "t1", "t1", T0, execution_id="X1").granted
    gates.enqueue("main", "t2", "t2", T0 + timedelta(seconds=1))
    fno = {"X1": "Executing"}
    monkeypatch.setattr(GateService, "fno_status", lambda self, env, exec_id: fno.get(exec_id or ""))
    assert gates.release("main", "t1", T0 + timedelta(seconds=2), execution_id="X1", maybe_running=True) == []
    assert [h["ticket"] for h in gates.status("main")["holders"]] == ["t1"]
    fno["X1"] = "Failed"
    assert gates.release("main", "t1", T0 + timedelta(seconds=3), execution_id="X1", maybe_running=True) == [
        "t2"
    ]


def test_status_reads_without_writing(gates: GateService, storage_conn: str) -> None:
    service = TableServiceClient.from_connection_string(storage_conn)
    name = gates.settings.gates_table
    assert gates.status("main") == {
        "environment": "main",
        "permits": 1,
        "paused": False,
        "paused_at": None,
        "paused_by": None,
        "pause_reason": None,
        "holders": [],
        "freed": [],
        "waiters": [],
    }
    assert name not in {t.name for t in service.list_tables()}  # a read created no table
    table = service.create_table(name)
    table.create_entity({"PartitionKey": "main", "RowKey": "w~fragment"})  # a half-written waiter row
    assert gates.status("main")["waiters"] == []
    assert [e["RowKey"] for e in table.list_entities()] == ["w~fragment"]  # no state row, no tidying up


def test_not_found_soon_after_the_import_call_keeps_the_permit(
    gates: GateService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F&O lists an execution a while after ImportFromPackage returns: until the not-found grace has passed
    since the call, "not found" may be an import about to run, and a second one must not start."""
    holder = "drop-f-p001"
    asked = T0 - timedelta(seconds=30)
    gates.svc.outcomes.upsert(
        DAY, "drop-f~001", {"Kind": "package", "Status": "Importing", "ImportRequestedAt": asked}
    )
    gates.enqueue("main", holder, holder, asked)
    assert gates.try_acquire("main", holder, holder, asked, execution_id="X-f").granted
    monkeypatch.setattr(GateService, "fno_status", lambda self, env, exec_id: "NotFound")
    client = Client({holder: _import_status("drop-f", 1, df.OrchestrationRuntimeStatus.Terminated)})
    assert asyncio.run(gates.sweep(client, T0)) == {}
    assert [h["instance_id"] for h in gates.status("main")["holders"]] == [holder]
    grace = gates.settings.poll_not_found_grace_seconds
    assert asyncio.run(gates.sweep(client, asked + timedelta(seconds=grace + 1))) == {"main": [holder]}
    assert gates.svc.outcomes.get(DAY, "drop-f~001")["LastFnoStatus"] == "NotFound"


def test_hand_over_raises_only_the_event_a_waiter_waits_on_now(gates: GateService) -> None:
    from dmf.gate.events import wake_event
    from orchestrators import import_package

    # The orchestrator waits on the names dmf.gate.events makes (one definition of the event name).
    assert import_package.wake_event is wake_event
    client = Client(
        {
            "waiting": Status(df.OrchestrationRuntimeStatus.Running, custom_status={"wake": wake_event(2)}),
            "polling": Status(df.OrchestrationRuntimeStatus.Running, custom_status={"stage": "polling"}),
            "other": Status(
                df.OrchestrationRuntimeStatus.Running, custom_status={"wake": "import_completed_1"}
            ),
        }
    )
    asyncio.run(gates.hand_over(client, ["waiting", "polling", "other", "gone"]))
    assert client.raised == [("waiting", "gate_open_2")]
