"""Blob and timer triggers, as the Functions host runs them.

Blob triggers (any ``source``: Event Grid in Azure, container scan here) fire once per blob version: a receipt
blob per function and ETag (``azure-webjobs-hosts/blobreceipts/...``, like the host's) is written after a
successful run, so restarts do not re-fire. A failing blob is retried on later scans up to 5 times, then
recorded under ``azure-webjobs-hosts/blobpoison/`` with a receipt so it stops. ``duplicate_deliveries``
delivers each new version more than once, concurrently, as Event Grid's at-least-once delivery may.

Timer triggers take NCRONTAB (six fields, seconds first) or TimeSpan (``hh:mm:ss``) schedules after
``%SETTING%`` resolution, keep the host's schedule status blob (``timers/<host>/<function>/status``) to
detect past-due runs, honour ``run_on_startup`` and can be fired on demand.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobPrefix, BlobServiceClient
from croniter import croniter

from dmf.redact import redact

from .app_loader import AppConfigurationError, FunctionInfo, resolve_settings
from .engine import Engine
from .history import iso, parse_iso
from .resilient import transient
from .worker import typed_value

log = logging.getLogger("local.functions_runner")

HOSTS_CONTAINER = "azure-webjobs-hosts"
MAX_BLOB_ATTEMPTS = 5
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


def _blob_pattern(path: str) -> tuple[str, str, re.Pattern[str]]:
    """``container/prefix{name}.csv`` → (container, list prefix, regex over the blob name)."""
    container, _, blob_part = path.partition("/")
    if "{" in container:
        raise AppConfigurationError(f"blob trigger path {path!r}: the container cannot be a pattern")
    prefix = blob_part.split("{", 1)[0]
    regex = ""
    for piece in re.split(r"(\{[^}]+\})", blob_part):
        if piece.startswith("{") and piece.endswith("}"):
            regex += f"(?P<{piece[1:-1]}>.+)"
        else:
            regex += re.escape(piece)
    return container, prefix, re.compile(f"^{regex}$")


def _indexing_error(errors: dict[str, str], name: str, exc: Exception) -> None:
    """As the host does: a function whose trigger cannot be resolved is left out, the others still run."""
    errors[name] = str(exc)
    log.error("Error indexing function '%s': %s. The function will not run.", name, exc)


def _connection_string(name: str | None) -> str:
    name = name or "AzureWebJobsStorage"
    value = os.environ.get(name)
    if not value:
        raise AppConfigurationError(
            f"storage connection setting {name!r} is not set (locally it must hold a connection string)"
        )
    return value


class BlobTriggers:
    def __init__(
        self,
        engine: Engine,
        functions: dict[str, FunctionInfo],
        invoke: Callable[..., Any],
        host_storage: BlobServiceClient,
        host_id: str,
        duplicate_deliveries: int = 0,
        max_parallel: int = 4,
    ) -> None:
        self.engine = engine
        self.invoke = invoke
        self.host_id = host_id
        self.duplicate_deliveries = duplicate_deliveries
        self._hosts = host_storage.get_container_client(HOSTS_CONTAINER)
        self.watches: list[dict[str, Any]] = []
        self.function_errors: dict[str, str] = {}
        for fi in functions.values():
            if fi.trigger_type != "blobTrigger":
                continue
            try:
                path = resolve_settings(fi.trigger["path"])
                container, prefix, regex = _blob_pattern(path)
                conn_name = fi.trigger.get("connection") or "AzureWebJobsStorage"
                conn = _connection_string(conn_name)
                svc = BlobServiceClient.from_connection_string(conn)
                # Listings are polls: a failed one is simply tried at the next scan, not retried for minutes.
                lister = BlobServiceClient.from_connection_string(conn, retry_total=0)
            except AppConfigurationError as exc:
                _indexing_error(self.function_errors, fi.name, exc)
                continue
            self.watches.append({
                "fi": fi, "container": container, "prefix": prefix, "regex": regex, "connection": conn_name,
                "client": svc.get_container_client(container), "lister": lister.get_container_client(container),
            })  # fmt: skip
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str, str]] = set()  # (function, blob, etag) with a receipt
        self._inflight: set[tuple[str, str, str]] = set()
        self._failures: dict[tuple[str, str, str], int] = {}
        self._pool = ThreadPoolExecutor(max(1, max_parallel), thread_name_prefix="blob-trigger")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.deliveries = 0
        self.unlistable: set[tuple[str, str]] = set()  # (container, folder) Azurite failed to list

    def start(self, poll_interval: float) -> None:
        if not self.watches:
            return
        try:
            self._hosts.create_container()
        except ResourceExistsError:
            pass
        self._thread = threading.Thread(
            target=self._loop, args=(poll_interval,), name="blob-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception as exc:
                if transient(exc):  # storage away: the next scan tries again (no traceback per scan)
                    log.warning("blob trigger scan failed: storage unavailable (%s)", type(exc).__name__)
                else:
                    log.exception("blob trigger scan failed")
            self._stop.wait(interval)

    def _receipt_name(self, fi: FunctionInfo, container: str, blob: str, etag: str) -> str:
        return (
            f"blobreceipts/{self.host_id}/Host.Functions.{fi.name}/{etag.strip(chr(34))}/{container}/{blob}"
        )

    def scan(self) -> int:
        """One pass over every watched container; returns how many deliveries it started."""
        started = 0
        for w in self.watches:
            fi, container = w["fi"], w["container"]
            try:
                blobs = self._list(w)
            except ResourceNotFoundError:
                continue
            self._forget_gone(fi.name, {(fi.name, b.name, b.etag) for b in blobs})
            for b in blobs:
                if not w["regex"].match(b.name):
                    continue
                key = (fi.name, b.name, b.etag)
                with self._lock:
                    if key in self._seen or key in self._inflight:
                        continue
                receipt = self._hosts.get_blob_client(self._receipt_name(fi, container, b.name, b.etag))
                if receipt.exists():
                    with self._lock:
                        self._seen.add(key)
                    continue
                with self._lock:
                    if key in self._seen or key in self._inflight:
                        continue
                    self._inflight.add(key)
                copies = 1 + self.duplicate_deliveries
                self.engine.add_busy(copies)
                for _ in range(copies):
                    self._pool.submit(self._deliver, w, b.name, b.etag, key)
                started += copies
        return started

    def _forget_gone(self, function: str, listed: set[tuple[str, str, str]]) -> None:
        """``_seen`` only saves a receipt lookup: keep it to what is still in the container (the app moves
        handled drops out), so a long-lived runner does not grow with every blob it ever delivered."""
        with self._lock:
            self._seen -= {k for k in self._seen if k[0] == function and k not in listed}

    def _list(self, w: dict[str, Any]) -> list[Any]:
        """The watched blobs. Azurite answers 500 to a listing that would hold a name with control
        characters: then walk folder by folder, so only the folder holding that name goes unlisted."""
        try:
            return list(w["lister"].list_blobs(name_starts_with=w["prefix"] or None))
        except HttpResponseError as exc:
            if (exc.status_code or 0) < 500:
                raise
        return list(self._walk(w, w["prefix"] or ""))

    def _walk(self, w: dict[str, Any], prefix: str) -> Iterator[Any]:
        try:
            items = list(w["lister"].walk_blobs(name_starts_with=prefix or None, delimiter="/"))
        except HttpResponseError as exc:
            if (exc.status_code or 0) < 500:
                raise
            if (w["container"], prefix) not in self.unlistable:
                self.unlistable.add((w["container"], prefix))
                log.error(
                    "cannot list %s/%s (storage answered %s): a blob name there likely holds control "
                    "characters, which Azurite cannot list. Blobs in that folder wait until it is renamed "
                    "or deleted; other folders are delivered.",
                    w["container"], redact(repr(prefix)), exc.status_code,
                )  # fmt: skip
            return
        for item in items:
            if isinstance(item, BlobPrefix):
                yield from self._walk(w, item.name)
            else:
                yield item

    def _deliver(self, w: dict[str, Any], blob_name: str, etag: str, key: tuple[str, str, str]) -> None:
        fi, container = w["fi"], w["container"]
        try:
            ok = self.fire(fi.name, blob_name, _watch=w)
            with self._lock:
                if ok:
                    self._seen.add(key)
                else:
                    n = self._failures[key] = self._failures.get(key, 0) + 1
                    if n >= MAX_BLOB_ATTEMPTS:
                        self._poison(fi, container, blob_name, etag)
                        self._seen.add(key)
                self._inflight.discard(key)
            if ok or key in self._seen:
                receipt = self._hosts.get_blob_client(self._receipt_name(fi, container, blob_name, etag))
                receipt.upload_blob(b"", overwrite=True)
        except Exception:
            log.exception("blob trigger delivery failed")
            with self._lock:
                self._inflight.discard(key)
        finally:
            self.engine.add_busy(-1)

    def _poison(self, fi: FunctionInfo, container: str, blob_name: str, etag: str) -> None:
        log.error(
            "blob %s/%s failed %d times in %s: moved to poison",
            container,
            blob_name,
            MAX_BLOB_ATTEMPTS,
            fi.name,
        )
        body = {"FunctionId": f"Host.Functions.{fi.name}", "BlobType": "BlockBlob",
                "ContainerName": container, "BlobName": blob_name, "ETag": etag}  # fmt: skip
        name = f"blobpoison/{self.host_id}/{fi.name}/{etag.strip(chr(34))}/{container}/{blob_name}"
        self._hosts.get_blob_client(name).upload_blob(json.dumps(body).encode(), overwrite=True)

    def watch_for(self, function_name: str) -> dict[str, Any]:
        for w in self.watches:
            if w["fi"].name == function_name:
                return w
        raise LookupError(f"no blob-triggered function named {function_name!r}")

    def fire(self, function_name: str, blob_name: str, _watch: dict[str, Any] | None = None) -> bool:
        """Deliver one blob to the function now (receipts ignored); True when it succeeded."""
        w = _watch or self.watch_for(function_name)
        fi = w["fi"]
        self.deliveries += 1
        try:
            data, metadata = self._bind(fi, w, blob_name)
            self.invoke(fi, data, metadata)
            return True
        except Exception as exc:
            log.error(redact(f"blob trigger {fi.name} failed for {w['container']}/{blob_name}: {exc}"))
            return False

    def _bind(self, fi: FunctionInfo, w: dict[str, Any], blob_name: str) -> tuple[Any, dict[str, Any]]:
        """The trigger's typed data and metadata as the host sends them to the worker.

        SDK-typed parameters (deferred bindings, e.g. ``BlobClient``) get model binding data naming the
        connection, container and blob; other types get the content with the trigger metadata.
        """
        worker = self.engine.worker
        binding = worker.info(fi.name).input_types[fi.trigger["name"]]
        if binding.deferred_bindings_enabled:
            content = {"Connection": w["connection"], "ContainerName": w["container"], "BlobName": blob_name}
            return worker.model_binding_data("AzureStorageBlobs", content), {}
        bc = w["client"].get_blob_client(blob_name)
        props = bc.get_blob_properties()
        data = bc.download_blob(etag=props.etag, match_condition=MatchConditions.IfNotModified).readall()
        metadata = {
            "BlobTrigger": worker.string_data(f"{w['container']}/{blob_name}"),
            "Uri": worker.string_data(bc.url),
            "Properties": worker.json_data(json.dumps({
                "ETag": props.etag, "ContentType": props.content_settings.content_type, "Length": len(data),
            })),
            "Metadata": worker.json_data(json.dumps(dict(props.metadata or {}))),
        }  # fmt: skip
        return worker.bytes_data(data), metadata


class TimerTriggers:
    def __init__(
        self,
        engine: Engine,
        functions: dict[str, FunctionInfo],
        invoke: Callable[..., Any],
        host_storage: BlobServiceClient | None,
        host_id: str,
    ) -> None:
        self.engine = engine
        self.invoke = invoke
        self.host_id = host_id
        self._hosts = host_storage.get_container_client(HOSTS_CONTAINER) if host_storage else None
        self.schedules: dict[str, dict[str, Any]] = {}
        self.function_errors: dict[str, str] = {}
        for fi in functions.values():
            if fi.trigger_type == "timerTrigger":
                try:
                    expr = resolve_settings(fi.trigger["schedule"])
                    self.schedules[fi.name] = {"fi": fi, "expr": expr, "timer": None}
                    self.next_after(fi.name, engine.clock.now())  # validates the expression at start-up
                except (AppConfigurationError, ValueError, KeyError) as exc:
                    self.schedules.pop(fi.name, None)
                    _indexing_error(self.function_errors, fi.name, exc)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="timer-trigger")
        self._stopped = False
        self.fired: dict[str, int] = {}

    def next_after(self, name: str, when: datetime) -> datetime:
        expr = self.schedules[name]["expr"]
        m = _TIMESPAN.match(expr)
        if m:
            d, h, mi, s = (int(x or 0) for x in m.groups())
            return when + timedelta(days=d, hours=h, minutes=mi, seconds=s)
        fields = expr.split()
        if len(fields) not in (5, 6):
            raise AppConfigurationError(f"timer schedule {expr!r} of {name} is not NCRONTAB or a TimeSpan")
        return croniter(expr, when, second_at_beginning=len(fields) == 6).get_next(datetime)

    def _status_blob(self, name: str):
        assert self._hosts is not None
        return self._hosts.get_blob_client(f"timers/{self.host_id}/Host.Functions.{name}/status")

    def _read_status(self, name: str) -> dict[str, Any] | None:
        if self._hosts is None:
            return None
        try:
            return json.loads(self._status_blob(name).download_blob().readall())
        except (ResourceNotFoundError, ValueError):
            return None

    def _write_status(self, name: str, last: datetime, nxt: datetime) -> None:
        if self._hosts is None:
            return
        body = {"Last": iso(last), "Next": iso(nxt), "LastUpdated": iso(self.engine.clock.now())}
        try:
            self._status_blob(name).upload_blob(json.dumps(body).encode(), overwrite=True)
        except ResourceNotFoundError:
            self._hosts.create_container()
            self._status_blob(name).upload_blob(json.dumps(body).encode(), overwrite=True)

    def start(self) -> None:
        if self._hosts is not None and self.schedules:
            try:
                self._hosts.create_container()
            except ResourceExistsError:
                pass
        now = self.engine.clock.now()
        for name, s in self.schedules.items():
            # useMonitor=False: the host keeps no schedule status, so a missed run is never "past due"
            status = self._read_status(name) if s["fi"].trigger.get("useMonitor", True) else None
            past_due = bool(status and parse_iso(status["Next"]) < now)
            if s["fi"].trigger.get("runOnStartup") or past_due:
                self._submit(name, past_due=past_due, scheduled=now)
            self._arm(name, self.next_after(name, now))

    def stop(self) -> None:
        self._stopped = True
        for s in self.schedules.values():
            if s["timer"] is not None:
                self.engine.cancel_timer(s["timer"])
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _arm(self, name: str, when: datetime) -> None:
        if self._stopped:
            return
        s = self.schedules[name]
        s["next"] = when

        def due() -> None:
            self._submit(name, past_due=False, scheduled=when)
            self._arm(name, self.next_after(name, when))

        s["timer"] = self.engine.add_timer(when, due, kind="trigger")

    def _submit(self, name: str, past_due: bool, scheduled: datetime) -> None:
        self.engine.add_busy(1)

        def go() -> None:
            try:
                self.fire(name, past_due=past_due, scheduled=scheduled)
            except Exception:  # noqa: S110 - logged by fire(); a failing run does not stop the schedule
                pass
            finally:
                self.engine.add_busy(-1)

        self._pool.submit(go)

    def fire(self, name: str, past_due: bool = False, scheduled: datetime | None = None) -> Any:
        """Run the timer function now; returns what it returned (exceptions propagate to the caller)."""
        s = self.schedules.get(name)
        if s is None:
            raise LookupError(f"no timer-triggered function named {name!r}")
        now = scheduled or self.engine.clock.now()
        status = self._read_status(name) or {}
        worker = self.engine.worker
        req = worker.json_data(json.dumps({
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {"Last": status.get("Last"), "Next": iso(s.get("next", now)), "LastUpdated": iso(now)},
            "IsPastDue": past_due,
        }))  # fmt: skip
        self.fired[name] = self.fired.get(name, 0) + 1
        try:
            return typed_value(self.invoke(s["fi"], req))
        except Exception as exc:
            log.error(redact(f"timer trigger {name} failed: {exc}"))
            raise
        finally:
            self._write_status(name, now, self.next_after(name, now))
