"""Calling app functions the way the Python worker does: ``def`` on a worker thread, ``async def`` on the one
event loop of the process (the Durable SDK keeps one aiohttp session bound to that loop).

Log records emitted while a function runs carry ``instance_id`` and ``function_name`` attributes; when the
app exposes a ``log_context(**fields)`` context manager (``dmf.logs``) the runner enters it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("local.functions_runner")

_scope: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("runner_scope", default={})  # noqa: B039
_factory_installed = False


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
        self._thread = threading.Thread(target=self._run_loop, name="runner-event-loop", daemon=True)
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

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


class FunctionContext:
    """The ``context`` argument the worker passes to functions that declare one."""

    def __init__(self, function_name: str, invocation_id: str | None = None) -> None:
        self.invocation_id = invocation_id or str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = "."
        self.trace_context = None
        self.retry_context = None
        self.thread_local_storage = threading.local()
