"""Recurring-export drains: dequeue → stream into the archive → verify → ack → outcome row, per message.

Safety rules, and why:
- A worker holds **one** dequeued message at a time and finishes it (ack included) before dequeuing the
  next; a drain runs a few workers, so at most ``workers`` messages are ever in flight. Dequeuing a pile
  first and acking later is how other tools end up with every ack failing after the visibility window.
- The archive path is claimed in an index (ledger table, partition ``outbound-archive``, one row per
  activity + correlation id) before any byte is written, and marked archived after the blob is committed
  and verified. A redelivered message (``LastDequeueDateTime`` set, or an id already in the index) is
  acked without a second archive; a crash between commit and index update is recognised from the blob's
  own metadata.
- Nothing is acked before the archive is committed and its size and MD5 match what was downloaded. A
  failed archive leaves the message un-acked: F&O offers it again after its visibility timeout.
- Budgets (count and time) are checked before each dequeue, never after, so a run never takes a message
  it has no time left to finish.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from azure.storage.blob import BlobClient

from dmf.fno.clients import recurring_api
from dmf.fno.errors import FnoError
from dmf.fno.models import DequeuedMessage
from dmf.fno.recurring_api import RecurringApi
from dmf.logs import log_context, ops_event
from dmf.pipeline.services import Services
from dmf.settings import RecurringExport
from dmf.storage import clients
from dmf.storage.outcomes import safe_key
from dmf.storage.transfer import stream_to_blob

log = logging.getLogger(__name__)

INDEX_PARTITION = "outbound-archive"
DEFAULT_WORKERS = 4  # messages in flight per drain; each finishes (ack included) before the next dequeue
BATCH_MESSAGES = 100  # per activity call: keeps one activity well under the function timeout
BATCH_SECONDS = 120.0
ACK_ATTEMPTS = 3  # on top of the HTTP layer's own retries (ack is idempotent)
ACK_PAUSE_SECONDS = 0.5
SMALL_MESSAGE_BYTES = 4 * 2**20  # up to this, one Put Blob; larger messages are staged in blocks

_EXTENSIONS = {
    "application/zip": ".zip",
    "application/x-zip-compressed": ".zip",
    "text/csv": ".csv",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/json": ".json",
    "text/plain": ".txt",
}


def drain_run_id(export_name: str, fired_at: datetime) -> str:
    """The id of one drain run: outcome summary row key and ledger run-guard owner."""
    t = fired_at.astimezone(UTC)
    return f"drain-{safe_name(export_name)}-{t:%Y%m%dT%H%M%S}{t.microsecond // 1000:03d}"


def drain_instance_id(export_name: str) -> str:
    """The singleton orchestration instance id of an export's drain."""
    return f"drain-{safe_name(export_name)}"


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "x"


def message_row(run_id: str, correlation_id: str) -> str:
    # Keyed by correlation id (not a counter), so a retried batch rewrites the same rows.
    return f"{run_id}~{correlation_id}"


def archive_stem(export_name: str, day: str, correlation_id: str) -> str:
    """``<export>/<yyyy>/<MM>/<dd>/<correlation id>`` inside the archive container (extension added later)."""
    return f"{safe_name(export_name)}/{day[:4]}/{day[4:6]}/{day[6:8]}/{correlation_id}"


def archive_path(export_name: str, day: str, correlation_id: str, ext: str) -> str:
    return archive_stem(export_name, day, correlation_id) + ext


def _ext_for(content_type: str | None, head: bytes = b"") -> str:
    """From the content type, else from the first bytes (F&O serves everything as octet-stream)."""
    ext = _EXTENSIONS.get((content_type or "").split(";")[0].strip().lower())
    if ext:
        return ext
    if head.startswith(b"PK\x03\x04"):
        return ".zip"
    if head.lstrip(b"\xef\xbb\xbf\xff\xfe \r\n\t").startswith(b"<"):
        return ".xml"
    return ".bin"


# -- the archive index ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    path: str  # the blob name once archived; the claimed name without extension before
    archived: bool
    size: int | None = None
    md5: str | None = None
    fresh: bool = False  # claimed just now (no earlier attempt)


