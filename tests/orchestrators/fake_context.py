"""A scripted stand-in for the Durable replay engine, for generator-level orchestrator tests.

The orchestrator generator gets a ``DurableOrchestrationContext`` mock (``create_autospec``, so only real
context methods with real signatures can be called) whose task factories return ``FakeTask`` records.
The generator is driven by the SDK's own ``orchestrator_generator_wrapper`` (send results, throw failures),
as the samples in Azure/azure-functions-durable-python do. A task's result is produced when the wrapper
reads it, from the test's script:

- activities and sub-orchestrations: the next scripted answer for that name (a value, an exception to
  raise, or a callable of the input); a call with no answer left fails the test;
- timers fire at their ``fire_at``: the clock (``current_utc_datetime``) moves there;
- external events arrive after the scripted delay (``None``: never), or ``(delay, payload)``: with a payload
  (each ``wait_for_external_event`` takes the next entry for its name);
- ``task_any`` completes with whichever child finishes first on the clock; ``task_all`` with every result.

Activities take no time unless ``durations`` says otherwise, so the clock is the sum of the timers waited
for, and every ``now`` an orchestrator passes on can be written down in the test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import create_autospec

import azure.durable_functions as df
from azure.durable_functions.testing import orchestrator_generator_wrapper

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
NEVER = None


def at(seconds: float) -> datetime:
    """The clock ``seconds`` after the orchestration started."""
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    """``now`` as an activity receives it, ``seconds`` after the start."""
    return at(seconds).isoformat()


def user_function(builder: Any) -> Callable:
    """The undecorated generator function behind a ``@bp.orchestration_trigger``."""
    return builder.build().get_user_function().orchestrator_function


@dataclass(eq=False)
class FakeTask:
    kind: str  # activity, sub, timer, event, any, all
    name: str | None = None
    input: Any = None
    retry: df.RetryOptions | None = None
    instance_id: str | None = None
    fire_at: datetime | None = None
    created_at: datetime | None = None
    arrives_after: float | None = None
    children: list[FakeTask] = field(default_factory=list)
    engine: Script | None = field(default=None, repr=False)
    is_completed: bool = False
    cancelled: bool = False
    _done: bool = False
    _value: Any = None
    _error: BaseException | None = None

    @property
    def result(self) -> Any:
        assert self.engine is not None
        return self.engine.resolve(self)

    def cancel(self) -> None:
        if self.is_completed:
            raise ValueError("a completed timer cannot be cancelled")
        self.cancelled = True

    @property
    def wait(self) -> float:
        """For timers: seconds between creation and firing."""
        assert self.fire_at is not None and self.created_at is not None
        return (self.fire_at - self.created_at).total_seconds()

    def summary(self) -> tuple:
        """A compact, comparable form: what the orchestrator asked for."""
        if self.kind == "activity":
            return ("activity", self.name, self.input)
        if self.kind == "sub":
            return ("sub", self.name, self.input, self.instance_id)
        if self.kind == "timer":
            return ("timer", (self.fire_at - T0).total_seconds())
        if self.kind == "event":
            return ("event", self.name)
        return (self.kind, [c.summary() for c in self.children])


class Script:
    """One orchestration run: the scripted world and what the orchestrator did in it."""

    def __init__(
        self,
        input: Any,
        *,
        instance_id: str = "inst-1",
        activities: dict[str, list[Any]] | None = None,
        subs: dict[str, list[Any]] | None = None,
        events: dict[str, list[Any]] | None = None,
        durations: dict[str, float] | None = None,
    ) -> None:
        self.now = T0
        self.activities = {k: list(v) for k, v in (activities or {}).items()}
        self.subs = {k: list(v) for k, v in (subs or {}).items()}
        self.events = {k: list(v) for k, v in (events or {}).items()}
        self.durations = durations or {}
        self.yielded: list[FakeTask] = []
        self.statuses: list[Any] = []
        self.output: Any = None
        ctx = create_autospec(df.DurableOrchestrationContext, instance=True)
        ctx.instance_id = instance_id
        ctx.current_utc_datetime = self.now
        ctx.get_input.return_value = input
        ctx.call_activity.side_effect = lambda name, input_=None: self._task(
            "activity", name=name, input=input_
        )
        ctx.call_activity_with_retry.side_effect = lambda name, retry, input_=None: self._task(
            "activity", name=name, input=input_, retry=retry
        )
        ctx.call_sub_orchestrator.side_effect = lambda name, input_=None, instance_id=None: self._task(
            "sub", name=name, input=input_, instance_id=instance_id
        )
        ctx.create_timer.side_effect = lambda fire_at: self._task(
            "timer", fire_at=fire_at, created_at=self.now
        )
        ctx.wait_for_external_event.side_effect = self._event
        ctx.task_any.side_effect = lambda tasks: self._task("any", children=list(tasks))
        ctx.task_all.side_effect = lambda tasks: self._task("all", children=list(tasks))
        ctx.set_custom_status.side_effect = self.statuses.append
        self.context = ctx

    # -- running ------------------------------------------------------------------------------------------

    def run(self, orchestrator: Callable) -> Any:
        """Drive the generator to its end; returns (and keeps) its output."""
        *tasks, self.output = orchestrator_generator_wrapper(orchestrator(self.context))
        for t in tasks:
            assert isinstance(t, FakeTask), f"orchestrator yielded {t!r}, not a context task"
        self.yielded = tasks
        return self.output

    def assert_script_used(self) -> None:
        """Every scripted answer was asked for: the orchestrator made no fewer calls than the test expects."""
        left = {k: v for k, v in {**self.activities, **self.subs}.items() if v}
        assert not left, f"scripted answers never asked for: {left}"

    # -- what happened --------------------------------------------------------------------------------------

    def trace(self) -> list[tuple]:
        return [t.summary() for t in self.yielded]

    def names(self) -> list[str]:
        """Activity/sub-orchestration names and ``timer@<seconds since start>``, in yield order."""
        out = []
        for t in self.yielded:
            if t.kind == "timer":
                out.append(f"timer@{(t.fire_at - T0).total_seconds():g}")
            elif t.kind in ("any", "all"):
                out.append(f"{t.kind}(" + ", ".join(c.name or c.kind for c in t.children) + ")")
            else:
                out.append(t.name)
        return out

    def calls(self, name: str) -> list[FakeTask]:
        found = []
        for t in self.yielded:
            found += [c for c in [t, *t.children] if c.name == name and c.kind in ("activity", "sub")]
        return found

    def inputs(self, name: str) -> list[Any]:
        return [c.input for c in self.calls(name)]

    def timers(self) -> list[FakeTask]:
        found = []
        for t in self.yielded:
            found += [c for c in [t, *t.children] if c.kind == "timer"]
        return found

    # -- the engine -----------------------------------------------------------------------------------------

    def _task(self, kind: str, **kw: Any) -> FakeTask:
        return FakeTask(kind, engine=self, **kw)

    def _event(self, name: str) -> FakeTask:
        delays = self.events.get(name) or []
        entry = delays.pop(0) if delays else NEVER
        delay, payload = entry if isinstance(entry, tuple) else (entry, None)
        task = self._task("event", name=name, arrives_after=delay)
        task._value = payload
        return task

    def _set_clock(self, when: datetime) -> None:
        if when > self.now:
            self.now = when
            self.context.current_utc_datetime = when

    def _finish_time(self, t: FakeTask) -> datetime | None:
        if t.kind == "timer":
            return t.fire_at
        if t.kind == "event":
            return None if t.arrives_after is None else self.now + timedelta(seconds=t.arrives_after)
        return self.now + timedelta(seconds=self.durations.get(t.name or "", 0))

    def _answer(self, t: FakeTask) -> None:
        """Work out a leaf task's outcome (without moving the clock)."""
        if t._done:
            return
        t._done = True
        if t.kind in ("activity", "sub"):
            book = self.activities if t.kind == "activity" else self.subs
            answers = book.get(t.name)
            assert answers, f"unexpected {t.kind} call {t.name}({t.input!r})"
            answer = answers.pop(0)
            try:
                if isinstance(answer, BaseException):
                    raise answer
                t._value = answer(t.input) if callable(answer) else answer
            except Exception as exc:
                t._error = exc
        t.is_completed = True

    def resolve(self, t: FakeTask) -> Any:
        if t.kind in ("activity", "sub", "timer"):
            self._answer(t)
            when = self._finish_time(t)
            assert when is not None
            self._set_clock(when)
        elif t.kind == "event":
            if t.is_completed:  # the winner of a task_any: its payload, as the SDK's ``result``
                return t._value
            raise AssertionError("an external event was yielded on its own; only task_any is scripted")
        elif t.kind == "any":
            timed = [(self._finish_time(c), i, c) for i, c in enumerate(t.children)]
            ready = [x for x in timed if x[0] is not None]
            assert ready, "task_any whose children never finish"
            when, _, winner = min(ready, key=lambda x: (x[0], x[1]))
            self._answer(winner)
            self._set_clock(when)
            return winner
        else:  # all: every child, the clock moves to the slowest
            ends = [self._finish_time(c) for c in t.children]
            for c in t.children:
                self._answer(c)
            if ends:
                self._set_clock(max(e for e in ends if e is not None))
            for c in t.children:
                if c._error is not None:
                    raise c._error
            return [c._value for c in t.children]
        if t._error is not None:
            raise t._error
        return t._value
