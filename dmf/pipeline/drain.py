"""Recurring-export drains: dequeue → stream into the archive → verify → ack → outcome row, per message.

Safety rules, and why:
- A worker finishes each message (ack included) before it starts the next, and dequeues that next one
  only once the current one's bytes are all downloaded (while its archive is written and acked): it holds
  at most two dequeued messages, and the second waits only for the first's write and ack, never for a
  download. A drain runs a few workers, so at most ``2 × workers`` messages are ever in flight. Dequeuing a
  pile first and acking later is how other tools end up with every ack failing after the visibility window.
- Each message is archived once (``dmf.pipeline.archive``: claimed in an index before any byte is written,
  verified after). A redelivered message (``LastDequeueDateTime`` set, or an id already in the index) is
  acked without a second archive.
- Nothing is acked before the archive is committed and its size and MD5 match what was downloaded. A
  failed archive leaves the message un-acked: F&O offers it again after its visibility timeout.
- Budgets (count and time) are checked before each dequeue, never after, so a run never takes a message
  it has no time left to finish.

Speed: F&O calls cost far more than storage calls (~150 ms against ~20 ms), and a drain makes the same
three per message as the simplest loop (dequeue, download, ack). Storage work stays off that path where no
rule needs it: the index claim runs while the download starts (it is awaited before any byte is written),
the next dequeue runs while the archive is written (one Put Blob, verified as it commits, for a small
message) and acknowledged, and the outcome row is written while the worker goes on (``_Writes``; the batch
waits for those rows before it returns).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    archive_once,
    archive_stem,
)
from dmf.pipeline.ids import safe_name
from dmf.pipeline.payloads import DrainBatch, DrainResult, DrainStart, to_wire
from dmf.pipeline.results import BatchDone
from dmf.settings import RecurringExport
from dmf.storage.outcomes import finish_fields

if TYPE_CHECKING:
    from dmf.fno.models import DequeuedMessage
    from dmf.fno.recurring_api import RecurringApi
    from dmf.pipeline.archive import Archived
    from dmf.pipeline.services import Services

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4  # per drain; each holds at most its current message and the next (see the safety rules)
BATCH_MESSAGES = 100  # per activity call: keeps one activity well under the function timeout
BATCH_SECONDS = 120.0


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


class _Writes:
    """A batch's writes that need not hold up the next dequeue (claims racing a download, outcome rows).

    ``drain_batch`` waits for all of them before it returns, so a batch's rows exist when it reports."""

    def __init__(self, workers: int) -> None:
        # Per worker: a claim, a dequeue ahead, and outcome rows (which nothing waits for).
        self.pool = ThreadPoolExecutor(3 * workers, thread_name_prefix="drain-io")
        self._pending: list[Future[Any]] = []
        self._lock = threading.Lock()

    def outcome_row(self, svc: Services, day: str, row_key: str, row: dict[str, Any]) -> None:
        # The message is settled (acked, or left for F&O to offer again) whatever becomes of its row.
        f = self.pool.submit(contextvars.copy_context().run, _upsert_row, svc, day, row_key, row)
        with self._lock:
            self._pending = [p for p in self._pending if not p.done()]
            self._pending.append(f)

    def close(self) -> None:
        with self._lock:
            pending = list(self._pending)
        for f in pending:
            f.result()
        self.pool.shutdown(wait=True)


def _upsert_row(svc: Services, day: str, row_key: str, row: dict[str, Any]) -> None:
    try:
        svc.outcomes.upsert(day, row_key, row)
    except AzureError as exc:
        log.error("message %s: its outcome row failed: %s", row.get("CorrelationId"), exc)


def drain_batch(svc: Services, req: DrainBatch | dict[str, Any]) -> dict[str, Any]:
    """Drain up to ``max_messages`` messages within ``max_seconds``; one outcome row per message.

    ``req``: ``export`` (RecurringExport dict), ``run_id``, ``day``, ``max_messages``, ``max_seconds``,
    optional ``workers``. Returns counts, whether the queue answered empty, and failures (small).
    Expected failures never raise: they are counted and recorded, so the orchestrator just loops.
    """
    req = DrainBatch.of(req)
    export = RecurringExport.model_validate(req.export)
    workers = max(1, int(req.workers or DEFAULT_WORKERS))
    budget = _Budget(int(req.max_messages), time.monotonic() + float(req.max_seconds))
    tally = _Tally()
    try:
        api = recurring_api(svc.settings, export.environment)
    except ValueError as exc:  # on-premises environment: the API does not exist there
        return to_wire(BatchDone(**tally.counts, taken=0, empty=True, errors=[str(exc)]))
    index = archive_index(svc)
    writes = _Writes(workers)

    def take() -> DequeuedMessage | None:
        """Reserve a budget slot and dequeue; None when the budget, the queue or F&O says stop."""
        if not budget.reserve():
            return None
        try:
            msg = api.dequeue(export.activity_id)
        except FnoError as exc:
            budget.release()
            tally.error(f"dequeue failed: {exc}")
            budget.mark_empty()  # stop this batch; the orchestrator decides whether to go on
            return None
        if msg is None:
            budget.release()
            budget.mark_empty()
        return msg

    def worker() -> None:
        msg = take()
        while msg is not None:
            ahead = _Next(writes.pool, take)
            try:
                res = process_message(svc, api, index, export, msg, req.run_id, req.day, writes, ahead.start)
            except Exception as exc:  # a bug or an outage mid-message: not acked, F&O offers it again
                log.exception("message %s: unexpected failure", msg.correlation_id)
                res = {"status_key": "failed", "reason": f"unexpected {type(exc).__name__}: {exc}"}
            tally.add(msg.correlation_id, res)
            msg = ahead.get()

    try:
        with log_context(instance_id=req.run_id):
            if workers == 1:
                worker()
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="drain") as pool:
                    # Each thread runs in a copy of this context, so log lines keep the run id.
                    futures = [pool.submit(contextvars.copy_context().run, worker) for _ in range(workers)]
                    for f in futures:
                        f.result()
    finally:
        writes.close()
    return to_wire(
        BatchDone(
            **tally.counts,
            taken=budget.taken,
            empty=budget.empty and not tally.errors,
            failures=tally.failures[:20],
            errors=tally.errors[:5],
        )
    )


