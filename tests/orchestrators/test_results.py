"""Activity results and gate payloads on the wire (``dmf/pipeline/results.py``): the keys histories already
hold, so a replay reads an old answer the same way and a new answer looks like an old one."""

from __future__ import annotations

import inspect

import azure.durable_functions as df

from activities.steps import step_activity
from dmf.gate import Acquire
from dmf.pipeline.payloads import GateRelease, GateRenew, GateTicket, to_wire
from dmf.pipeline.results import BatchDone, Checked, ErrorsFound, Plan, PreparedItem, Started


def test_a_start_answer_carries_only_the_keys_it_set() -> None:
    assert to_wire(Started(state="started")) == {"state": "started"}
    base = {"execution_id": "e", "expected_seconds": None}
    answer = to_wire(Started(**base, state="ambiguous", confirmed=False, error="timeout"))
    assert answer == base | {"state": "ambiguous", "confirmed": False, "error": "timeout"}
    read = Started.of({"state": "enqueued", "message_id": "m", "added_later": 1})
    assert read.message_id == "m" and read.retry_after is None and read.confirmed is None


def test_a_check_without_a_lease_is_not_a_lost_lease() -> None:
    assert Checked.of({"status": "Executing"}).lease_ok is None  # an export's check: no gate
    assert Checked.of({"status": "Executing", "lease_ok": False, "error": None}).lease_ok is False
    assert to_wire(Checked(status="Unreachable", error="x")) == {"status": "Unreachable", "error": "x"}


def test_errors_found_keeps_the_recorded_shape() -> None:
    fallback = ErrorsFound(error_count=None, messages=["could not collect errors"], files=[])
    assert to_wire(fallback) == {"error_count": None, "messages": ["could not collect errors"], "files": []}
    found = ErrorsFound.from_wire(
        {"error_count": 2, "messages": [], "files": [], "pending_target_keys": ["A"]}
    )
    assert found.pending_target_keys == ["A"] and "summary_page_url" not in to_wire(found)


def test_an_acquire_from_an_older_history_reads_as_before() -> None:
    old = {"granted": False, "position": 3, "holders": ["h"]}  # written before paused/canceled existed
    acq = Acquire.of(old)
    assert (acq.granted, acq.position, acq.holders, acq.paused, acq.canceled) == (
        False,
        3,
        ["h"],
        False,
        False,
    )
    assert to_wire(Acquire(True, 0, ["me"])) == {
        "granted": True,
        "position": 0,
        "holders": ["me"],
        "paused": False,
        "canceled": False,
    }


def test_gate_payloads_keep_the_keys_each_activity_took() -> None:
    ticket = {"environment": "main", "ticket": "t", "instance_id": "t", "now": "n"}
    assert to_wire(GateRenew(**ticket, lease_seconds=60.0)) == ticket | {"lease_seconds": 60.0}  # no exec id
    release = GateRelease(**ticket, execution_id="e", maybe_running=True)
    assert to_wire(release) == ticket | {"execution_id": "e", "maybe_running": True}
    assert GateTicket.of(ticket).execution_id is None


def test_plans_and_prepared_items_answer_as_before() -> None:
    assert to_wire(Plan(action="gone", reason="r")) == {"action": "gone", "reason": "r", "items": []}
    assert to_wire(Plan(action="reject", reason="r", route={"a": 1})) == {
        "action": "reject",
        "reason": "r",
        "route": {"a": 1},
        "items": [],
    }
    bad = to_wire(PreparedItem(ok=False, seq=2, problems=["p"], packages=[]))
    assert bad == {"ok": False, "seq": 2, "problems": ["p"], "packages": []}


def test_a_drain_batch_answer_counts_what_it_lacks_as_zero() -> None:
    done = BatchDone.of({"taken": 2, "archived": 1, "failed": None, "extra": True})
    assert [done.count(k) for k in ("taken", "archived", "failed", "not_acked")] == [2, 1, 0, 0]
    assert done.failures == [] and not done.empty


def test_a_step_activity_is_a_plain_dict_function_that_runs_the_step_with_the_payload(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(
        "activities.steps.run_step", lambda step, p, **log: seen.append((step, p, log)) or "ok"
    )

    def plan(svc, req):  # pragma: no cover - run_step is replaced
        """The step's doc."""

    bp = df.Blueprint()
    step_activity(bp, "plan_it", GateTicket, plan, lambda p: {"instance_id": p.instance_id})
    (fb,) = bp._function_builders
    fn = fb._function.get_user_function()
    assert fn.__name__ == "plan_it" and fn.__doc__ == "The step's doc."
    assert [(n, p.annotation) for n, p in inspect.signature(fn).parameters.items()] == [("req", "dict")]
    wire = {"environment": "main", "ticket": "t", "instance_id": "i", "now": "n"}
    assert fn(wire) == "ok"
    assert seen == [(plan, GateTicket.of(wire), {"instance_id": "i"})]
