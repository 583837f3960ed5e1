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

import azure.durable_functions as df

from dmf.pipeline.polling import PollPolicy
from orchestrators.retries import BATCH_RETRY, MAX_FETCH_FAILURES, MAX_URL_TRIES, RETRY
from orchestrators.timing import now_iso, timer_in
from orchestrators.waiting import DurableWait

bp = df.Blueprint()


# -- recurring-export drain ---------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def recurring_drain(context: df.DurableOrchestrationContext):
    """Input: ``export`` (RecurringExport dict), ``run_id``, ``day``, ``guard``, ``max_messages``,
    ``max_seconds``. Returns the run's totals."""
    req = dict(context.get_input())
    started = context.current_utc_datetime
    base = {"export": req["export"], "run_id": req["run_id"], "day": req["day"]}
    totals = {"archived": 0, "duplicate": 0, "failed": 0, "not_acked": 0, "taken": 0}
    failures: list[dict] = []
    errors: list[str] = []
    stop = None
    try:
        cfg = yield context.call_activity("outbound_config", None)
        yield context.call_activity_with_retry(
            "drain_start",
            RETRY,
            base | {"started_at": started.isoformat(), "instance_id": context.instance_id},
        )
        while True:
            elapsed = (context.current_utc_datetime - started).total_seconds()
            left_count = int(req["max_messages"]) - totals["taken"]
            left_time = float(req["max_seconds"]) - elapsed
            if left_count <= 0:
                stop = f"count budget of {req['max_messages']} messages reached"
                break
            if left_time <= 1:
                stop = f"time budget of {req['max_seconds']:.0f}s reached"
                break
            context.set_custom_status({"stage": "draining", **totals})
            res = yield context.call_activity_with_retry(
                "drain_batch",
                BATCH_RETRY,
                base
                | {
                    "max_messages": min(left_count, cfg["batch_messages"]),
                    "max_seconds": min(left_time, cfg["batch_seconds"]),
                    "workers": req.get("workers") or cfg["workers"],
                },
            )
            for k in totals:
                totals[k] += int(res.get(k) or 0)
            failures += res.get("failures") or []
            errors += res.get("errors") or []
            if res.get("errors"):
                stop = "stopped on an F&O error"
                break
            if res.get("empty"):
                stop = "queue empty"
                break
            if not res.get("taken"):
                stop = "no progress"
                break
    except Exception as exc:  # an activity kept failing: still record the run and free its guard
        errors.append(f"drain orchestration failed: {exc}")
        stop = "error"
    result = yield context.call_activity_with_retry(
        "drain_record",
        RETRY,
        base
        | {
            "totals": totals,
            "failures": failures[:20],
            "errors": errors[:5],
            "stop_reason": stop,
            "started_at": started.isoformat(),
            "finished_at": now_iso(context),
            "guard": req.get("guard"),
            "guard_token": req.get("guard_token"),
        },
    )
    context.set_custom_status({"stage": "done", "status": result["status"], **totals})
    return {"status": result["status"], "stop_reason": stop, **totals}


# -- scheduled export -----------------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def scheduled_export(context: df.DurableOrchestrationContext):
    """Input: ``job`` (ExportJob dict), ``run_id``, ``day``, ``execution_id``, ``package_name``, ``guard``."""
    req = dict(context.get_input())
    req["instance_id"] = context.instance_id
    started = context.current_utc_datetime
    outcome: dict = {}
    try:
        cfg = yield context.call_activity("outbound_config", None)
        policy = PollPolicy(**cfg["poll"])
        waited = yield from ExportWait(context, req, policy).run()
        outcome = {"status": waited.status, "reason": waited.reason, "polls": waited.polls}
        outcome["started"] = waited.started
        if waited.status in ("Succeeded", "PartiallySucceeded"):
            outcome.update((yield from _fetch_package(context, req, policy)))
    except Exception as exc:
        outcome = {**outcome, "status": "Failed", "reason": f"export orchestration failed: {exc}"}
    result = yield context.call_activity_with_retry(
        "export_record",
        RETRY,
        {
            **{k: req[k] for k in ("job", "run_id", "day", "execution_id", "package_name", "instance_id")},
            "guard": req.get("guard"),
            "guard_token": req.get("guard_token"),
            "status": outcome["status"],
            "reason": outcome.get("reason"),
            "polls": outcome.get("polls"),
            "started": outcome.get("started"),
            "archived": outcome.get("archived"),
            "size": outcome.get("size"),
            "method": outcome.get("method"),
            "started_at": started.isoformat(),
            "finished_at": now_iso(context),
        },
    )
    context.set_custom_status({"stage": "done", "status": result["status"]})
    return {
        "status": result["status"],
        "execution_id": req["execution_id"],
        "archived": outcome.get("archived"),
        "warnings": result.get("warnings"),
    }


