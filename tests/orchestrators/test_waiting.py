"""The one durable wait (``orchestrators/waiting.py``) at generator level: every way it ends.

A minimal ``DurableWait`` (activities ``start`` and ``check``) runs on the scripted context, so each exit
is seen with the exact calls, timers and outcome the orchestrators build on.
"""

from __future__ import annotations

from typing import Any

from dmf.pipeline.polling import PollPolicy
from orchestrators.retries import MAX_START_RETRIES
from orchestrators.waiting import LOST_GATE, CompletionEvents, DurableWait, WaitOutcome
from tests.orchestrators.fake_context import NEVER, Script, iso

POLICY = PollPolicy(initial=15, factor=2, max_interval=300, deadline=3600, not_found_grace=60)
STARTED = {"state": "started"}
AMBIGUOUS = {"state": "ambiguous"}


class Probe(DurableWait):
    max_recalls = 1
    execution_id = "exec-1"

    def __init__(self, context: Any, policy: PollPolicy, **attrs: Any) -> None:
        super().__init__(context, policy)
        self.leases: list[float] = []
        for k, v in attrs.items():
            setattr(self, k, v)

    def start_task(self, recall: bool) -> Any:
        return self.context.call_activity("start", {"recall": recall})

    def check_task(self) -> Any:
        return self.context.call_activity("check", None)

    def keep_lease(self, wait: float):
        self.leases.append(wait)
        yield from ()


def run(
    start: list,
    check: list | None = None,
    policy: PollPolicy = POLICY,
    arrivals: dict | None = None,
    **attrs: Any,
) -> tuple[Script, WaitOutcome, Probe]:
    """Run a ``Probe`` wait: ``start``/``check`` answers, scripted event ``arrivals``, Probe ``attrs``."""
    box: dict[str, Probe] = {}

    def orchestrator(context: Any):
        box["wait"] = wait = Probe(context, policy, **attrs)
        return (yield from wait.run())

    s = Script(None, activities={"start": start, "check": check or []}, events=arrivals)
    out = s.run(orchestrator)
    s.assert_script_used()
    return s, out, box["wait"]


def statuses(*names: str) -> list[dict]:
    return [{"status": n} for n in names]


def waits(s: Script) -> list[float]:
    return [t.wait for t in s.timers()]


# -- terminal -------------------------------------------------------------------------------------------------


def test_terminal_after_backing_off_with_everything_the_outcome_carries() -> None:
    s, out, wait = run([STARTED], statuses("Executing", "Succeeded"))
    assert s.names() == ["start", "timer@15", "check", "timer@45", "check"]
    assert s.inputs("start") == [{"recall": False}]
    assert out == WaitOutcome(
        "Succeeded",
        polls=2,
        last_status="Succeeded",
        started=True,
        terminal=True,
        confirmed_start_at=iso(0),
        observed_seconds=30.0,  # ended between the two checks (15 s and 45 s)
    )
    assert s.statuses == [
        {"stage": "starting"},
        {"stage": "polling", "status": "Executing", "polls": 1},
        {"stage": "polling", "status": "Succeeded", "polls": 2},
    ]
    assert wait.leases == [15.0, 30.0]  # the lease hook sees every wait before it starts


def test_learned_duration_one_long_wait_and_a_slightly_shorter_observation() -> None:
    s, out, _ = run([STARTED | {"expected_seconds": 100}], statuses("Failed"))
    assert waits(s) == [90.0]  # 90 % of the usual duration
    assert out.status == "Failed" and out.terminal and out.observed_seconds == 0.9 * 90


# -- the start ------------------------------------------------------------------------------------------------


def test_refused_start_fails_without_polling() -> None:
    s, out, _ = run([{"state": "failed", "error": "no such project"}])
    assert s.names() == ["start"]
    assert out == WaitOutcome("Failed", "no such project", 0)


def test_start_reaching_nothing_backs_off_then_gives_up_with_its_reason() -> None:
    retries = [{"state": "retry", "retry_after": 100}] + [{"state": "retry", "error": "upload failed"}] * 5
    s, out, wait = run(retries)
    # Retry-After beats initial x 2 once; then initial x 2**attempt
    assert waits(s) == [100.0, 60.0, 120.0, 240.0, 480.0]
    assert len(s.calls("start")) == 1 + MAX_START_RETRIES
    assert out == WaitOutcome("Failed", "upload failed", 0)
    assert wait.leases == waits(s)


