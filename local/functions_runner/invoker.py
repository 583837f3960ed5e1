"""Calling app functions the way the Python worker does: ``def`` on a worker thread, ``async def`` on the one
event loop of the process (the Durable SDK keeps one aiohttp session bound to that loop).

Log records emitted while a function runs carry ``instance_id`` and ``function_name`` attributes; when the
app exposes a ``log_context(**fields)`` context manager (``dmf.logs``) the runner enters it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib
import logging
import socket
import ssl
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("local.functions_runner")

_scope: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("runner_scope", default={})  # noqa: B039
_factory_installed = False
SLOW_CALLBACK_SECONDS = 0.25


def _install_record_factory() -> None:
    """Stamp every log record with the invocation's instance id, whichever logger emits it."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scope = _scope.get()
        if scope:
            for k, v in scope.items():
                if not hasattr(record, k):
                    setattr(record, k, v)
        return record

    logging.setLogRecordFactory(factory)


def _find_app_log_context() -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module("dmf.logs"), "log_context", None)
    except ImportError:
        return None


def _adopt_sdk_session(loop: asyncio.AbstractEventLoop) -> None:
    """Drop the SDK's shared aiohttp session if another event loop created it.

    The Python worker has one loop per process; a test calling ``asyncio.run(client.start_new(...))``
    makes the SDK create its session on a short-lived loop, which would break every later client call
    made by the app's functions here. Runs on the runner's loop.
    """
    try:
        from azure.durable_functions.models.utils import http_utils
    except ImportError:
        return
    session = http_utils._client_session
    if session is not None and getattr(session, "_loop", loop) is not loop:
        http_utils._client_session = None


class Invoker:
    def __init__(self, app_log_context: Callable[..., Any] | bool | None = True) -> None:
        _install_record_factory()
        if app_log_context is True:
            app_log_context = _find_app_log_context()
        self._app_log_context = app_log_context or None
        self.loop = asyncio.new_event_loop()
        # Debug mode, as asyncio's docs advise for finding blocking calls: slow callbacks are logged.
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
        self.loop_guard = LoopGuard()
        self._thread = threading.Thread(target=self._run_loop, name="runner-event-loop", daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop_guard.guard(threading.get_ident())
        try:
            self.loop.run_forever()
        finally:
            self.loop_guard.release(threading.get_ident())

    @contextlib.contextmanager
    def scope(self, **fields: str | None) -> Iterator[None]:
        clean = {k: v for k, v in fields.items() if v is not None}
        token = _scope.set({**_scope.get(), **clean})
        try:
            if self._app_log_context and "instance_id" in clean:
                with self._app_log_context(instance_id=clean["instance_id"]):
                    yield
            else:
                yield
        finally:
            _scope.reset(token)

    def call(
        self, func: Callable[..., Any], kwargs: dict[str, Any], is_async: bool, **fields: str | None
    ) -> Any:
        """Run ``func(**kwargs)``: coroutines on the shared loop (blocking this thread until done)."""
        if is_async:

            async def scoped() -> Any:
                _adopt_sdk_session(self.loop)
                with self.scope(**fields):
                    return await func(**kwargs)

            return asyncio.run_coroutine_threadsafe(scoped(), self.loop).result()
        with self.scope(**fields):
            return func(**kwargs)

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine (e.g. a DurableOrchestrationClient call) on the runner's loop and wait for it."""

        async def adopted() -> Any:
            _adopt_sdk_session(self.loop)
            return await coro

        return asyncio.run_coroutine_threadsafe(adopted(), self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_running():

            async def _close_sdk_session() -> None:
                try:  # the SDK's shared aiohttp session lives on this loop: close it here
                    from azure.durable_functions.models.utils import http_utils

                    await http_utils._close_session()
                except Exception:  # noqa: S110 - best effort at shutdown
                    pass

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close_sdk_session(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


# ---------------------------------------------------------------------- blocking calls on the event loop
_BLOCKING_METHODS = ("connect", "send", "sendall", "recv", "recv_into")
_guarded: dict[int, LoopGuard] = {}  # loop thread ident -> its guard
_patched = False


@dataclass
class LoopBlock:
    function: str | None
    call: str
    where: str


class LoopGuard:
    """Records blocking socket I/O made on the worker's event-loop thread, with the function that made it.

    ``async def`` functions run on the worker's one event loop: a synchronous SDK call there (Table, Blob,
    F&O over requests) stalls every other invocation on that worker. asyncio's own sockets are
    non-blocking (timeout 0), so any socket call with a timeout, on the loop's thread, is such a stall.
    The loop also runs in debug mode, so callbacks slower than ``slow_callback_duration`` are logged.
    """

    def __init__(self) -> None:
        self.blocks: list[LoopBlock] = []

    def guard(self, thread_ident: int) -> None:
        _patch_sockets()
        _guarded[thread_ident] = self

    def release(self, thread_ident: int) -> None:
        _guarded.pop(thread_ident, None)

    def record(self, call: str) -> None:
        frames = [f for f in traceback.extract_stack()[:-3] if "/site-packages/" not in f.filename]
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        block = LoopBlock(_scope.get().get("function_name"), call, where)
        self.blocks.append(block)
        log.error("blocking %s on the event loop in %s (%s)", call, block.function, where)


def _patch_sockets() -> None:
    global _patched
    if _patched:
        return
    _patched = True
    for cls in (socket.socket, ssl.SSLSocket):
        for name in _BLOCKING_METHODS:
            original = cls.__dict__.get(name) or getattr(cls, name)
            setattr(cls, name, _guarded_method(original, f"{cls.__name__}.{name}"))


def _guarded_method(original: Callable[..., Any], label: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(sock: Any, *args: Any, **kwargs: Any) -> Any:
        guard = _guarded.get(threading.get_ident())
        if guard is not None and sock.gettimeout() != 0.0:
            guard.record(label)
        return original(sock, *args, **kwargs)

    return wrapper
