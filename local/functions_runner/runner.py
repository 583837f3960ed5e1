"""``LocalRunner``: the Functions host and the Durable extension, played locally for one app object."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from azure.durable_functions import DurableOrchestrationClient
from azure.storage.blob import BlobServiceClient

from .app_loader import (
    DurableSettings,
    FunctionInfo,
    get_functions,
    index_functions,
    load_app,
    load_host_json,
)
from .clock import Clock, RealClock, VirtualClock
from .engine import TERMINAL, Engine
from .http_server import RunnerHttpServer, status_json
from .invoker import Invoker
from .keys import HostKeys
from .resilient import ResilientStore
from .store import MemoryStore, Store, TableStore
from .triggers import BlobTriggers, TimerTriggers
from .worker import Worker, typed_value

log = logging.getLogger("local.functions_runner")


class LocalRunner:
    """Runs an app's orchestrations, activities, client functions and triggers against real storage.

    ``settings`` are app settings (``Values``) put into ``os.environ`` before the app is imported (and
    restored by ``stop()``). Durable state lives in ``AzureWebJobsStorage`` (or ``storage_connection_string``)
    Table Storage unless ``in_memory=True``.
    """

    def __init__(
        self,
        app: Any = None,
        app_module: str = "function_app",
        settings: dict[str, str] | None = None,
        storage_connection_string: str | None = None,
        clock: Clock | None = None,
        host_json: Path | str | None = Path("host.json"),
        task_hub: str | None = None,
        in_memory: bool = False,
        http_port: int = 0,
        blob_poll_interval: float = 1.0,
        duplicate_blob_deliveries: int = 0,
        max_concurrent_activities: int | None = None,
        max_concurrent_orchestrators: int | None = None,
        app_log_context: Any = True,
        host_keys: HostKeys | None = None,
    ) -> None:
        self._settings = dict(settings or {})
        self._saved_env: dict[str, str | None] = {}
        self._app, self._app_module = app, app_module
        self.clock: Clock = clock or RealClock()
        self._host_json_path = Path(host_json) if host_json else None
        self._task_hub = task_hub
        self._conn = storage_connection_string
        self._in_memory = in_memory
        self._http_port = http_port
        self._blob_poll_interval = blob_poll_interval
        self._duplicates = duplicate_blob_deliveries
        self._max_act, self._max_orch = max_concurrent_activities, max_concurrent_orchestrators
        self._app_log_context = app_log_context
        self.keys = host_keys or HostKeys()
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalRunner:
        try:
            return self._start()
        except BaseException:
            self._started = True  # let stop() undo whatever did start, and restore the environment
            self._safe_stop()
            raise

    def _safe_stop(self) -> None:
        for part in ("blobs", "timers", "engine", "http", "invoker"):
            obj = getattr(self, part, None)
            if obj is None:
                continue
            try:
                obj.close() if part == "invoker" else obj.stop()
            except Exception:  # noqa: S112 - best effort: the start-up error is what matters
                continue
        self._started = False
        self._restore_env()

    def _restore_env(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env.clear()

    def _start(self) -> LocalRunner:
        for k, v in self._settings.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = str(v)
        if self._conn and "AzureWebJobsStorage" not in self._settings:
            self._saved_env.setdefault("AzureWebJobsStorage", os.environ.get("AzureWebJobsStorage"))
            os.environ["AzureWebJobsStorage"] = self._conn
        self.app = load_app(self._app, self._app_module)
        # The real worker indexes first: what it refuses, the host never loads (WorkerIndexError).
        self.worker = Worker(get_functions(self.app), directory=_app_directory(self._app_module))
        self.functions: dict[str, FunctionInfo] = index_functions(self.app)
        host = load_host_json(self._host_json_path)
        self.durable = DurableSettings.from_host_json(host)
        if self._task_hub:
            self.durable.hub_name = self._task_hub
        if self._max_act:
            self.durable.max_activities = self._max_act
        if self._max_orch:
            self.durable.max_orchestrators = self._max_orch
        conn = self._conn or os.environ.get(self.durable.storage_connection_name)
        # Task-hub calls ride out a storage outage (see resilient.py), as the Durable extension's do.
        self.store: Store = (
            MemoryStore()
            if self._in_memory or not conn
            else ResilientStore(TableStore(conn, self.durable.hub_name))  # type: ignore[assignment]
        )
        self.invoker = Invoker(self._app_log_context)
        self.engine = Engine(self.functions, self.store, self.clock, self.invoker, self.durable)
        self.engine.worker = self.worker
        self.http = RunnerHttpServer(
            self.engine,
            self.functions,
            self._invoke_http,
            self.durable.route_prefix,
            self._http_port,
            self.keys,
        )
        self._client_json = self.http.client_binding(self.durable.hub_name)
        self.engine.client_binding_json = self._client_json
        host_blobs = BlobServiceClient.from_connection_string(conn) if conn else None
        host_id = f"localrunner-{self.durable.hub_name.lower()}"
        blob_parallel = int(host.get("extensions", {}).get("blobs", {}).get("maxDegreeOfParallelism", 4))
        self.blobs = (
            BlobTriggers(self.engine, self.functions, self._invoke, host_blobs, host_id, self._duplicates,
                         blob_parallel * (1 + self._duplicates))
            if host_blobs else None
        )  # fmt: skip
        if host_blobs is None and any(f.trigger_type == "blobTrigger" for f in self.functions.values()):
            raise RuntimeError(
                "blob triggers need storage: pass storage_connection_string or AzureWebJobsStorage"
            )
        self.timers = TimerTriggers(self.engine, self.functions, self._invoke, host_blobs, host_id)
        self.function_errors = {
            **(self.blobs.function_errors if self.blobs else {}),
            **self.timers.function_errors,
        }
        self.http.start()
        self.engine.start()
        self.timers.start()
        if self.blobs:
            self.blobs.start(self._blob_poll_interval)
        self._started = True
        log.info(
            "local runner started: %d functions, task hub %s, HTTP on %s",
            len(self.functions), self.durable.hub_name, self.http.base_url,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.blobs:
            self.blobs.stop()
        self.timers.stop()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()  # task-hub calls still waiting for storage give up
        self.engine.stop()
        self.http.stop()
        self.invoker.close()
        self._restore_env()

    def __enter__(self) -> LocalRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ invoking functions
    def _invoke(
        self, fi: FunctionInfo, trigger_data: Any, trigger_metadata: dict[str, Any] | None = None
    ) -> Any:
        """Invoke as the worker does: typed data in, the worker's converters, typed data (or None) out."""
        inputs = {fi.trigger["name"]: trigger_data}
        for b in fi.bindings:
            if b["type"] == "durableClient":
                inputs[b["name"]] = self.worker.string_data(self._client_json)

        def call(f: Any, kwargs: dict[str, Any], is_async: bool) -> Any:
            return self.invoker.call(f, kwargs, is_async, function_name=fi.name)

        return self.worker.invoke(fi.name, inputs, call, trigger_metadata)

    def _invoke_http(self, fi: FunctionInfo, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        http = typed_value(self._invoke(fi, self.worker.http_data(**request)))
        if http is None:
            return 204, {}, b""
        body = typed_value(http.body) if http.HasField("body") else b""
        if isinstance(body, str):
            body = body.encode()
        return int(http.status_code or 200), dict(http.headers), body or b""

    # ------------------------------------------------------------------ public API
    @property
    def loop_blocks(self) -> list[Any]:
        """Blocking socket calls that ``async def`` functions made on the event loop (should be none)."""
        return list(self.invoker.loop_guard.blocks)

    @property
    def function_key(self) -> str:
        """The key FUNCTION-level routes require (``x-functions-key`` header or ``?code=``)."""
        return self.keys.function_key

    @property
    def http_base_url(self) -> str:
        return self.http.base_url

    @property
    def task_hub(self) -> str:
        return self.durable.hub_name

    def client_binding_json(self) -> str:
        return self._client_json

    def client(self) -> DurableOrchestrationClient:
        """The SDK's own client, bound to this runner. Await its methods via ``runner.run(...)``."""
        return DurableOrchestrationClient(self._client_json)

    def run(self, coro: Any, timeout: float | None = 60) -> Any:
        """Await a coroutine on the runner's event loop (the SDK's HTTP session lives there)."""
        return self.invoker.run(coro, timeout)

    def start_new(self, name: str, instance_id: str | None = None, client_input: Any = None) -> str:
        return self.run(self.client().start_new(name, instance_id, client_input))

    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        self.run(self.client().raise_event(instance_id, event_name, data))

    def terminate(self, instance_id: str, reason: str = "") -> None:
        self.run(self.client().terminate(instance_id, reason))

    def get_status(self, instance_id: str) -> dict[str, Any] | None:
        row = self.store.get_instance(instance_id)
        return status_json(row) if row else None

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        row = self.store.get_instance(instance_id)
        return self.store.load_history(instance_id, row["execution_id"]) if row else []

    def wait_for_instance(self, instance_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until the instance reaches a terminal state; returns its status JSON (as get_status)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_status(instance_id)
            if status and status["runtimeStatus"] in TERMINAL:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"instance {instance_id} not finished after {timeout}s: {status}")
            with self.engine.cond:
                self.engine.cond.wait(min(left, 0.05))

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        """Until nothing runs or waits to run and no orchestration timer is due (virtual time advances)."""
        deadline = time.monotonic() + timeout
        while True:
            # Scan for new blobs only once the engine is quiet: while it works we would not return anyway,
            # and a listing every 20 ms is most of what Azurite does in a long run (the watcher scans too).
            if self._quiet() and not (self.blobs and self.blobs.scan()):
                time.sleep(0.01)
                if self._quiet() and not (self.blobs and self.blobs.scan()):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"runner not idle after {timeout}s: busy={self.engine.busy}, "
                    f"timers={self.engine.pending_orchestration_timers()}"
                )
            with self.engine.cond:
                self.engine.cond.wait(0.02)

    def _quiet(self) -> bool:
        eng = self.engine
        with eng.cond:
            if eng.busy:
                return False
            if isinstance(self.clock, VirtualClock):
                return eng.pending_orchestration_timers() == 0
            due = eng.next_timer_due("orch")
            return due is None or due > self.clock.now()

    def advance(self, delta: timedelta, timeout: float = 30.0) -> datetime:
        """Virtual clock only: move time forward by ``delta``, firing everything due on the way, in order."""
        if not isinstance(self.clock, VirtualClock):
            raise TypeError("advance() needs a VirtualClock")
        target = self.clock.now() + delta
        while True:
            self.wait_until_idle(timeout)
            nxt = self.engine.next_timer_due()
            if nxt is None or nxt > target:
                break
            self.clock.advance_to(nxt)
            with self.engine.cond:
                self.engine.cond.notify_all()
            time.sleep(0.005)
        self.clock.advance_to(target)
        self.wait_until_idle(timeout)
        return self.clock.now()

    @contextlib.contextmanager
    def hold_clock(self) -> Iterator[None]:
        """Keep the virtual clock still inside the block (e.g. to raise an event before a timeout fires)."""
        self.engine.add_clock_hold(1)
        try:
            yield
        finally:
            self.engine.add_clock_hold(-1)

    def fire_timer(self, function_name: str, past_due: bool = False) -> Any:
        """Run a timer-triggered function now (on demand), as the admin API of the host would."""
        self.engine.add_busy(1)
        try:
            return self.timers.fire(function_name, past_due=past_due)
        finally:
            self.engine.add_busy(-1)

    def deliver_blob(self, function_name: str, blob_name: str) -> bool:
        """Deliver one blob to a blob-triggered function now (a redelivery: receipts are not consulted)."""
        if self.blobs is None:
            raise RuntimeError("no blob triggers")
        self.engine.add_busy(1)
        try:
            return self.blobs.fire(function_name, blob_name)
        finally:
            self.engine.add_busy(-1)

    def call_function(self, function_name: str, trigger_value: Any) -> Any:
        """Invoke any function directly: ``trigger_value`` is typed data, or a value sent as JSON."""
        fi = self.functions[function_name]
        data = trigger_value
        if not hasattr(trigger_value, "WhichOneof"):
            data = self.worker.json_data(json.dumps(trigger_value))
        return typed_value(self._invoke(fi, data))


def _app_directory(app_module: str) -> str:
    """The function app directory the worker reports to the host: where the app's module lives."""
    import importlib.util

    spec = importlib.util.find_spec(app_module)
    origin = getattr(spec, "origin", None) if spec else None
    return str(Path(origin).parent) if origin else os.getcwd()