def test_throttled_start_waits_retry_after_or_the_backoff_and_shows_it() -> None:
    s, out, wait = run(
        [{"state": "throttled", "retry_after": 20}, {"state": "throttled"}, STARTED], statuses("Succeeded")
    )
    assert s.names() == ["start", "timer@20", "start", "timer@50", "start", "timer@65", "check"]
    assert {"stage": "throttled", "retry_in": 20.0} in s.statuses
    assert {"stage": "throttled", "retry_in": 30.0} in s.statuses  # no Retry-After: initial x 2
    assert wait.leases == [20.0, 30.0, 15.0]
    assert out.status == "Succeeded" and out.confirmed_start_at == iso(50)  # polling counts from the start


def test_throttled_until_the_deadline_fails() -> None:
    policy = PollPolicy(initial=15, factor=2, max_interval=300, deadline=100, not_found_grace=60)
    throttled = {"state": "throttled", "retry_after": 60, "error": "429"}
    s, out, _ = run([throttled] * 3, policy=policy)
    assert waits(s) == [60.0, 40.0]  # the second refusal's wait is cut to what the deadline leaves
    assert out == WaitOutcome("Failed", "429", 0)


def test_lost_gate_ends_the_wait_for_a_new_queueing() -> None:
    s, out, _ = run([{"state": "lost-gate"}])
    assert s.names() == ["start"] and out == WaitOutcome(LOST_GATE)


# -- timeouts -------------------------------------------------------------------------------------------------


def test_timed_out_may_still_be_running() -> None:
    policy = PollPolicy(initial=15, factor=2, max_interval=300, deadline=100, not_found_grace=60)
    s, out, _ = run([STARTED], statuses("Executing", "Executing", "Executing"), policy=policy)
    assert waits(s) == [15.0, 30.0, 55.0]  # the last wait is cut to the deadline
    assert out == WaitOutcome(
        "TimedOut", "no terminal status after 2 minutes (last: Executing)", 3, "Executing", started=True
    )


def test_the_deadline_counts_from_the_first_start_across_a_recall() -> None:
    policy = PollPolicy(initial=15, factor=2, max_interval=300, deadline=200, not_found_grace=60)
    s, out, _ = run([AMBIGUOUS, STARTED], statuses(*["NotFound"] * 3, *["Executing"] * 3), policy=policy)
    # NotFound at 15, 45, 105 s: called again at 105 s; polling restarts but stops at 200 s
    assert waits(s) == [15.0, 30.0, 60.0, 15.0, 30.0, 50.0]
    assert out.status == "TimedOut" and out.polls == 3 and out.started is True


# -- not found and recalls ------------------------------------------------------------------------------------


def test_not_found_after_a_confirmed_start_fails_without_calling_again() -> None:
    s, out, _ = run([STARTED], statuses("NotFound", "NotFound", "NotFound"))
    assert len(s.calls("start")) == 1
    assert out == WaitOutcome("Failed", "F&O has no record of execution exec-1 after 105s", 3, "NotFound")


def test_ambiguous_start_f_and_o_never_saw_is_called_again_then_polled_from_there() -> None:
    s, out, _ = run([AMBIGUOUS, STARTED], statuses("NotFound", "Unreachable", "NotFound", "Succeeded"))
    assert s.names() == [
        "start",
        "timer@15",
        "check",
        "timer@45",
        "check",  # Unreachable: neither confirms nor counts as not found
        "timer@105",
        "check",  # NotFound past the 60 s grace
        "start",
        "timer@120",
        "check",
    ]
    assert s.inputs("start") == [{"recall": False}, {"recall": True}]
    assert out.status == "Succeeded" and out.polls == 1 and out.confirmed_start_at == iso(105)


def test_a_status_f_and_o_reported_confirms_an_ambiguous_start() -> None:
    s, out, _ = run([AMBIGUOUS], statuses("Executing", "NotFound", "NotFound"))
    assert len(s.calls("start")) == 1  # F&O knew it: a later NotFound is a failure, not a reason to re-call
    assert out.status == "Failed" and out.polls == 3


