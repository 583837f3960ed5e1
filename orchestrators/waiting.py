"""One durable wait: start an operation in F&O once (under the id we recorded), then poll its status with
durable timers until it is terminal. Used by a package's import, a scheduled export and the recurring
enqueue route; each says how to start and check (a ``DurableWait`` subclass), this module says when.

- Start: ``throttled`` (F&O refused: 429, or 503 with Retry-After) is waited out for Retry-After and called
  again while the poll deadline allows; ``retry`` (nothing reached F&O) gets ``MAX_START_RETRIES`` backoffs;
  ``failed`` ends it; ``lost-gate`` (the import permit lapsed before the call) ends it for a new queueing.
- Poll: waits from ``PollPolicy`` (learned duration first), cut to the deadline counted from the first
  start; with completion events (``CompletionEvents``) a wait also ends when F&O says it is done, and the
  timers become a slower fallback.
- ``NotFound`` past the grace: a start F&O confirmed (or reported on) fails; an ambiguous one is called
  again (``allow_recall``), at most ``max_recalls`` times; polling then restarts from the new call.

Everything is read from the orchestration context (replay-safe): no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from dmf.pipeline.polling import TERMINAL, PollPolicy
from dmf.pipeline.results import Checked, Started
from orchestrators.retries import MAX_START_RETRIES
from orchestrators.timing import refusal_wait, timer_in

LOST_GATE = "LostGate"
# A start call's answers that end the wait: nothing was started (``lost-gate``: not even allowed to).
NOT_STARTED = frozenset({"failed", "retry", "throttled", "lost-gate"})
# Statuses that do not show F&O knows the execution (anything else confirms an ambiguous start).
UNSEEN = frozenset({"NotFound", "Unreachable"})

Steps = Generator[Any, Any, Any]


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait ended. ``terminal``: F&O reported a terminal status (``status`` is that status)."""

    status: str
    reason: str | None = None
    polls: int | None = None
    last_status: str | None = None
    started: bool | None = None  # F&O may still be running it (a terminal status or a timeout)
    terminal: bool = False
    confirmed_start_at: str | None = None
    observed_seconds: float | None = None


@dataclass
class CompletionEvents:
    """Completion events that wake a poll wait (``<prefix>_<n>``; ``n`` moves on with each consumed event).

    Why ``<n>``: the Python SDK (1.x) keeps an event raised while nobody waits for its name and hands it to
    *every* later waiter of that name, so one early event would wake each later wait at once, for ever.
    ``seen`` event keys and reported ``entities`` live across waits, so a duplicate or a partial (one entity
    of several) event goes back to waiting for the same due time.
    """

    prefix: str
    execution_id: str
    needed: int  # entities that must report before a check is worth it
    fallback: float  # seconds between fallback polls (backing off by the poll factor)
    n: int = 1
    waiter: Any = None  # the pending wait_for_external_event task, reused by the next wait
    status: dict = field(default_factory=dict)
    seen: set = field(default_factory=set)
    entities: set = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.prefix}_{self.n}"

    def publish(self, context: df.DurableOrchestrationContext, status: dict) -> None:
        """Set the custom status, naming the event the endpoint must raise now."""
        self.status = status
        context.set_custom_status(status | {"event": self.name})

    def wait_until(self, context: df.DurableOrchestrationContext, due: datetime) -> Steps:
        """Wait until ``due`` or a completing event; True when an event woke us."""
        while True:
            timer = context.create_timer(due)
            if self.waiter is None:
                self.waiter = context.wait_for_external_event(self.name)
            event = self.waiter
            winner = yield context.task_any([event, timer])
            if winner is not event:
                return False  # the waiter stays: an event arriving during the check completes it
            if not timer.is_completed:
                timer.cancel()
            self.waiter = None
            self.n += 1
            self.publish(context, self.status)
            if self._completes(event.result):
                return True

    def _completes(self, payload: Any) -> bool:
        if not isinstance(payload, dict) or payload.get("execution_id") != self.execution_id:
            return False
        entity = str(payload.get("entity") or "").strip().lower()
        key = str(payload.get("event_id") or "") or f"{entity}|{payload.get('status')}"
        if key in self.seen:
            return False
        self.seen.add(key)
        self.entities.add(entity)
        return len(self.entities) >= self.needed