class ExportWait(DurableWait):
    """ExportToPackageAsync once under our execution id (the F&O client never repeats it itself), then
    status calls; an ambiguous start F&O never saw is called again once."""

    max_recalls = 1

    def __init__(self, context: df.DurableOrchestrationContext, req: dict, policy: PollPolicy) -> None:
        super().__init__(context, policy)
        self.req = req
        self.execution_id = req["execution_id"]

    def start_task(self, recall: bool) -> df.Task:
        return self.context.call_activity_with_retry(
            "export_start", RETRY, self.req | {"allow_recall": recall}
        )

    def check_task(self) -> df.Task:
        env = self.req["job"]["environment"]
        return self.context.call_activity_with_retry(
            "export_check", RETRY, {"environment": env, "execution_id": self.execution_id}
        )

    def start_status(self) -> dict:
        return {"stage": "exporting", "execution_id": self.execution_id}

    def throttled_status(self, wait: float) -> dict:
        return {"stage": "export-throttled", "retry_in": wait}


def _fetch_package(context: df.DurableOrchestrationContext, req: dict, policy: PollPolicy):
    """GetExportedPackageUrl can be empty for a while after Succeeded: wait with timers, then archive."""
    context.set_custom_status({"stage": "fetching", "execution_id": req["execution_id"]})
    failures = 0
    last_error = None
    for n in range(MAX_URL_TRIES):
        got = yield context.call_activity_with_retry(
            "export_fetch",
            RETRY,
            {k: req[k] for k in ("job", "run_id", "day", "execution_id", "package_name")},
        )
        if got.get("ready"):
            return {"archived": got["archived"], "size": got.get("size"), "method": got.get("method")}
        if got.get("error"):
            failures += 1
            last_error = got["error"]
            if got.get("permanent") or failures >= MAX_FETCH_FAILURES:
                break
        yield timer_in(context, min(policy.initial * 2**n, policy.max_interval))
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
    inp = dict(context.get_input())
    drop = inp["drop"]
    drop_id = drop.get("instance_id") or context.instance_id.removesuffix("-enqueue")
    base = {"drop_id": drop_id, "day": inp["day"], "route": inp["route"], "source": inp["source"]}
    started = context.current_utc_datetime
    wait = None
    try:
        cfg = yield context.call_activity("outbound_config", None)
        wait = EnqueueWait(context, base, PollPolicy(**cfg["poll"]))
        outcome = yield from wait.run()
        # A terminal message status is the outcome: ``enqueue_record`` maps it.
        status, reason = (None, None) if outcome.terminal else (outcome.status, outcome.reason)
    except Exception as exc:
        status, reason = "Failed", f"enqueue orchestration failed: {exc}"
    result = yield context.call_activity_with_retry(
        "enqueue_record",
        RETRY,
        base
        | {
            "message_id": wait.message_id if wait else None,
            "message_status": wait.last if wait else None,
            "status": status,
            "reason": reason,
            "polls": wait.polls if wait else 0,
            "started_at": started.isoformat(),
            "finished_at": now_iso(context),
        },
    )
    context.set_custom_status({"stage": "done", "status": result["status"]})
    return result


class EnqueueWait(DurableWait):
    """Enqueue the file once, then GetMessageStatus until the message is terminal (no recalls: a message
    id F&O handed out is never \"not found\")."""

    not_found = None

    def __init__(self, context: df.DurableOrchestrationContext, base: dict, policy: PollPolicy) -> None:
        super().__init__(context, policy)
        self.base = base
        self.message_id: str | None = None

    def start_task(self, recall: bool) -> df.Task:
        return self.context.call_activity_with_retry(
            "enqueue_send", RETRY, self.base | {"instance_id": self.context.instance_id}
        )

    def check_task(self) -> df.Task:
        return self.context.call_activity_with_retry(
            "enqueue_check",
            RETRY,
            {"environment": self.base["route"]["environment"], "message_id": self.message_id},
        )

    def start_status(self) -> dict:
        return {"stage": "enqueueing"}

    def progress(self, chk: dict, by_event: bool) -> dict:
        return {"stage": "polling", "message_status": self.last, "polls": self.polls}

    def is_terminal(self, chk: dict) -> bool:
        return bool(chk["terminal"])

    def accepted(self, st: dict) -> bool:
        self.message_id = st["message_id"]
        return True

    def timeout_reason(self) -> str:
        return f"message {self.message_id} not processed after {self.policy.deadline / 60:.0f} minutes"