def test_recalls_are_limited() -> None:
    s, out, _ = run([AMBIGUOUS, AMBIGUOUS], statuses(*["NotFound"] * 6))
    assert s.inputs("start") == [{"recall": False}, {"recall": True}]
    assert out == WaitOutcome("Failed", "F&O has no record of execution exec-1 after 105s", 3, "NotFound")


def test_recall_refused_fails_with_the_polls_so_far() -> None:
    s, out, _ = run(
        [AMBIGUOUS, {"state": "failed", "error": "refused"}], statuses("NotFound", "NotFound", "NotFound")
    )
    assert out == WaitOutcome("Failed", "refused", 3)
    assert s.names()[-1] == "start"


def test_recall_that_lost_the_gate_ends_the_wait() -> None:
    _, out, _ = run([AMBIGUOUS, {"state": "lost-gate"}], statuses("NotFound", "NotFound", "NotFound"))
    assert out == WaitOutcome(LOST_GATE)


def test_verify_grace_polls_an_unconfirmed_start_often_and_calls_again_sooner() -> None:
    s, out, _ = run(
        [AMBIGUOUS, STARTED | {"confirmed": True}],
        statuses("NotFound", "NotFound", "Executing", "Succeeded"),
        verify_grace=20.0,
    )
    # 15 s, then capped at 20 s; NotFound 35 s after the call is past the 20 s grace: called again
    assert waits(s) == [15.0, 20.0, 15.0, 30.0]
    assert len(s.calls("start")) == 2 and out.status == "Succeeded"


def test_without_a_not_found_status_it_polls_until_the_deadline() -> None:
    policy = PollPolicy(initial=15, factor=2, max_interval=300, deadline=100, not_found_grace=60)
    s, out, _ = run([STARTED], statuses(*["NotFound"] * 3), policy=policy, not_found=None)
    assert out.status == "TimedOut" and out.polls == 3 and len(s.calls("start")) == 1


# -- completion events ----------------------------------------------------------------------------------------


def event(execution_id: str = "exec-1", event_id: str = "E1") -> dict:
    return {"execution_id": execution_id, "event_id": event_id, "entity": "CustGroup", "status": "Succeeded"}


def completion_events() -> CompletionEvents:
    return CompletionEvents("done", "exec-1", needed=1, fallback=300.0)


def events_policy() -> PollPolicy:
    return PollPolicy(initial=15, factor=2, max_interval=3600, deadline=3600, not_found_grace=60)


def test_a_completion_event_wakes_the_wait_and_the_check_comes_at_once() -> None:
    s, out, wait = run(
        [STARTED],
        statuses("Succeeded"),
        policy=events_policy(),
        arrivals={"done_1": [(40, event())]},
        events=completion_events(),
    )
    assert s.names() == ["start", "any(done_1, timer)", "check"]
    assert waits(s) == [300.0] and s.timers()[0].cancelled  # the fallback timer, cancelled by the event
    assert out.observed_seconds == 40.0 and out.terminal
    # the custom status names the event to raise: a new name once one is consumed
    assert s.statuses[0] == {"stage": "starting", "event": "done_1"}
    assert s.statuses[-1] == {"stage": "polling", "status": "Succeeded", "polls": 1, "event": "done_2"}
    assert wait.events is not None and wait.events.n == 2


def test_another_executions_event_wakes_nothing_and_the_fallback_polls() -> None:
    s, out, _ = run(
        [STARTED],
        statuses("Executing", "Succeeded"),
        policy=events_policy(),
        arrivals={"done_1": [(10, event("exec-other"))], "done_2": [NEVER]},
        events=completion_events(),
    )
    assert s.names() == [
        "start",
        "any(done_1, timer)",
        "any(done_2, timer)",
        "check",
        "any(done_2, timer)",
        "check",
    ]
    assert [t.fire_at for t in s.timers()[:2]] == [s.timers()[0].fire_at] * 2  # the same due time
    assert s.inputs("check") == [None, None] and out.polls == 2
    assert waits(s)[-1] == 600.0  # the fallback backs off by the poll factor
