"""``import_package`` with pushed completion: each poll wait is ``task_any(import_completed event, timer)``.

The event (raised by ``triggers/fno_events.py`` from F&O's DMF import-status business event) only wakes
the orchestration, which then asks F&O once; polling goes on as the fallback, at least
``fallback_seconds`` apart. Other executions' events, duplicates and partial (one entity of several)
events wake nothing.
"""

from __future__ import annotations

from typing import Any

from dmf.pipeline.fno_events import EVENT_NAME
from orchestrators import import_package as mod
from tests.orchestrators.fake_context import NEVER, Script
from tests.orchestrators.test_import_package import (
    CFG,
    EXEC,
    INPUT,
    INSTANCE,
    STARTED,
    check,
    check_input,
    orchestrator,
    script,
)

# the app's default max interval (an hour), so the fallback can back off from 300 s
EVENTS_CFG = CFG | {
    "poll": CFG["poll"] | {"max_interval": 3600},
    "events": {"enabled": True, "fallback_seconds": 300},
}


def ev(entity: str = "CustGroup", status: str = "Succeeded", event_id: str = "E1", **kw: Any) -> dict:
    return {"execution_id": EXEC, "event_id": event_id, "entity": entity, "status": status} | kw


def events_script(events: list, inp: dict | None = None, **answers: list) -> Script:
    s = script(pipeline_config=[EVENTS_CFG], **answers)
    if inp is not None:
        s.context.get_input.return_value = inp
    # one scripted arrival per waiter: import_completed_1, _2, ... (a new name after each consumed event)
    s.events = {f"{EVENT_NAME}_{i}": [e] for i, e in enumerate(events, 1)}
    return s


def waits(s: Script) -> list[str]:
    return [n for n in s.names() if n.startswith("any(")]


def test_event_wakes_the_poll_wait_one_status_call_at_the_event_time() -> None:
    s = events_script([(40, ev())], check_import=[check("Succeeded")])
    out = s.run(orchestrator)
    assert s.names()[4:7] == [f"any({EVENT_NAME}_1, timer)", "check_import", "gate_release"]
    # the fallback timer was due after 300 s (15 s policy start raised to the fallback), cancelled at 40 s
    timer = s.timers()[0]
    assert timer.wait == 300.0 and timer.cancelled
    assert s.inputs("check_import") == [check_input(40)]
    rec = s.inputs("record_import_result")[0]
    assert (
        rec["observed_seconds"] == 40.0
        and rec["polls"] == 1
        and rec["finished_at"].endswith("12:00:40+00:00")
    )
    assert out["status"] == "Succeeded" and out["polls"] == 1
    polling = [st for st in s.statuses if st.get("stage") == "polling"]
    assert polling == [
        {
            "stage": "polling",
            "status": "Succeeded",
            "polls": 1,
            "execution_id": EXEC,
            "lease_lost": False,
            "woken_by_event": True,
            "event": f"{EVENT_NAME}_2",
        }
    ]
    s.assert_script_used()


def test_lost_event_falls_back_to_polling_at_the_longer_interval() -> None:
    s = events_script([NEVER], check_import=[check("Executing"), check("Succeeded")], gate_renew=[None])
    out = s.run(orchestrator)
    # the 600 s wait is longer than half the lease: the permit is renewed first
    assert s.names()[6] == "gate_renew"
    # the waiter the timer beat is kept for the next wait (an event during the check would complete it)
    waiters = [c for t in s.yielded for c in t.children if c.kind == "event"]
    assert len(waiters) == 2 and waiters[0] is waiters[1]
    # policy 15 s then 30 s; the fallback 300 s, then backing off by the factor: 600 s
    assert [t.wait for t in s.timers()] == [300.0, 600.0]
    assert s.inputs("check_import") == [check_input(300), check_input(900)]
    assert out["polls"] == 2
    s.assert_script_used()