class ArchiveIndex:
    """Which recurring-export messages have an archive, keyed by activity and correlation id."""

    def __init__(self, table: TableClient) -> None:
        self.table = table

    @staticmethod
    def _key(activity_id: str, correlation_id: str) -> str:
        return safe_key(f"{activity_id.strip('{} ').lower()}|{correlation_id.lower()}")

    def get(self, activity_id: str, correlation_id: str) -> IndexEntry | None:
        try:
            e = self.table.get_entity(INDEX_PARTITION, self._key(activity_id, correlation_id))
        except ResourceNotFoundError:
            return None
        return IndexEntry(e["Path"], bool(e.get("Archived")), e.get("Size"), e.get("Md5"))

    def claim(self, activity_id: str, correlation_id: str, path: str, run_id: str) -> IndexEntry:
        """Record the path this message will be archived at; an earlier claim (and its path) wins."""
        entity = {
            "PartitionKey": INDEX_PARTITION,
            "RowKey": self._key(activity_id, correlation_id),
            "Path": path,
            "Archived": False,
            "ClaimedBy": run_id,
        }
        try:
            self.table.create_entity(entity)
            return IndexEntry(path, False, fresh=True)
        except ResourceExistsError:
            found = self.get(activity_id, correlation_id)
            assert found is not None
            return found

    def mark_archived(
        self, activity_id: str, correlation_id: str, path: str, size: int, md5: str | None
    ) -> None:
        self.table.upsert_entity(
            {
                "PartitionKey": INDEX_PARTITION,
                "RowKey": self._key(activity_id, correlation_id),
                "Path": path,
                "Archived": True,
                "Size": size,
                "Md5": md5,
                "ArchivedAt": datetime.now(UTC),
            },
            mode=UpdateMode.MERGE,
        )


def archive_index(svc: Services) -> ArchiveIndex:
    return ArchiveIndex(clients.table(svc.settings, svc.settings.ledger_table))


# -- one drain batch ----------------------------------------------------------------------------------


@dataclass
class _Budget:
    """Shared by a batch's workers: a message slot is reserved before each dequeue."""

    max_messages: int
    deadline: float  # time.monotonic()
    taken: int = 0
    empty: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reserve(self) -> bool:
        with self.lock:
            if self.empty or self.taken >= self.max_messages or time.monotonic() >= self.deadline:
                return False
            self.taken += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.taken -= 1

    def mark_empty(self) -> None:
        with self.lock:
            self.empty = True


class ArchiveMismatch(RuntimeError):
    """The committed archive does not match what was downloaded."""


def drain_batch(svc: Services, req: dict[str, Any]) -> dict[str, Any]:
    """Drain up to ``max_messages`` messages within ``max_seconds``; one outcome row per message.

    ``req``: ``export`` (RecurringExport dict), ``run_id``, ``day``, ``max_messages``, ``max_seconds``,
    optional ``workers``. Returns counts, whether the queue answered empty, and failures (small).
    Expected failures never raise: they are counted and recorded, so the orchestrator just loops.
    """
    export = RecurringExport.model_validate(req["export"])
    workers = max(1, int(req.get("workers") or DEFAULT_WORKERS))
    budget = _Budget(int(req["max_messages"]), time.monotonic() + float(req["max_seconds"]))
    counts = {"archived": 0, "duplicate": 0, "failed": 0, "not_acked": 0}
    failures: list[dict[str, str]] = []
    errors: list[str] = []
    lock = threading.Lock()
    try:
        api = recurring_api(svc.settings, export.environment)
    except ValueError as exc:  # on-premises environment: the API does not exist there
        return {**counts, "taken": 0, "empty": True, "failures": [], "errors": [str(exc)]}
    index = archive_index(svc)

    def worker() -> None:
        while budget.reserve():
            try:
                msg = api.dequeue(export.activity_id)
            except FnoError as exc:
                budget.release()
                with lock:
                    errors.append(f"dequeue failed: {exc}")
                budget.mark_empty()  # stop this batch; the orchestrator decides whether to go on
                return
            if msg is None:
                budget.release()
                budget.mark_empty()
                return
            try:
                res = process_message(svc, api, index, export, msg, req["run_id"], req["day"])
            except Exception as exc:  # a bug or an outage mid-message: not acked, F&O offers it again
                log.exception("message %s: unexpected failure", msg.correlation_id)
                res = {"status_key": "failed", "reason": f"unexpected {type(exc).__name__}: {exc}"}
            with lock:
                counts[res["status_key"]] += 1
                if res["status_key"] in ("failed", "not_acked"):
                    failures.append({"correlation_id": msg.correlation_id, "reason": res["reason"][:300]})

    with log_context(instance_id=req["run_id"]):
        if workers == 1:
            worker()
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="drain") as pool:
                # Each thread runs in a copy of this context, so log lines keep the run id.
                futures = [pool.submit(contextvars.copy_context().run, worker) for _ in range(workers)]
                for f in futures:
                    f.result()
    return {
        **counts,
        "taken": budget.taken,
        "empty": budget.empty and not errors,
        "failures": failures[:20],
        "errors": errors[:5],
    }