class _Next:
    """A worker's next message: dequeued on ``pool`` once ``start()`` is called (while the current message
    is written and acknowledged), else by ``get()`` itself."""

    def __init__(self, pool: ThreadPoolExecutor, take: Callable[[], DequeuedMessage | None]) -> None:
        self._pool, self._take = pool, take
        self._future: Future[DequeuedMessage | None] | None = None

    def start(self) -> None:
        if self._future is None:
            self._future = self._pool.submit(contextvars.copy_context().run, self._take)

    def get(self) -> DequeuedMessage | None:
        return self._future.result() if self._future is not None else self._take()


@dataclass
class _Tally:
    counts: dict[str, int] = field(
        default_factory=lambda: {"archived": 0, "duplicate": 0, "failed": 0, "not_acked": 0}
    )
    failures: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, correlation_id: str, res: dict[str, Any]) -> None:
        with self.lock:
            self.counts[res["status_key"]] += 1
            if res["status_key"] in ("failed", "not_acked"):
                self.failures.append({"correlation_id": correlation_id, "reason": res["reason"][:300]})

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


_HOW = {"written": ("Archived", "archived"), "adopted": ("Archived", "archived"), "duplicate": ("Duplicate", "duplicate")}  # fmt: skip


def process_message(
    svc: Services,
    api: RecurringApi,
    index: ArchiveIndex,
    export: RecurringExport,
    msg: DequeuedMessage,
    run_id: str,
    day: str,
    writes: _Writes,
    downloaded: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Archive (once) and ack one dequeued message; its outcome row is written on ``writes``.

    ``downloaded`` is called once the message's bytes are all in hand and its archive is being written
    (the worker dequeues its next message meanwhile)."""
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
    key = message_row(run_id, cid)
    with log_context(blob_name=cid):
        try:
            # The claim comes first (or races only the download): one create for a first delivery; a
            # redelivery finds the earlier claim (and its path), so a message is never archived twice.
            stem = archive_stem(export.name, day, cid)
            done = archive_once(svc, index, export, msg, stem, run_id, writes.pool, downloaded)
        except FileGone as exc:
            # Never downloadable again: acknowledge so it stops coming back every visibility timeout.
            ack_error = _ack(api, export.activity_id, msg)
            reason = f"{exc}; " + (
                "acknowledged without an archive" if not ack_error else f"ack failed: {ack_error}"
            )
            log.warning("message %s: %s", cid, reason)
            row.update(Status="Failed", Reason=reason, Acked=not ack_error, FinishedAt=datetime.now(UTC))
            writes.outcome_row(svc, day, key, row)
            return {"status_key": "failed", "reason": reason}
        except (FnoError, AzureError, ArchiveMismatch, OSError) as exc:
            reason = f"archive failed, message not acknowledged (F&O offers it again later): {exc}"
            log.warning("message %s: %s", cid, reason)
            row.update(Status="Failed", Reason=reason, FinishedAt=datetime.now(UTC))
            writes.outcome_row(svc, day, key, row)
            return {"status_key": "failed", "reason": reason}
        status, status_key = _HOW[done.how]
        row.update(ArchivedBlob=f"{container}/{done.path}", SizeBytes=done.size)
        if done.how == "duplicate":
            row["Reason"] = "already archived (redelivered message); acknowledged without a second archive"
        else:
            row["ContentMd5"] = done.md5
        if done.how == "adopted":
            row["Reason"] = "archive found from an earlier attempt; not written again"
        ack_error = _ack(api, export.activity_id, msg)
        if ack_error:
            _mark_for_redelivery(index, export, cid, done)
            reason = f"archived but the acknowledgement failed ({ack_error}); redelivery will be acked only"
            row.update(Status="ArchivedNotAcked", Reason=reason, Acked=False, FinishedAt=datetime.now(UTC))
            writes.outcome_row(svc, day, key, row)
            return {"status_key": "not_acked", "reason": reason}
        now = datetime.now(UTC)
        row.update(Status=status, Acked=True, AckedAt=now, FinishedAt=now)
        writes.outcome_row(svc, day, key, row)
        return {"status_key": status_key, "reason": ""}


def _mark_for_redelivery(index: ArchiveIndex, export: RecurringExport, cid: str, done: Archived) -> None:
    """F&O will offer the message again: index its archive so the redelivery is acked straight away (a
    failure here only costs the redelivery a blob listing: the archive's own mark is found then)."""
    if done.how == "duplicate" or done.size is None:
        return
    try:
        index.mark_archived(export.activity_id, cid, done.path, done.size, done.md5)
    except AzureError as exc:
        log.warning("message %s: archive index not updated (%s); a redelivery adopts the archive", cid, exc)


def _ack(api: RecurringApi, activity_id: str, msg: DequeuedMessage) -> str | None:
    """Acknowledge once; the error text or None. The HTTP layer (``dmf.fno.http``) is this call's one
    retry layer: ack is idempotent there, so transient failures are already retried."""
    try:
        api.ack(activity_id, msg)
    except FnoError as exc:
        return str(exc)
    return None


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
