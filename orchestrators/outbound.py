"""Outbound orchestrations: recurring-export drains, scheduled package exports, the recurring enqueue route.

- ``recurring_drain`` (instance ``drain-<export>``, a singleton per export): loops ``drain_batch`` until the
  queue answers empty or the run's count/time budget is spent. Each batch holds at most a few messages at
  a time (see ``dmf/pipeline/outbound.py``), so nothing dequeued waits past its visibility window.
- ``scheduled_export`` (instance ``export-<job>``): ExportToPackageAsync with our own execution id, status
  polled with durable timers (``ExportWait``), package URL polled until F&O hands it out, copied into the archive.
- ``recurring_enqueue`` (sub-orchestration of ``inbound_drop``): enqueue once, poll GetMessageStatus with
  durable timers until terminal (``EnqueueWait``), record execution id and errors. Its result feeds ``finalize_drop``.

Both waits are the one start-then-poll loop of ``orchestrators/waiting.py``. Orchestrators only yield tasks; configuration comes from the ``outbound_config`` activity.
"""

from __future__ import annotations

from dataclasses import replace

import azure.durable_functions as df

from dmf.pipeline.payloads import (
    CheckExport,
    CheckMessage,
    DrainBatch,
    DrainOf,
    DrainResult,
    DrainRun,
    DrainStart,
    Enqueue,
    EnqueuedFile,
    EnqueueResult,
    EnqueueRoute,
    ExportPackage,
    ExportResult,
    ExportRun,
    StartExport,
    to_wire,
)
from dmf.pipeline.polling import PollPolicy
from dmf.pipeline.results import BatchDone, Checked, Fetched, OutboundConfig, Recorded, Started
from orchestrators.retries import BATCH_RETRY, MAX_FETCH_FAILURES, MAX_RECALLS, MAX_URL_TRIES, RETRY
from orchestrators.timing import now_iso, refusal_wait, timer_in
from orchestrators.waiting import DurableWait

bp = df.Blueprint()


# -- recurring-export drain ---------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def recurring_drain(context: df.DurableOrchestrationContext):
    """Input: ``export`` (RecurringExport dict), ``run_id``, ``day``, ``guard``, ``max_messages``,
    ``max_seconds``. Returns the run's totals."""
    req = DrainRun.of(context.get_input())
    started = context.current_utc_datetime
    base = vars(DrainOf(export=req.export, run_id=req.run_id, day=req.day))
    totals = {"archived": 0, "duplicate": 0, "failed": 0, "not_acked": 0, "taken": 0}
    failures: list[dict] = []
    errors: list[str] = []
    stop = None
    try:
        cfg = OutboundConfig.of((yield context.call_activity("outbound_config", None)))
        begin = DrainStart(**base, started_at=started.isoformat(), instance_id=context.instance_id)
        yield context.call_activity_with_retry("drain_start", RETRY, to_wire(begin))
        while True:
            elapsed = (context.current_utc_datetime - started).total_seconds()
            left_count = int(req.max_messages) - totals["taken"]
            left_time = float(req.max_seconds) - elapsed
            if left_count <= 0:
                stop = f"count budget of {req.max_messages} messages reached"
                break
            if left_time <= 1:
                stop = f"time budget of {req.max_seconds:.0f}s reached"
                break
            context.set_custom_status({"stage": "draining", **totals})
            batch = DrainBatch(
                **base,
                max_messages=min(left_count, cfg.batch_messages),
                max_seconds=min(left_time, cfg.batch_seconds),
                workers=req.workers or cfg.workers,
            )
            res = BatchDone.of(
                (yield context.call_activity_with_retry("drain_batch", BATCH_RETRY, to_wire(batch)))
            )
            for k in totals:
                totals[k] += res.count(k)
            failures += res.failures or []
            errors += res.errors or []
            if res.errors:
                stop = "stopped on an F&O error"
                break
            if res.empty:
                stop = "queue empty"
                break
            if not res.taken:
                stop = "no progress"
                break
    except Exception as exc:  # an activity kept failing: still record the run and free its guard
        errors.append(f"drain orchestration failed: {exc}")
        stop = "error"
    record = DrainResult(
        **base,
        totals=totals,
        failures=failures[:20],
        errors=errors[:5],
        stop_reason=stop,
        started_at=started.isoformat(),
        finished_at=now_iso(context),
        guard=req.guard,
        guard_token=req.guard_token,
    )
    result = Recorded.of((yield context.call_activity_with_retry("drain_record", RETRY, to_wire(record))))
    context.set_custom_status({"stage": "done", "status": result.status, **totals})
    return {"status": result.status, "stop_reason": stop, **totals}