def process_message(
    svc: Services,
    api: RecurringApi,
    index: ArchiveIndex,
    export: RecurringExport,
    msg: DequeuedMessage,
    run_id: str,
    day: str,
) -> dict[str, Any]:
    """Archive (once) and ack one dequeued message, then write its outcome row."""
    cid = msg.correlation_id
    container = svc.settings.archive_container
    row: dict[str, Any] = {
        "Kind": "message",
        "Environment": export.environment,
        "Export": export.name,
        "ActivityId": export.activity_id,
        "CorrelationId": cid,
        "DequeuedAt": datetime.now(UTC),
        "LastDequeueDateTime": msg.last_dequeue_datetime,
        "InstanceId": run_id,
    }
    with log_context(blob_name=cid):
        try:
            # The claim comes first: one create for a first delivery; a redelivery finds the earlier
            # claim (and its path), so a message is never archived under a second name.
            entry = index.claim(export.activity_id, cid, archive_stem(export.name, day, cid), run_id)
            if entry.archived:
                status, key = "Duplicate", "duplicate"
                row.update(ArchivedBlob=f"{container}/{entry.path}", SizeBytes=entry.size)
                row["Reason"] = (
                    "already archived (redelivered message); acknowledged without a second archive"
                )
            else:
                size, md5, path, adopted = _archive(svc, index, export, msg, entry, run_id)
                status, key = "Archived", "archived"
                row.update(ArchivedBlob=f"{container}/{path}", SizeBytes=size, ContentMd5=md5)
                if adopted:
                    row["Reason"] = "archive found from an earlier attempt; not written again"
        except FileGone as exc:
            # Never downloadable again: acknowledge so it stops coming back every visibility timeout.
            ack_error = _ack(api, export.activity_id, msg)
            reason = (
                f"{exc}; acknowledged without an archive"
                if not ack_error
                else f"{exc}; ack failed: {ack_error}"
            )
            log.warning("message %s: %s", cid, reason)
            row.update(Status="Failed", Reason=reason, Acked=not ack_error, FinishedAt=datetime.now(UTC))
            svc.outcomes.upsert(day, message_row(run_id, cid), row)
            return {"status_key": "failed", "reason": reason}
        except (FnoError, AzureError, ArchiveMismatch, OSError) as exc:
            reason = f"archive failed, message not acknowledged (F&O offers it again later): {exc}"
            log.warning("message %s: %s", cid, reason)
            row.update(Status="Failed", Reason=reason, FinishedAt=datetime.now(UTC))
            svc.outcomes.upsert(day, message_row(run_id, cid), row)
            return {"status_key": "failed", "reason": reason}
        ack_error = _ack(api, export.activity_id, msg)
        if ack_error:
            reason = f"archived but the acknowledgement failed ({ack_error}); redelivery will be acked only"
            row.update(Status="ArchivedNotAcked", Reason=reason, Acked=False, FinishedAt=datetime.now(UTC))
            svc.outcomes.upsert(day, message_row(run_id, cid), row)
            return {"status_key": "not_acked", "reason": reason}
        now = datetime.now(UTC)
        row.update(Status=status, Acked=True, AckedAt=now, FinishedAt=now)
        try:
            svc.outcomes.upsert(day, message_row(run_id, cid), row)
        except AzureError as exc:  # archived and acked: the work is done; the record is what failed
            log.error("message %s archived and acked, but its outcome row failed: %s", cid, exc)
        return {"status_key": key, "reason": ""}


