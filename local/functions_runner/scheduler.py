"""Durable timers and the clock: a heap of due actions and the loop that fires them.

Part of ``Engine`` (see ``engine.py``). With a virtual clock the loop jumps to the earliest timer once
nothing is runnable (and no one holds the clock); with the real clock it sleeps until the next one is due.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .instances import Instance

log = logging.getLogger("local.functions_runner")


@dataclass(order=True)
class _Timer:
    fire_at: datetime
    order: int
    kind: str = field(compare=False)  # "orch" | "trigger"
    action: Callable[[], None] = field(compare=False)
    key: tuple[str, str, int] | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)


class Scheduler:
    """The timer half of ``Engine``."""

    def add_timer(
        self,
        fire_at: datetime,
        action: Callable[[], None],
        kind: str,
        key: tuple[str, str, int] | None = None,
    ) -> _Timer:
        with self.cond:
            t = _Timer(fire_at, next(self._timer_order), kind, action, key)
            heapq.heappush(self._timers, t)
            if kind == "orch":
                self._orch_timers += 1
            if key is not None:
                self._timer_index[key] = t
            self.cond.notify_all()
            return t

    def _cancel_timer(self, key: tuple[str, str, int]) -> None:
        with self.cond:
            t = self._timer_index.pop(key, None)
            if t is not None and not t.cancelled:
                t.cancelled = True
                if t.kind == "orch":
                    self._orch_timers -= 1
                self.cond.notify_all()

    def cancel_timer(self, t: _Timer) -> None:
        with self.cond:
            if not t.cancelled:
                t.cancelled = True
                if t.kind == "orch":
                    self._orch_timers -= 1

    def _cancel_timers(self, inst: Instance) -> None:
        with self.cond:
            for exec_id, seq in list(inst.timer_keys):
                self._cancel_timer((inst.instance_id, exec_id, seq))
            inst.timer_keys.clear()

    def pending_orchestration_timers(self) -> int:
        with self.cond:
            return self._orch_timers

    def next_timer_due(self, kind: str | None = None) -> datetime | None:
        with self.cond:
            live = [t.fire_at for t in self._timers if not t.cancelled and (kind is None or t.kind == kind)]
            return min(live) if live else None

    def _pop_due(self, now: datetime) -> list[_Timer]:
        due = []
        while self._timers and (self._timers[0].cancelled or self._timers[0].fire_at <= now):
            t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            t.cancelled = True  # fired: no longer pending
            if t.kind == "orch":
                self._orch_timers -= 1
            if t.key is not None:
                self._timer_index.pop(t.key, None)
            due.append(t)
        return due

    def _schedule_loop(self) -> None:
        quiet_since: float | None = None
        while True:
            with self.cond:
                if self._stopping:
                    return
                due = self._pop_due(self.clock.now())
                if due:
                    # counted busy while firing, so the virtual clock cannot move under the deliveries
                    self.busy += 1
                elif self.clock.virtual:
                    if self.busy == 0 and self._orch_timers > 0 and not self.clock_holds:
                        # nothing runnable: after a short settle, jump to the earliest timer of any kind
                        if quiet_since is None:
                            quiet_since = time.monotonic()
                        elif time.monotonic() - quiet_since >= 0.005:
                            head = next(t for t in sorted(self._timers) if not t.cancelled)
                            self.clock.advance_to(head.fire_at)
                            quiet_since = None
                            continue
                        self.cond.wait(0.005)
                    else:
                        quiet_since = None
                        self.cond.wait(0.05)
                    continue
                else:
                    head = next((t for t in self._timers if not t.cancelled), None)
                    wait = 0.5
                    if head is not None:
                        wait = min(wait, max(0.001, (head.fire_at - self.clock.now()).total_seconds()))
                    self.cond.wait(wait)
                    continue
            try:
                for t in due:
                    try:
                        t.action()
                    except Exception:
                        log.exception("runner error firing a timer")
            finally:
                self.add_busy(-1)

    def idle(self) -> bool:
        with self.cond:
            return self.busy == 0
