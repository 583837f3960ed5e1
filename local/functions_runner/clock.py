"""Clocks for the local runner: real UTC time, or a virtual clock that only moves when told to.

The virtual clock is shared with other local tools (the F&O emulator takes ``clock=runner.clock.now``) so
that orchestration timers and emulated execution times advance together in end-to-end tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class RealClock:
    """Wall-clock UTC time."""

    virtual = False

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock that stands still until ``advance``/``advance_to`` move it (never backwards).

    The runner advances it only when nothing is runnable, jumping straight to the earliest due timer.
    """

    virtual = True

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("VirtualClock start must be timezone-aware (UTC)")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()
        self._watchers: list[Callable[[datetime], None]] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def watch(self, tell: Callable[[datetime], None]) -> None:
        """Call ``tell(now)`` now and on every move, under the clock's lock (so a watcher never sees time go
        back): how a clock in another process (the emulator run apart) follows this one."""
        with self._lock:
            self._watchers.append(tell)
            tell(self._now)

    def advance_to(self, when: datetime) -> datetime:
        with self._lock:
            if when > self._now:
                self._set(when.astimezone(UTC))
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time only moves forward")
        with self._lock:
            self._set(self._now + delta)
            return self._now

    def _set(self, now: datetime) -> None:
        self._now = now
        for tell in self._watchers:
            tell(now)


Clock = RealClock | VirtualClock