# -- scheduled export -----------------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def scheduled_export(context: df.DurableOrchestrationContext):
    """Input: ``job`` (ExportJob dict), ``run_id``, ``day``, ``execution_id``, ``package_name``, ``guard``."""
    run = ExportRun.of(context.get_input())
    req = StartExport(**vars(run), instance_id=context.instance_id)
    started = context.current_utc_datetime
    outcome: dict = {}
    try:
        cfg = OutboundConfig.of((yield context.call_activity("outbound_config", None)))
        policy = PollPolicy(**cfg.poll)
        waited = yield from ExportWait(context, req, policy).run()
        outcome = {k: getattr(waited, k) for k in ("status", "reason", "polls", "started")}
        if waited.status in ("Succeeded", "PartiallySucceeded"):
            outcome.update((yield from _fetch_package(context, req, policy)))
    except Exception as exc:
        outcome = {**outcome, "status": "Failed", "reason": f"export orchestration failed: {exc}"}
    record = ExportResult(
        **vars(run),
        instance_id=req.instance_id,
        status=outcome["status"],
        reason=outcome.get("reason"),
        polls=outcome.get("polls"),
        started=outcome.get("started"),
        archived=outcome.get("archived"),
        size=outcome.get("size"),
        method=outcome.get("method"),
        started_at=started.isoformat(),
        finished_at=now_iso(context),
    )
    result = Recorded.of((yield context.call_activity_with_retry("export_record", RETRY, to_wire(record))))
    context.set_custom_status({"stage": "done", "status": result.status})
    return {
        "status": result.status,
        "execution_id": req.execution_id,
        "archived": outcome.get("archived"),
        "warnings": result.warnings,
    }


class ExportWait(DurableWait):
    """ExportToPackageAsync once under our execution id (the F&O client never repeats it itself), then
    status calls; an ambiguous start F&O never saw is called again, up to ``MAX_RECALLS`` times (as imports
    are: one recall that also met a 5xx lost the export in the fault matrix)."""

    max_recalls = MAX_RECALLS

    def __init__(self, context: df.DurableOrchestrationContext, req: StartExport, policy: PollPolicy) -> None:
        super().__init__(context, policy)
        self.req = req
        self.execution_id = req.execution_id

    def start_task(self, recall: bool) -> df.Task:
        return self.context.call_activity_with_retry(
            "export_start", RETRY, to_wire(replace(self.req, allow_recall=recall))
        )

    def check_task(self) -> df.Task:
        check = CheckExport(environment=self.req.job["environment"], execution_id=self.execution_id)
        return self.context.call_activity_with_retry("export_check", RETRY, to_wire(check))

    def start_status(self) -> dict:
        return {"stage": "exporting", "execution_id": self.execution_id}

    def throttled_status(self, wait: float) -> dict:
        return {"stage": "export-throttled", "retry_in": wait}