def test_other_executions_duplicates_and_partial_events_wake_nothing() -> None:
    two = INPUT | {"entities": ["Customer groups", "Customers V3"]}
    s = events_script(
        [
            (5, ev(execution_id="Other-Import-drop-x-p001")),  # not ours: back to waiting
            (5, ev("Customer groups", event_id="E1")),  # one entity of two: not yet
            (5, ev("Customer groups", event_id="E1")),  # the same event again
            (5, "not a dict"),
            (5, ev("Customers V3", event_id="E2")),  # now every entity has reported
        ],
        inp=two,
        check_import=[check("Succeeded")],
    )
    out = s.run(orchestrator)
    assert len(waits(s)) == 5
    # each consumed event moves the name on (the SDK would hand a kept event to every later waiter of a name)
    assert [w.split(",")[0] for w in waits(s)] == [f"any({EVENT_NAME}_{i}" for i in range(1, 6)]
    assert all(t.fire_at == s.timers()[0].fire_at for t in s.timers())  # the same fallback due time each wait
    assert s.inputs("check_import") == [check_input(25)]  # one status call, at the completing event
    assert out["status"] == "Succeeded" and out["polls"] == 1
    s.assert_script_used()


def test_event_but_f_and_o_still_executing_keeps_waiting_then_the_next_event() -> None:
    s = events_script(
        [(10, ev(event_id="E1")), (20, ev(event_id="E2"))],
        check_import=[check("Executing"), check("PartiallySucceeded")],
        gate_renew=[None],
        collect_errors=[{"error_count": 1, "messages": ["x"], "files": []}],
    )
    out = s.run(orchestrator)
    assert s.inputs("check_import") == [check_input(10), check_input(30)]
    assert s.timers()[1].wait == 600.0  # after one check the fallback has backed off to 2 × 300 s
    assert out["status"] == "PartiallySucceeded" and out["polls"] == 2
    s.assert_script_used()


def test_repeated_event_key_without_event_id_is_a_duplicate() -> None:
    s = events_script(
        [(10, ev(event_id="")), (10, ev(event_id="")), NEVER],
        check_import=[check("Executing"), check("Succeeded")],
        gate_renew=[None],
    )
    s.run(orchestrator)
    # the first wakes a check at 10 s; the same entity+status again (at 20 s) is ignored: fallback at 610 s
    assert s.inputs("check_import") == [check_input(10), check_input(610)]
    s.assert_script_used()


def test_ambiguous_start_keeps_the_short_verify_grace_with_events_on() -> None:
    s = events_script(
        [NEVER],
        start_import=[{"state": "ambiguous", "confirmed": False}],
        check_import=[check("Executing"), check("Succeeded")],
        gate_renew=[None],
    )
    s.run(orchestrator)
    assert [t.wait for t in s.timers()][:1] == [
        15.0
    ]  # not raised to the fallback: F&O may never have seen it
    s.assert_script_used()


def test_events_off_never_waits_for_the_completion_event() -> None:
    s = script(check_import=[check("Executing"), check("Succeeded")])
    s.run(orchestrator)
    assert not any((c.name or "").startswith(EVENT_NAME) for t in s.yielded for c in [t, *t.children])
    assert all("event" not in st for st in s.statuses)
    assert [t.wait for t in s.timers()] == [15.0, 30.0]
    assert STARTED and INSTANCE and mod.COMPLETED_EVENT == EVENT_NAME


def test_learned_duration_first_fallback_poll_comes_after_the_usual_end() -> None:
    s = events_script(
        [NEVER],
        start_import=[STARTED | {"expected_seconds": 1000}],
        check_import=[check("Succeeded")],
        gate_renew=[None],
    )
    s.run(orchestrator)
    # polling alone would look at 900 s (90 % of the usual 1000 s); with events the fallback is 1000 + 300 s
    assert [t.wait for t in s.timers()] == [1300.0]
    s.assert_script_used()
