"""Outbound orchestrations: recurring-export drains, scheduled package exports, the recurring enqueue route.

- ``recurring_drain`` (instance ``drain-<export>``, a singleton per export): loops ``drain_batch`` until the
  queue answers empty or the run's count/time budget is spent. Each batch holds at most a few messages at
  a time (see ``dmf/pipeline/outbound.py``), so nothing dequeued waits past its visibility window.
- ``scheduled_export`` (instance ``export-<job>``): ExportToPackageAsync with our own execution id, status
  polled with durable timers, package URL polled until F&O hands it out, copied into the archive.
- ``recurring_enqueue`` (sub-orchestration of ``inbound_drop``): enqueue once, poll GetMessageStatus with
  durable timers until terminal, record execution id and errors. Its result feeds ``finalize_drop``.

Orchestrators only yield tasks; configuration comes from the ``outbound_config`` activity.
"""

from __future__ import annotations

import azure.durable_functions as df

from dmf.pipeline.polling import TERMINAL, PollPolicy
from orchestrators.retries import (
    BATCH_RETRY,
    MAX_FETCH_FAILURES,
    MAX_RECALLS,
    MAX_START_RETRIES,
    MAX_URL_TRIES,
    RETRY,
)
from orchestrators.timing import now_iso, refusal_wait, timer_in

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
        outcome = yield from _export_and_poll(context, req, policy)
        if outcome["status"] in ("Succeeded", "PartiallySucceeded"):
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


def _start_export(context: df.DurableOrchestrationContext, req: dict, policy: PollPolicy, recall: bool):
    """``export_start`` until a final answer. A refusal (``throttled``: 429, or 503 with Retry-After) is
    waited out with a durable timer for Retry-After and called again for as long as the poll deadline
    allows (the F&O client never repeats ExportToPackage itself); ``retry`` gets a few backoffs."""
    attempt = throttled = 0
    waited = 0.0
    while True:
        st = yield context.call_activity_with_retry("export_start", RETRY, req | {"allow_recall": recall})
        if st["state"] == "throttled" and waited < policy.deadline:
            wait = refusal_wait(st.get("retry_after"), throttled, waited, policy)
            throttled += 1
            waited += wait
            context.set_custom_status({"stage": "export-throttled", "retry_in": wait})
            yield timer_in(context, wait)
            continue
        if st["state"] != "retry" or attempt >= MAX_START_RETRIES:
            return st
        attempt += 1
        yield timer_in(context, max(st.get("retry_after") or 0, policy.initial * 2**attempt))


def _export_and_poll(context: df.DurableOrchestrationContext, req: dict, policy: PollPolicy):
    context.set_custom_status({"stage": "exporting", "execution_id": req["execution_id"]})
    st = yield from _start_export(context, req, policy, recall=False)
    if st["state"] in ("failed", "retry", "throttled"):
        return {"status": "Failed", "reason": st.get("error"), "polls": 0}
    confirmed = st["state"] == "started"
    recalls = 0
    began = context.current_utc_datetime
    polls = 0
    last = None
    env = req["job"]["environment"]
    while True:
        elapsed = (context.current_utc_datetime - began).total_seconds()
        wait = policy.next_wait(polls, elapsed, None)
        if wait <= 0:
            return {
                "status": "TimedOut",
                "reason": f"no terminal status after {policy.deadline / 60:.0f} minutes (last: {last})",
                "polls": polls,
                "started": True,
            }
        yield timer_in(context, wait)
        chk = yield context.call_activity_with_retry(
            "export_check", RETRY, {"environment": env, "execution_id": req["execution_id"]}
        )
        polls += 1
        last = chk["status"]
        context.set_custom_status({"stage": "polling", "status": last, "polls": polls})
        if last in TERMINAL:
            return {"status": last, "polls": polls, "started": True}
        elapsed = (context.current_utc_datetime - began).total_seconds()
        if last == "NotFound" and elapsed >= policy.not_found_grace:
            if confirmed or recalls >= MAX_RECALLS:
                return {
                    "status": "Failed",
                    "reason": f"F&O has no record of execution {req['execution_id']} after {elapsed:.0f}s",
                    "polls": polls,
                }
            recalls += 1  # the start call never reached F&O: now, and only now, call it again (as imports do)
            st = yield from _start_export(context, req, policy, recall=True)
            if st["state"] in ("failed", "retry", "throttled"):
                return {"status": "Failed", "reason": st.get("error"), "polls": polls}
            confirmed = st["state"] == "started"
            began = context.current_utc_datetime
            polls = 0


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
    route = inp["route"]
    drop_id = drop.get("instance_id") or context.instance_id.removesuffix("-enqueue")
    base = {"drop_id": drop_id, "day": inp["day"], "route": route, "source": inp["source"]}
    started = context.current_utc_datetime
    message_id = None
    message_status = None
    status = None
    reason = None
    polls = 0
    try:
        cfg = yield context.call_activity("outbound_config", None)
        policy = PollPolicy(**cfg["poll"])
        context.set_custom_status({"stage": "enqueueing"})
        attempt = 0
        while True:
            sent = yield context.call_activity_with_retry(
                "enqueue_send", RETRY, base | {"instance_id": context.instance_id}
            )
            if sent["state"] != "retry" or attempt >= MAX_START_RETRIES:
                break
            attempt += 1
            yield timer_in(context, max(sent.get("retry_after") or 0, policy.initial * 2**attempt))
        if sent["state"] != "enqueued":
            status, reason = "Failed", sent.get("error")
        else:
            message_id = sent["message_id"]
            began = context.current_utc_datetime
            while True:
                elapsed = (context.current_utc_datetime - began).total_seconds()
                wait = policy.next_wait(polls, elapsed, None)
                if wait <= 0:
                    status = "TimedOut"
                    reason = f"message {message_id} not processed after {policy.deadline / 60:.0f} minutes"
                    break
                yield timer_in(context, wait)
                chk = yield context.call_activity_with_retry(
                    "enqueue_check", RETRY, {"environment": route["environment"], "message_id": message_id}
                )
                polls += 1
                message_status = chk["status"]
                context.set_custom_status(
                    {"stage": "polling", "message_status": message_status, "polls": polls}
                )
                if chk["terminal"]:
                    break
    except Exception as exc:
        status, reason = "Failed", f"enqueue orchestration failed: {exc}"
    result = yield context.call_activity_with_retry(
        "enqueue_record",
        RETRY,
        base
        | {
            "message_id": message_id,
            "message_status": message_status,
            "status": status,
            "reason": reason,
            "polls": polls,
            "started_at": started.isoformat(),
            "finished_at": now_iso(context),
        },
    )
    context.set_custom_status({"stage": "done", "status": result["status"]})
    return result