def _fetch_package(context: df.DurableOrchestrationContext, req: StartExport, policy: PollPolicy):
    """GetExportedPackageUrl can be empty for a while after Succeeded: wait with timers, then archive."""
    context.set_custom_status({"stage": "fetching", "execution_id": req.execution_id})
    fetch = ExportPackage(
        job=req.job,
        run_id=req.run_id,
        day=req.day,
        execution_id=req.execution_id,
        package_name=req.package_name,
    )
    failures = refusals = n = 0
    waited = 0.0
    last_error = None
    while n < MAX_URL_TRIES:
        got = Fetched.of((yield context.call_activity_with_retry("export_fetch", RETRY, to_wire(fetch))))
        if got.ready:
            return {"archived": got.archived, "size": got.size, "method": got.method}
        last_error = got.error or last_error
        if got.refused and waited < policy.deadline:  # F&O said "not now": wait, bounded by the deadline
            wait = refusal_wait(got.retry_after, refusals, waited, policy)
            refusals, waited = refusals + 1, waited + wait
            yield timer_in(context, wait)
            continue
        if got.error:
            failures += 1
            if got.permanent or failures >= MAX_FETCH_FAILURES:
                break
        wait = min(policy.initial * 2**n, policy.max_interval)
        waited += wait
        n += 1
        yield timer_in(context, wait)
    return {
        "status": "Failed",
        "reason": last_error or f"F&O handed out no package URL after {MAX_URL_TRIES} tries",
    }


# -- recurring enqueue route ----------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def recurring_enqueue(context: df.DurableOrchestrationContext):
    """Input (from ``inbound_drop``): ``drop``, ``route`` (ResolvedRoute dict), ``source``, ``day``.

    Returns a package result for ``finalize_drop``: ``status``, ``seq``, ``execution_id``, ``records``,
    ``error_count``, ``error_summary``, ``message_id``, ``message_status``.
    """
    inp = EnqueueRoute.of(context.get_input())
    drop_id = inp.drop.get("instance_id") or context.instance_id.removesuffix("-enqueue")
    file = EnqueuedFile(drop_id=drop_id, day=inp.day, route=inp.route, source=inp.source)
    send = Enqueue(**vars(file), instance_id=context.instance_id)
    started = context.current_utc_datetime
    wait = None
    try:
        cfg = OutboundConfig.of((yield context.call_activity("outbound_config", None)))
        wait = EnqueueWait(context, send, PollPolicy(**cfg.poll))
        outcome = yield from wait.run()
        # A terminal message status is the outcome: ``enqueue_record`` maps it.
        status, reason = (None, None) if outcome.terminal else (outcome.status, outcome.reason)
    except Exception as exc:
        status, reason = "Failed", f"enqueue orchestration failed: {exc}"
    record = EnqueueResult(
        **vars(file),
        message_id=wait.message_id if wait else None,
        message_status=wait.last if wait else None,
        status=status,
        reason=reason,
        polls=wait.polls if wait else 0,
        started_at=started.isoformat(),
        finished_at=now_iso(context),
    )
    result = yield context.call_activity_with_retry("enqueue_record", RETRY, to_wire(record))
    context.set_custom_status({"stage": "done", "status": Recorded.of(result).status})
    return result


class EnqueueWait(DurableWait):
    """Enqueue the file once, then GetMessageStatus until the message is terminal (no recalls: a message
    id F&O handed out is never \"not found\")."""

    not_found = None

    def __init__(self, context: df.DurableOrchestrationContext, send: Enqueue, policy: PollPolicy) -> None:
        super().__init__(context, policy)
        self.send = send
        self.message_id: str | None = None

    def start_task(self, recall: bool) -> df.Task:
        return self.context.call_activity_with_retry("enqueue_send", RETRY, to_wire(self.send))

    def check_task(self) -> df.Task:
        check = CheckMessage(environment=self.send.route["environment"], message_id=self.message_id)
        return self.context.call_activity_with_retry("enqueue_check", RETRY, to_wire(check))

    def start_status(self) -> dict:
        return {"stage": "enqueueing"}

    def progress(self, chk: Checked, by_event: bool) -> dict:
        return {"stage": "polling", "message_status": self.last, "polls": self.polls}

    def is_terminal(self, chk: Checked) -> bool:
        return bool(chk.terminal)

    def accepted(self, st: Started) -> bool:
        self.message_id = st.message_id
        return True

    def timeout_reason(self) -> str:
        return f"message {self.message_id} not processed after {self.policy.deadline / 60:.0f} minutes"
