"""The emulator's notion of "now": an injected clock (the local runner's virtual clock) or real time,
plus an admin-controlled offset, so tests can skip 30 minutes or 7 days in milliseconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source or (lambda: datetime.now(UTC))
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._source() + self._offset

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    def set_time(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("set_time needs an aware datetime")
        with self._lock:
            self._offset = when - self._source()
        return self.now()
