"""The call log: every request the emulator answered (or dropped), for tests and the admin API."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime


class CallLog:
    def __init__(self, clock_now: Callable, maxlen: int = 200_000) -> None:
        self._now = clock_now
        self.entries: deque[dict] = deque(maxlen=maxlen)
        # Counts over every call, kept when old entries leave a short log (a long soak needs only these).
        self.total = 0
        self.faults: Counter[str] = Counter()

    def clear(self) -> None:
        self.entries.clear()
        self.total = 0
        self.faults.clear()

    def add(
        self,
        method: str,
        path: str,
        endpoint: str,
        status: int,
        ms: float,
        fault: str | None,
        arrived: datetime | None = None,
    ) -> None:
        now = self._now()
        self.total += 1
        if fault:
            self.faults[fault] += 1
        self.entries.append(
            {
                "at": now.isoformat(),
                "arrived": (arrived or now).isoformat(),  # when the request came in (a hang logs later)
                "wall": time.time(),
                "method": method,
                "path": path,
                "endpoint": endpoint,
                "status": status,
                "ms": round(ms, 2),
                "fault": fault,
            }
        )
