"""Task-hub storage calls that ride out a storage outage, as the Durable extension's do.

The storage SDK retries a refused connection three times within about five seconds; an Azurite restart (or
a storage blip in Azure) can take longer. The extension keeps retrying its task-hub reads and writes, so an
episode's commit or an activity's result is never dropped because storage was away for a while. Every Store
method here is idempotent (upserts, deletes that tolerate a missing row, reads), so a call whose answer was
lost may simply be made again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

log = logging.getLogger("local.functions_runner")

PATIENCE_SECONDS = 300.0  # then the call fails as before (the episode fails visibly)
MAX_BACKOFF_SECONDS = 2.0


def transient(exc: BaseException) -> bool:
    """Storage away or overloaded, not an answer about the data (404, 409, 412 are answers)."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, HttpResponseError):
        code = exc.status_code
        return code is None or code in (408, 429) or code >= 500
    return False


class ResilientStore:
    """Wraps a Store: each call is retried with backoff while storage answers with a transient error.

    ``outage`` is True while some call is waiting for storage to come back (the runner's health and the
    tests read it); ``outages`` counts how many outages the store rode out."""

    def __init__(self, inner: Any, patience: float = PATIENCE_SECONDS) -> None:
        self._inner = inner
        self._patience = patience
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = threading.Event()
        self.outages = 0
        self.retried_calls = 0

    def close(self) -> None:
        """The runner is stopping: calls waiting for storage give up (a stopped runner must not linger)."""
        self._closed.set()

    @property
    def outage(self) -> bool:
        return self._waiting > 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, attr, args, kwargs)

        return call

    def _call(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not transient(exc):
                raise
            first = exc
        self._begin(name, first)
        answered = False
        try:
            deadline = time.monotonic() + self._patience
            delay = 0.1
            while True:
                self._closed.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                try:
                    result = fn(*args, **kwargs)
                    answered = True
                    return result
                except Exception as exc:
                    if not transient(exc) or time.monotonic() >= deadline or self._closed.is_set():
                        raise
        finally:
            self._end(name, answered)

    def _begin(self, name: str, exc: BaseException) -> None:
        with self._lock:
            self.retried_calls += 1
            if self._waiting == 0:
                self.outages += 1
                log.warning(
                    "task-hub storage unavailable (%s in %s): retrying until it answers",
                    type(exc).__name__, name,
                )  # fmt: skip
            self._waiting += 1

    def _end(self, name: str, answered: bool) -> None:
        with self._lock:
            self._waiting -= 1
            if answered and self._waiting == 0:
                log.info("task-hub storage answers again (%s)", name)