class FileGone(RuntimeError):
    """F&O says the message's file no longer exists (retention); it can never be archived."""


def _archive(
    svc: Services,
    index: ArchiveIndex,
    export: RecurringExport,
    msg: DequeuedMessage,
    entry: IndexEntry,
    run_id: str,
) -> tuple[int, str | None, str, bool]:
    """Stream the download into the archive blob; returns (size, md5, path, adopted-existing).

    ``entry.path`` is the claimed name without its extension (known only once the first bytes arrive).
    """
    s = svc.settings
    cid = msg.correlation_id
    cc = clients.container(s, s.archive_container)
    if not entry.fresh:
        # Claimed by an earlier attempt that did not finish: its blob may have been committed before a crash.
        for props in cc.list_blobs(name_starts_with=entry.path, include=["metadata"]):
            adopted = _adopt_existing(cc.get_blob_client(props.name), cid)
            if adopted is not None:
                index.mark_archived(export.activity_id, cid, props.name, adopted[0], adopted[1])
                return adopted[0], adopted[1], props.name, True
    if msg.is_download_file_exist is False:
        raise FileGone(
            f"F&O reports the file is gone: {msg.file_download_error_message or 'IsDownLoadFileExist=false'}"
        )
    api = recurring_api(s, export.environment)
    metadata = {
        "correlation_id": cid,
        "activity_id": export.activity_id.strip("{}"),
        "export": safe_name(export.name),
        "environment": export.environment,
        "source": "recurring-export",
        "dequeued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_dequeue": msg.last_dequeue_datetime or "",
        "run_id": run_id,
    }
    with api.download(msg) as stream:
        chunks = stream.iter_bytes()
        first = next(chunks, b"")
        path = entry.path + _ext_for(stream.content_type, first)
        blob = cc.get_blob_client(path)
        second = next(chunks, None) if len(first) < SMALL_MESSAGE_BYTES else b""
        if second is None:
            # The whole message fits in one read: one Put Blob whose Content-MD5 the service checks.
            size, md5 = _put_small(blob, first, metadata, stream.content_type)
        else:
            rest = itertools.chain((first, second), chunks)
            result = stream_to_blob(rest, blob, metadata=metadata, content_type=stream.content_type)
            size, md5 = result.size, result.md5
            _verify(blob, size, md5)
        if stream.content_length is not None and stream.content_length != size:
            try:
                blob.delete_blob()  # never leave a short archive for a later attempt to adopt
            except AzureError:
                pass
            raise ArchiveMismatch(f"F&O announced {stream.content_length} bytes, {size} arrived")
        # Only a fully checked archive carries this mark; an interrupted one is never adopted later.
        blob.set_blob_metadata({**metadata, "verified": "1"})
    index.mark_archived(export.activity_id, cid, path, size, md5)
    log.info("archived message %s as %s (%d bytes)", cid, path, size)
    return size, md5, path, False


def _put_small(
    blob: BlobClient, data: bytes, metadata: dict[str, str], content_type: str | None
) -> tuple[int, str]:
    from azure.storage.blob import ContentSettings

    digest = hashlib.md5(data, usedforsecurity=False).digest()  # Azure's Content-MD5 integrity check
    blob.upload_blob(
        data,
        overwrite=True,
        metadata=metadata,
        validate_content=True,  # transactional MD5: the service rejects a body that differs
        content_settings=ContentSettings(
            content_type=content_type or "application/octet-stream", content_md5=bytearray(digest)
        ),
    )
    return len(data), base64.b64encode(digest).decode()


def _adopt_existing(blob: BlobClient, correlation_id: str) -> tuple[int, str | None] | None:
    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    md5 = props.content_settings.content_md5
    meta = props.metadata or {}
    if meta.get("correlation_id") != correlation_id or meta.get("verified") != "1" or not md5:
        return None
    return props.size, base64.b64encode(bytes(md5)).decode()


