"""Recurring-export drains: dequeue → stream into the archive → verify → ack → outcome row, per message.

Safety rules, and why:
- A worker holds **one** dequeued message at a time and finishes it (ack included) before dequeuing the
  next; a drain runs a few workers, so at most ``workers`` messages are ever in flight. Dequeuing a pile
  first and acking later is how other tools end up with every ack failing after the visibility window.
- Each message is archived once (``dmf.pipeline.archive``: claimed in an index before any byte is written,
  verified after). A redelivered message (``LastDequeueDateTime`` set, or an id already in the index) is
  acked without a second archive.
- Nothing is acked before the archive is committed and its size and MD5 match what was downloaded. A
  failed archive leaves the message un-acked: F&O offers it again after its visibility timeout.
- Budgets (count and time) are checked before each dequeue, never after, so a run never takes a message
  it has no time left to finish.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from dmf.fno.clients import recurring_api
from dmf.fno.errors import FnoError
from dmf.logs import log_context, ops_event
from dmf.pipeline.archive import (
    ArchiveIndex,
    ArchiveMismatch,
    FileGone,
    archive_index,
    archive_message,
    archive_stem,
)
from dmf.pipeline.ids import safe_name
from dmf.pipeline.payloads import DrainBatch, DrainResult, DrainStart
from dmf.settings import RecurringExport
from dmf.storage.outcomes import finish_fields

if TYPE_CHECKING:
    from dmf.fno.models import DequeuedMessage
    from dmf.fno.recurring_api import RecurringApi
    from dmf.pipeline.services import Services

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4  # messages in flight per drain; each finishes (ack included) before the next dequeue
BATCH_MESSAGES = 100  # per activity call: keeps one activity well under the function timeout
BATCH_SECONDS = 120.0
ACK_ATTEMPTS = 3  # on top of the HTTP layer's own retries (ack is idempotent)
ACK_PAUSE_SECONDS = 0.5


def drain_run_id(export_name: str, fired_at: datetime) -> str:
    """The id of one drain run: outcome summary row key and ledger run-guard owner."""
    t = fired_at.astimezone(UTC)
    return f"drain-{safe_name(export_name)}-{t:%Y%m%dT%H%M%S}{t.microsecond // 1000:03d}"


def drain_instance_id(export_name: str) -> str:
    """The singleton orchestration instance id of an export's drain."""
    return f"drain-{safe_name(export_name)}"


def message_row(run_id: str, correlation_id: str) -> str:
    # Keyed by correlation id (not a counter), so a retried batch rewrites the same rows.
    return f"{run_id}~{correlation_id}"


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


def drain_batch(svc: Services, req: DrainBatch | dict[str, Any]) -> dict[str, Any]:
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
                size, md5, path, adopted = archive_message(svc, index, export, msg, entry, run_id)
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


def record_drain_start(svc: Services, req: DrainStart | dict[str, Any]) -> None:
    req = DrainStart.of(req)
    export = req.export
    svc.outcomes.upsert(
        req.day,
        req.run_id,
        {
            "Kind": "drain",
            "Status": "Running",
            "Environment": export["environment"],
            "Export": export["name"],
            "ActivityId": export["activity_id"],
            "InstanceId": req.instance_id,
            "StartedAt": datetime.fromisoformat(req.started_at),
        },
    )


def record_drain_result(svc: Services, req: DrainResult | dict[str, Any]) -> dict[str, Any]:
    """The run's summary row; releases the run guard so the next timer firing may drain again."""
    req = DrainResult.of(req)
    totals = req.totals
    failed = totals.get("failed", 0) + totals.get("not_acked", 0)
    if req.errors and not any(totals.get(k) for k in ("archived", "duplicate")):
        status = "Failed"
    elif failed:
        status = "PartiallySucceeded"
    else:
        status = "Succeeded"
    svc.outcomes.upsert(
        req.day,
        req.run_id,
        {
            "Status": status,
            "Reason": req.stop_reason,
            "Messages": totals.get("archived", 0) + totals.get("duplicate", 0) + failed,
            "Archived": totals.get("archived", 0),
            "Duplicates": totals.get("duplicate", 0),
            "ErrorCount": failed,
            "ErrorSummary": " | ".join(
                [
                    *(req.errors or []),
                    *(f"{f['correlation_id']}: {f['reason']}" for f in req.failures or []),
                ]
            )
            or None,
            **finish_fields(req.started_at, req.finished_at),
        },
    )
    _drain_finished_event(req, status, totals, failed)
    if req.guard:
        svc.ledger.finish_run(req.guard, req.guard_token or req.run_id)
    return {"status": status}


def _drain_finished_event(req: DrainResult, status: str, totals: dict[str, Any], failed: int) -> None:
    """The operations event the drain-backlog alert reads (infra/app/queries)."""
    stop = req.stop_reason or ""
    backlog = "budget" in stop  # stopped on its count or time budget: F&O still had messages queued
    export = req.export
    started, finished = datetime.fromisoformat(req.started_at), datetime.fromisoformat(req.finished_at)
    ops_event(
        log,
        "drain_finished",
        "drain %s of %s ended %s (%s)",
        req.run_id,
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