class DurableWait:
    """Start once, poll until terminal. Subclasses give ``start_task`` and ``check_task`` (and may adjust
    the hooks below); ``run`` is the one algorithm. One instance per run of an orchestration."""

    max_recalls = 0  # calls again after an ambiguous start F&O never saw
    not_found: str | None = "NotFound"  # the status meaning F&O has no record of it (None: never)
    verify_grace: float | None = None  # an unconfirmed start: poll this often, call again after this long
    events: CompletionEvents | None = None
    execution_id = ""  # named in the not-found reason

    def __init__(self, context: df.DurableOrchestrationContext, policy: PollPolicy) -> None:
        self.context = context
        self.policy = policy
        self.polls = self.recalls = 0
        self.last: str | None = None
        self.confirmed = False
        self.expected: float | None = None
        self.first = self.began = context.current_utc_datetime
        self.pending_at = 0.0  # seconds after ``began`` of the last non-terminal check

    # -- what subclasses say ----------------------------------------------------------------------------------

    def start_task(self, recall: bool) -> df.Task:
        raise NotImplementedError

    def check_task(self) -> df.Task:
        raise NotImplementedError

    def start_status(self) -> dict:
        return {"stage": "starting"}

    def throttled_status(self, wait: float) -> dict:
        return {"stage": "throttled", "retry_in": wait}

    def progress(self, chk: Checked, by_event: bool) -> dict:
        """The custom status after a check."""
        return {"stage": "polling", "status": self.last, "polls": self.polls}

    def is_terminal(self, chk: Checked) -> bool:
        return chk.status in TERMINAL

    def accepted(self, st: Started) -> bool:
        """Note what a start that went through answered; True when F&O confirmed it."""
        return st.state == "started"

    def retry_wait(self, st: Started, attempt: int) -> float:
        return max(st.retry_after or 0, self.policy.initial * 2**attempt)

    def timeout_reason(self) -> str:
        return f"no terminal status after {self.policy.deadline / 60:.0f} minutes (last: {self.last})"

    def called(self) -> None:
        """After every start or status call (the import renews its gate lease there)."""

    def keep_lease(self, wait: float) -> Steps:
        """Before every wait of ``wait`` seconds (the import extends its gate permit over long ones)."""
        yield from ()

    # -- the algorithm ------------------------------------------------------------------------------------------

    def run(self) -> Steps:
        """The whole wait; returns a ``WaitOutcome``."""
        self.show(self.start_status())
        st = yield from self.start(recall=False)
        if st.state in NOT_STARTED:
            return self._not_started(st)
        self.expected = st.expected_seconds
        self.first = self.context.current_utc_datetime  # the deadline counts from here, recalls or not
        self._restart(st)
        while True:
            wait = self.plan_wait()
            if wait <= 0:
                return WaitOutcome("TimedOut", self.timeout_reason(), self.polls, self.last, started=True)
            yield from self.keep_lease(wait)
            by_event = yield from self.sleep(wait)
            chk = Checked.of((yield self.check_task()))
            self.called()
            self.polls += 1
            self.last = chk.status
            elapsed = self._seconds_since(self.began)
            self.show(self.progress(chk, by_event))
            if self.is_terminal(chk):
                return self._finished(elapsed, by_event)
            self.pending_at = elapsed
            ended = yield from self._maybe_recall(elapsed)
            if ended is not None:
                return ended

    def start(self, recall: bool) -> Steps:
        """The start call until it gives a final answer (the one retry layer for it)."""
        attempt = refusals = 0
        waited = 0.0
        while True:
            st = Started.of((yield self.start_task(recall)))
            self.called()
            if st.state == "throttled" and waited < self.policy.deadline:
                wait = refusal_wait(st.retry_after, refusals, waited, self.policy)
                refusals += 1
                waited += wait
                self.context.set_custom_status(self.throttled_status(wait))
            elif st.state == "retry" and attempt < MAX_START_RETRIES:
                attempt += 1
                wait = self.retry_wait(st, attempt)
            else:
                return st
            yield from self.keep_lease(wait)
            yield timer_in(self.context, wait)

    def plan_wait(self) -> float:
        """Seconds until the next status call (0 or less: the deadline has passed)."""
        elapsed = self._seconds_since(self.began)
        left = self.policy.deadline - self._seconds_since(self.first)
        wait = min(self.policy.next_wait(self.polls, elapsed, self.expected), left)
        if wait <= 0:
            return wait
        if not self.confirmed and self.verify_grace is not None:
            # An ambiguous start: look often enough to call again within the short verify grace.
            return max(1.0, min(wait, self.verify_grace))
        if self.events is not None:
            # F&O tells us when it is done: polling is only the fallback, backing off from ``fallback`` by
            # the poll factor (up to the larger of it and the max interval), and the first fallback poll
            # comes that long after the usual end (not just before it).
            fallback = self.events.fallback
            backoff = min(fallback * self.policy.factor**self.polls, max(self.policy.max_interval, fallback))
            late_first = (self.expected or 0.0) - elapsed + fallback if self.polls == 0 else 0.0
            return min(max(wait, backoff, late_first), left)
        return wait

    def sleep(self, wait: float) -> Steps:
        """A timer, or with completion events the first of it and a completing event (True)."""
        if self.events is None:
            yield timer_in(self.context, wait)
            return False
        due = self.context.current_utc_datetime + timedelta(seconds=wait)
        return (yield from self.events.wait_until(self.context, due))

    def show(self, status: dict) -> None:
        if self.events is not None:
            self.events.publish(self.context, status)
        else:
            self.context.set_custom_status(status)

    # -- the exits -------------------------------------------------------------------------------------------

    def _not_started(self, st: Started) -> WaitOutcome:
        if st.state == "lost-gate":
            return WaitOutcome(LOST_GATE)
        return WaitOutcome("Failed", st.error, self.polls)

    def _finished(self, elapsed: float, by_event: bool) -> WaitOutcome:
        # Done by the first call: it may have ended well before, so learn a little shorter; otherwise it
        # ended between the last two calls. Woken by an event: F&O said so within seconds of finishing.
        if by_event:
            observed = elapsed
        elif self.polls == 1 and self.expected:
            observed = 0.9 * elapsed
        else:
            observed = (self.pending_at + elapsed) / 2
        return WaitOutcome(
            str(self.last),
            polls=self.polls,
            last_status=self.last,
            started=True,
            terminal=True,
            confirmed_start_at=self.began.isoformat(),
            observed_seconds=observed,
        )

    def _maybe_recall(self, elapsed: float) -> Steps:
        """After a pending status: None to keep polling, or the outcome that ends the wait."""
        if self.last not in UNSEEN:
            self.confirmed = True  # F&O knows the execution: it was started
        unconfirmed = not self.confirmed and self.verify_grace is not None
        grace = self.verify_grace if unconfirmed else self.policy.not_found_grace
        if self.last != self.not_found or elapsed < grace:
            return None
        if self.confirmed or self.recalls >= self.max_recalls:
            reason = f"F&O has no record of execution {self.execution_id} after {elapsed:.0f}s"
            return WaitOutcome("Failed", reason, self.polls, self.last)
        # The ambiguous start call never reached F&O: now, and only now, call it again.
        self.recalls += 1
        st = yield from self.start(recall=True)
        if st.state in NOT_STARTED:
            return self._not_started(st)
        self._restart(st)
        return None

    def _restart(self, st: Started) -> None:
        """Polling (re)starts from a start call F&O accepted or may have received."""
        self.confirmed = self.accepted(st)
        self.began = self.context.current_utc_datetime
        self.polls = 0
        self.pending_at = 0.0

    def _seconds_since(self, when: datetime) -> float:
        return (self.context.current_utc_datetime - when).total_seconds()