def _verify(blob: BlobClient, size: int, md5: str | None) -> None:
    """Read back a block-committed blob's properties: size and MD5 must match what was streamed."""
    props = blob.get_blob_properties()
    stored = props.content_settings.content_md5
    stored_b64 = base64.b64encode(bytes(stored)).decode() if stored else None
    problems = []
    if props.size != size:
        problems.append(f"archive holds {props.size} bytes, {size} were downloaded")
    if md5 and stored_b64 != md5:
        problems.append("archive MD5 differs from the downloaded bytes")
    if problems:
        try:
            blob.delete_blob()
        except AzureError:
            pass
        raise ArchiveMismatch("; ".join(problems))


def _ack(api: RecurringApi, activity_id: str, msg: DequeuedMessage) -> str | None:
    """Acknowledge, retrying a few times beyond the HTTP layer's retries; the last error text or None."""
    last = None
    for attempt in range(ACK_ATTEMPTS):
        try:
            api.ack(activity_id, msg)
            return None
        except FnoError as exc:
            last = str(exc)
            if not exc.transient:
                break
            if attempt + 1 < ACK_ATTEMPTS:
                time.sleep(ACK_PAUSE_SECONDS * (attempt + 1))
    return last


# -- run summary ----------------------------------------------------------------------------------


def record_drain_start(svc: Services, req: dict[str, Any]) -> None:
    export = req["export"]
    svc.outcomes.upsert(
        req["day"],
        req["run_id"],
        {
            "Kind": "drain",
            "Status": "Running",
            "Environment": export["environment"],
            "Export": export["name"],
            "ActivityId": export["activity_id"],
            "InstanceId": req.get("instance_id"),
            "StartedAt": datetime.fromisoformat(req["started_at"]),
        },
    )


def record_drain_result(svc: Services, req: dict[str, Any]) -> dict[str, Any]:
    """The run's summary row; releases the run guard so the next timer firing may drain again."""
    totals = req["totals"]
    failed = totals.get("failed", 0) + totals.get("not_acked", 0)
    if req.get("errors") and not any(totals.get(k) for k in ("archived", "duplicate")):
        status = "Failed"
    elif failed:
        status = "PartiallySucceeded"
    else:
        status = "Succeeded"
    started = datetime.fromisoformat(req["started_at"])
    finished = datetime.fromisoformat(req["finished_at"])
    svc.outcomes.upsert(
        req["day"],
        req["run_id"],
        {
            "Status": status,
            "Reason": req.get("stop_reason"),
            "Messages": totals.get("archived", 0) + totals.get("duplicate", 0) + failed,
            "Archived": totals.get("archived", 0),
            "Duplicates": totals.get("duplicate", 0),
            "ErrorCount": failed,
            "ErrorSummary": " | ".join(
                [
                    *(req.get("errors") or []),
                    *(f"{f['correlation_id']}: {f['reason']}" for f in req.get("failures") or []),
                ]
            )
            or None,
            "FinishedAt": finished,
            "DurationSeconds": round((finished - started).total_seconds(), 3),
        },
    )
    stop = req.get("stop_reason") or ""
    backlog = "budget" in stop  # stopped on its count or time budget: F&O still had messages queued
    export = req["export"]
    ops_event(
        log,
        "drain_finished",
        "drain %s of %s ended %s (%s)",
        req["run_id"],
        export["name"],
        status,
        stop,
        level=logging.WARNING if backlog or status != "Succeeded" else logging.INFO,
        status=status,
        environment=export.get("environment"),
        export=export["name"],
        stop_reason=stop,
        backlog=backlog,
        messages=totals.get("archived", 0) + totals.get("duplicate", 0) + failed,
        duplicates=totals.get("duplicate", 0),
        failed=failed,
        duration_seconds=round((finished - started).total_seconds(), 3),
    )
    if req.get("guard"):
        svc.ledger.finish_run(req["guard"], req.get("guard_token") or req["run_id"])
    return {"status": status}
