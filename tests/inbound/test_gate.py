"""The Table-backed import gate against a real Azurite: mutual exclusion, FIFO, leases, eviction."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from dmf.gate import ImportGate

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LEASE, STALE = 600.0, 300.0


@pytest.fixture
def table(storage_conn: str, unique_name: str):
    return TableServiceClient.from_connection_string(storage_conn).create_table(unique_name)


def test_fifo_single_permit_and_handover(table) -> None:
    gate = ImportGate(table, "main", permits=1)
    for i, t in enumerate(["a", "b", "c"]):
        gate.enqueue(t, f"inst-{t}", T0 + timedelta(seconds=i))
    # c and b ask first, but a arrived first: only a gets in.
    assert not gate.try_acquire("c", "inst-c", T0, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    b = gate.try_acquire("b", "inst-b", T0, lease_seconds=LEASE, stale_after_seconds=STALE)
    assert not b.granted and b.position == 1
    assert gate.try_acquire("a", "inst-a", T0, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    # Idempotent re-run of the same activity.
    assert gate.try_acquire("a", "inst-a", T0, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    assert not gate.try_acquire("b", "inst-b", T0, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    wake = gate.release("a", T0 + timedelta(seconds=5), stale_after_seconds=STALE)
    assert wake == ["inst-b"]  # the caller raises an event to b right away
    assert gate.try_acquire("b", "inst-b", T0, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    snap = gate.snapshot()
    assert [h["ticket"] for h in snap["holders"]] == ["b"]
    assert [w["ticket"] for w in snap["waiters"]] == ["c"]
    assert gate.release("a", T0, stale_after_seconds=STALE) == []  # releasing twice is harmless


def test_expired_lease_frees_the_permit_and_renew_keeps_it(table) -> None:
    gate = ImportGate(table, "main", permits=1)
    gate.enqueue("a", "ia", T0)
    gate.enqueue("b", "ib", T0 + timedelta(seconds=1))
    assert gate.try_acquire("a", "ia", T0, lease_seconds=60, stale_after_seconds=STALE).granted
    assert gate.renew("a", T0 + timedelta(seconds=50), lease_seconds=60)
    assert not gate.try_acquire(
        "b", "ib", T0 + timedelta(seconds=100), lease_seconds=60, stale_after_seconds=STALE
    ).granted
    # a crashed: no renewal; after its lease ends, b takes over.
    assert gate.try_acquire(
        "b", "ib", T0 + timedelta(seconds=111), lease_seconds=60, stale_after_seconds=STALE
    ).granted
    assert not gate.renew("a", T0 + timedelta(seconds=112), lease_seconds=60)


def test_evicting_a_terminated_holder_wakes_the_next(table) -> None:
    gate = ImportGate(table, "main", permits=1)
    gate.enqueue("a", "ia", T0)
    gate.enqueue("b", "ib", T0 + timedelta(seconds=1))
    assert gate.try_acquire("a", "ia", T0, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    assert gate.evict({"ia"}, T0 + timedelta(seconds=2), stale_after_seconds=STALE) == ["ib"]
    assert gate.try_acquire(
        "b", "ib", T0 + timedelta(seconds=3), lease_seconds=LEASE, stale_after_seconds=STALE
    ).granted


def test_stale_waiter_does_not_block_the_queue(table) -> None:
    gate = ImportGate(table, "main", permits=1)
    gate.enqueue("dead", "idead", T0)
    gate.enqueue("live", "ilive", T0 + timedelta(seconds=1))
    later = T0 + timedelta(seconds=STALE + 10)
    assert gate.try_acquire("live", "ilive", later, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    assert [w["ticket"] for w in gate.snapshot()["waiters"]] == []


@pytest.mark.parametrize("permits", [1, 2])
def test_concurrent_acquirers_never_exceed_permits(table, permits: int) -> None:
    gate = ImportGate(table, "main", permits=permits)
    holding = 0
    peak = 0
    lock = threading.Lock()
    order: list[str] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        nonlocal holding, peak
        g = ImportGate(table, "main", permits=permits)  # own client view, like separate activity workers
        ticket = f"t{n:02d}"
        try:
            while not g.try_acquire(
                ticket, f"i{n}", T0, lease_seconds=LEASE, stale_after_seconds=STALE
            ).granted:
                time.sleep(0.01)
            with lock:
                holding += 1
                peak = max(peak, holding)
                order.append(ticket)
            # Hold until every permit has been in use at once (or 5 s): on a loaded machine a fixed short
            # hold may end before the next acquirer's poll, which says nothing about the gate.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with lock:
                    if peak >= permits:
                        break
                time.sleep(0.01)
            time.sleep(0.05)
            with lock:
                holding -= 1
            g.release(ticket, T0, stale_after_seconds=STALE)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    for n in range(8):  # arrival order is the FIFO order
        gate.enqueue(f"t{n:02d}", f"i{n}", T0 + timedelta(milliseconds=n))
    threads = [threading.Thread(target=worker, args=(n,)) for n in reversed(range(8))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(order) == 8
    assert peak == permits
    if permits == 1:
        assert order == sorted(order)  # strict FIFO by arrival
    assert gate.snapshot()["holders"] == []


def test_pause_holds_new_permits_and_resume_wakes_the_first_waiter(table) -> None:
    gate = ImportGate(table, "main", permits=1)
    gate.enqueue("a", "ia", T0)
    assert gate.try_acquire("a", "ia", T0, lease_seconds=LEASE, stale_after_seconds=STALE).granted
    gate.enqueue("b", "ib", T0 + timedelta(seconds=1))
    gate.enqueue("c", "ic", T0 + timedelta(seconds=2))
    assert gate.set_paused(True, T0, by="ops", reason="F&O maintenance") == []
    # The holder keeps its permit and renews through the pause (a merge never wipes the pause).
    assert gate.renew("a", T0 + timedelta(seconds=5), lease_seconds=LEASE)
    assert gate.release("a", T0 + timedelta(seconds=6), stale_after_seconds=STALE) == []  # nobody woken
    b = gate.try_acquire("b", "ib", T0 + timedelta(seconds=7), lease_seconds=LEASE, stale_after_seconds=STALE)
    assert not b.granted and b.paused and b.position == 0
    snap = gate.snapshot()
    assert snap["paused"] and snap["paused_by"] == "ops" and snap["pause_reason"] == "F&O maintenance"
    assert [w["ticket"] for w in snap["waiters"]] == ["b", "c"]  # waiters keep their place
    assert gate.set_paused(False, T0 + timedelta(seconds=8), stale_after_seconds=STALE) == ["ib", "ic"]
    assert not gate.snapshot()["paused"]
    assert gate.try_acquire(
        "b", "ib", T0 + timedelta(seconds=9), lease_seconds=LEASE, stale_after_seconds=STALE
    ).granted


def test_a_canceled_waiter_is_told_so_and_no_longer_blocks_the_queue(table) -> None:
    gate = ImportGate(table, "main", permits=1)
    gate.enqueue("a", "ia", T0)
    gate.enqueue("b", "ib", T0 + timedelta(seconds=1))
    assert gate.cancel_waiter("ia", T0 + timedelta(seconds=2))
    a = gate.try_acquire("a", "ia", T0 + timedelta(seconds=3), lease_seconds=LEASE, stale_after_seconds=STALE)
    assert a.canceled and not a.granted
    # b is first in line now that a is canceled.
    assert gate.try_acquire(
        "b", "ib", T0 + timedelta(seconds=4), lease_seconds=LEASE, stale_after_seconds=STALE
    ).granted
    assert not gate.cancel_waiter("ib", T0)  # holding, not waiting: too late to cancel
    gate.release("a", T0 + timedelta(seconds=5), stale_after_seconds=STALE)  # the canceled row goes
    assert [w["ticket"] for w in gate.snapshot()["waiters"]] == []
