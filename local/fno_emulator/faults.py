"""Fault injection per endpoint: 429 with Retry-After, 500/502/503 (Retry-After when set), slow responses,
dropped connections, and "after the handler" faults (the call takes effect, then its answer is lost as a
5xx, a reset or a hang), SAS URLs that expire at once (``sas_expired``), at a rate or on the next N calls,
optionally only until an emulator time (``until``: an outage window). Endpoints are action names (``ImportFromPackage``), ``token``,
``enqueue``, ``dequeue``, ``ack``, ``download``, or ``*`` for all."""

from __future__ import annotations

import random
import threading
from datetime import datetime

from .config import FaultRule


class FaultInjector:
    def __init__(self, rules: list[FaultRule], seed: int | None = None) -> None:
        self._rules = [r.model_copy() for r in rules]
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: list[tuple[str, str]] = []  # (endpoint, kind) in order, for inspection

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule.model_copy())

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [r.model_copy() for r in self._rules]

    def pick(self, endpoint: str, now: datetime | None = None) -> FaultRule | None:
        """The fault to apply to this call, if any. ``next_n`` rules are used up first, in order. Rules
        whose ``until`` has passed (by ``now``, the emulator's time) are dropped."""
        low = endpoint.lower()
        with self._lock:
            if now is not None:
                self._rules = [r for r in self._rules if r.until is None or now < r.until]
            for rule in self._rules:
                if rule.endpoint != "*" and rule.endpoint.lower() != low:
                    continue
                if rule.next_n is not None and rule.next_n > 0:
                    rule.next_n -= 1
                    if rule.next_n == 0 and rule.rate is None:
                        self._rules.remove(rule)
                    self.injected.append((endpoint, rule.kind))
                    return rule.model_copy()
                if rule.rate is not None and self._rng.random() < rule.rate:
                    self.injected.append((endpoint, rule.kind))
                    return rule.model_copy()
        return None
