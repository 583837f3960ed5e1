"""Orchestration for one staged package: wait for the environment's import gate, import once, poll with
durable timers, release the gate, then fetch errors and record the outcome.

The gate is a Table-backed FIFO (see ``dmf/gate.py``). Waiting uses ``task_any`` of a ``gate_open`` event
(raised by whoever releases a permit) and a recheck timer (in case an event is lost), so handover is
prompt and never depends on a single message.

With F&O's import-status business event configured (``FNO_EVENTS_ENABLED``), each poll wait is a
``task_any`` of the timer and an ``import_completed_<n>`` event (raised by ``triggers/fno_events.py``): the
event wakes the orchestration, which then asks F&O once; the timers become a fallback at least
``FNO_EVENTS_FALLBACK_POLL_SECONDS`` apart. Events are only hints, read from history (replay-safe):
another execution's, a repeated one (same event id, or entity and status) and one for an entity already
reported wake nothing until every entity of the package has reported.

Why ``<n>``: the Python SDK (1.x) keeps an event raised while nobody waits for its name and hands it to
*every* later waiter of that name (``deferred_tasks`` is never cleared), so one early event would wake
each later wait at once, for ever. Each consumed event moves ``n`` on; the custom status names the
current one (``event``), which the endpoint raises. An event that arrives while an activity runs is kept
under the current name and wakes the next wait exactly once; a waiter the timer beat is kept and reused.
"""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from dmf.gate import recheck_seconds
from dmf.pipeline.fno_events import EVENT_NAME as COMPLETED_EVENT
from dmf.pipeline.ids import execution_id
from dmf.pipeline.polling import TERMINAL, PollPolicy
from dmf.redact import redact
from orchestrators.retries import MAX_RECALLS, MAX_START_RETRIES, RETRY, TARGET_KEY_TRIES
from orchestrators.timing import now_iso, refusal_wait, timer_in

bp = df.Blueprint()

GATE_EVENT = "gate_open"
# After an ambiguous ImportFromPackage (timeout, reset, 5xx without Retry-After) F&O is asked about our
# execution id; while it answers "not found" the import is re-called after this long, not after the full
# POLL_NOT_FOUND_GRACE_SECONDS (which applies to starts F&O confirmed): the gate is held meanwhile.
VERIFY_GRACE_SECONDS = 60.0
LOST_GATE = "LostGate"
CANCELED = "canceled"
CANCELED_REASON = "canceled by an operator while waiting at the import gate (nothing was sent to F&O)"


@bp.orchestration_trigger(context_name="context")
def import_package(context: df.DurableOrchestrationContext):
    req = dict(context.get_input())
    route = req["route"]
    env = route["environment"]
    ticket = req["instance_id"] = context.instance_id
    req["execution_id"] = execution_id(route["data_project"], context.instance_id)
    cfg = yield context.call_activity("pipeline_config", None)
    policy = PollPolicy(**cfg["poll"])
    gate_req = {
        "environment": env,
        "ticket": ticket,
        "instance_id": context.instance_id,
        "execution_id": req["execution_id"],
    }

    started_at = now_iso(context)
    while True:
        # 1. Wait for the gate (FIFO across every orchestration importing into this environment).
        if (yield from _wait_for_gate(context, gate_req, cfg)) == CANCELED:
            outcome = {"status": "Canceled", "reason": CANCELED_REASON, "polls": 0}
            break
        # 2. Import and poll, holding the gate; then release it (kept while F&O may still be importing).
        try:
            outcome = yield from _import_and_poll(
                context, req, policy, cfg["gate_lease_seconds"], cfg.get("events")
            )
        except Exception as exc:  # unexpected: still free the gate and record the package
            outcome = {"status": "Failed", "reason": redact(f"import step failed: {exc}"), "polls": 0}
        if outcome["status"] != LOST_GATE:
            break
        # Our permit lapsed before ImportFromPackage was called: queue again rather than import unguarded.
        context.set_custom_status({"stage": "gate-lost", "execution_id": req["execution_id"]})
    maybe_running = outcome["status"] not in TERMINAL and bool(outcome.get("started"))
    try:
        yield context.call_activity_with_retry(
            "gate_release", RETRY, gate_req | {"now": now_iso(context), "maybe_running": maybe_running}
        )
    except Exception:  # the lease expires and the sweeper evicts us: the outcome still gets recorded
        context.set_custom_status({"stage": "gate-release-failed"})

    # 3. Errors (outside the gate: other imports need not wait for error files).
    errors = None
    if outcome.get("status") in ("PartiallySucceeded", "Failed", "Canceled") and outcome.get("started"):
        context.set_custom_status({"stage": "collecting-errors", "execution_id": req["execution_id"]})
        try:
            errors = yield from _collect_errors(context, req)
        except Exception as exc:  # the import happened: a missing error file must not turn it into a failure
            errors = {
                "error_count": None,
                "messages": [redact(f"could not collect errors: {exc}")],
                "files": [],
            }

    result = yield context.call_activity_with_retry(
        "record_import_result",
        RETRY,
        {
            **{k: req[k] for k in ("drop_id", "day", "seq", "route", "execution_id")},
            "status": outcome["status"],
            "reason": outcome.get("reason"),
            "last_status": outcome.get("last_status"),
            "polls": outcome.get("polls"),
            "started_at": started_at,
            "finished_at": now_iso(context),
            "confirmed_start_at": outcome.get("confirmed_start_at"),
            "observed_seconds": outcome.get("observed_seconds"),
            "errors": errors,
        },
    )
    context.set_custom_status(
        {"stage": "done", "status": result["status"], "execution_id": req["execution_id"]}
    )
    return {
        "seq": req["seq"],
        "status": outcome["status"],
        "execution_id": req["execution_id"],
        "records": req.get("rows"),
        "error_count": (errors or {}).get("error_count"),
        "error_summary": outcome.get("reason") or " | ".join((errors or {}).get("messages") or []) or None,
        "polls": outcome.get("polls"),
    }


def _wait_for_gate(context: df.DurableOrchestrationContext, gate_req: dict, cfg: dict):
    yield context.call_activity_with_retry("gate_enqueue", RETRY, gate_req | {"now": now_iso(context)})
    waits = 0
    while True:
        acq = yield context.call_activity_with_retry(
            "gate_try_acquire", RETRY, gate_req | {"now": now_iso(context)}
        )
        if acq["granted"]:
            return "granted"
        if acq.get("canceled"):
            return CANCELED
        # A fresh event name per wait, published in the custom status for whoever wakes us: the Durable
        # Python SDK 1.x keeps an event that arrived while nobody waited and hands it to *every* later wait
        # on that name, which would turn this wait into a busy loop of gate_try_acquire calls.
        waits += 1
        wake = f"{GATE_EVENT}_{waits}"
        context.set_custom_status(
            {
                "stage": "waiting-for-gate",
                "position": acq["position"],
                "holders": acq["holders"],
                "paused": bool(acq.get("paused")),
                "wake": wake,
            }
        )
        timer = timer_in(context, recheck_seconds(cfg["gate_recheck_seconds"], acq["position"]))
        opened = context.wait_for_external_event(wake)
        winner = yield context.task_any([opened, timer])
        if winner is opened and not timer.is_completed:
            timer.cancel()


def _start(
    context: df.DurableOrchestrationContext, req: dict, policy: PollPolicy, lease: float, recall: bool
):
    """Call ``start_import`` until it gives a final answer. The one retry layer for ImportFromPackage:

    - ``throttled`` (F&O refused: 429, or 503 with Retry-After): wait Retry-After with a durable timer and
      call again, for as long as the poll deadline allows; the gate's lease is extended over long waits.
    - ``retry`` (nothing reached ImportFromPackage: write URL or upload failed): a few short backoffs.
    """
    attempt = throttled = 0
    waited = 0.0
    while True:
        st = yield context.call_activity_with_retry(
            "start_import", RETRY, req | {"allow_recall": recall, "now": now_iso(context)}
        )
        if st["state"] == "throttled" and waited < policy.deadline:
            wait = refusal_wait(st.get("retry_after"), throttled, waited, policy)
            throttled += 1
            waited += wait
            context.set_custom_status(
                {"stage": "import-throttled", "execution_id": req["execution_id"], "retry_in": wait}
            )
            if wait > lease / 2:
                yield context.call_activity_with_retry(
                    "gate_renew", RETRY, _renew(req, context, wait + lease)
                )
            yield timer_in(context, wait)
            continue
        if st["state"] == "retry" and attempt < MAX_START_RETRIES:
            attempt += 1
            # Short enough that the permit's lease outlives the wait (start_import renews it first thing).
            yield timer_in(context, min(policy.initial * 2**attempt, lease / 2))
            continue
        return st


def _renew(req: dict, context: df.DurableOrchestrationContext, lease_seconds: float) -> dict:
    return {
        "environment": req["route"]["environment"],
        "ticket": req["instance_id"],
        "instance_id": req["instance_id"],
        "now": now_iso(context),
        "lease_seconds": lease_seconds,
    }


def _event_name(heard: dict) -> str:
    return f"{COMPLETED_EVENT}_{heard['n']}"


def _publish(context: df.DurableOrchestrationContext, status: dict, heard: dict | None) -> None:
    """Set the custom status; with events on it names the event the endpoint must raise now."""
    if heard is not None:
        heard["status"] = status
        status = status | {"event": _event_name(heard)}
    context.set_custom_status(status)


def _wait_until(context: df.DurableOrchestrationContext, due, exec_id: str, heard: dict):
    """Wait until ``due`` or a completion event for this execution; True when an event woke us.

    ``heard`` (``seen`` event keys, ``entities`` reported, ``needed`` entity count, the event number ``n``
    and its pending ``waiter``) lives across waits, so a duplicate or a partial (one entity of several)
    event goes back to waiting for the same ``due``.
    """
    while True:
        timer = context.create_timer(due)
        if heard["waiter"] is None:
            heard["waiter"] = context.wait_for_external_event(_event_name(heard))
        event = heard["waiter"]
        winner = yield context.task_any([event, timer])
        if winner is not event:
            return False  # the waiter stays: an event arriving during the check completes it
        if not timer.is_completed:
            timer.cancel()
        heard["waiter"] = None
        heard["n"] += 1
        _publish(context, heard["status"], heard)
        if _completes(event.result, exec_id, heard):
            return True


def _completes(payload, exec_id: str, heard: dict) -> bool:
    if not isinstance(payload, dict) or payload.get("execution_id") != exec_id:
        return False
    entity = str(payload.get("entity") or "").strip().lower()
    key = str(payload.get("event_id") or "") or f"{entity}|{payload.get('status')}"
    if key in heard["seen"]:
        return False
    heard["seen"].add(key)
    heard["entities"].add(entity)
    return len(heard["entities"]) >= heard["needed"]


def _import_and_poll(
    context: df.DurableOrchestrationContext,
    req: dict,
    policy: PollPolicy,
    lease: float,
    events: dict | None = None,
):
    use_events = bool((events or {}).get("enabled"))
    fallback = float((events or {}).get("fallback_seconds") or 0.0)
    heard = None
    if use_events:
        needed = max(1, len(req.get("entities") or []))
        heard = {"seen": set(), "entities": set(), "needed": needed, "n": 1, "waiter": None, "status": {}}
    _publish(context, {"stage": "importing", "execution_id": req["execution_id"]}, heard)
    st = yield from _start(context, req, policy, lease, recall=False)
    if st["state"] == "lost-gate":
        return {"status": LOST_GATE}
    if st["state"] in ("failed", "retry", "throttled"):
        return {"status": "Failed", "reason": st.get("error"), "polls": 0}

    confirmed = bool(st.get("confirmed"))
    expected = st.get("expected_seconds")
    verify_grace = min(policy.not_found_grace, VERIFY_GRACE_SECONDS)
    began = first_began = context.current_utc_datetime  # ``began`` restarts on a recall; the deadline doesn't
    lease_until = began + timedelta(seconds=lease)  # try_acquire and every check renew for ``lease``
    polls = recalls = 0
    last = None
    lease_lost = False
    last_pending_at = 0.0
    while True:
        elapsed = (context.current_utc_datetime - began).total_seconds()
        total = (context.current_utc_datetime - first_began).total_seconds()
        wait = min(policy.next_wait(polls, elapsed, expected), policy.deadline - total)
        if not confirmed and wait > 0:
            # An ambiguous start: look often enough to re-call within the short verify grace.
            wait = max(1.0, min(wait, verify_grace))
        elif use_events and wait > 0:
            # F&O tells us when it is done: polling is only the fallback, backing off from ``fallback`` by
            # the poll factor (up to the larger of it and the max interval), and the first fallback poll
            # comes that long after the usual end (not just before it).
            backoff = min(fallback * policy.factor**polls, max(policy.max_interval, fallback))
            late_first = (expected or 0.0) - elapsed + fallback if polls == 0 else 0.0
            wait = min(max(wait, backoff, late_first), policy.deadline - total)
        if wait <= 0:
            return {
                "status": "TimedOut",
                "reason": f"no terminal status after {policy.deadline / 60:.0f} minutes (last: {last})",
                "polls": polls,
                "last_status": last,
                "started": True,
            }
        if context.current_utc_datetime + timedelta(seconds=wait) > lease_until - timedelta(
            seconds=lease / 2
        ):
            # A long planned wait: keep the permit ours until just after it.
            yield context.call_activity_with_retry("gate_renew", RETRY, _renew(req, context, wait + lease))
        by_event = False
        if heard is not None:
            due = context.current_utc_datetime + timedelta(seconds=wait)
            by_event = yield from _wait_until(context, due, req["execution_id"], heard)
        else:
            yield timer_in(context, wait)
        chk = yield context.call_activity_with_retry(
            "check_import",
            RETRY,
            {
                "environment": req["route"]["environment"],
                "execution_id": req["execution_id"],
                "ticket": req["instance_id"],
                "now": now_iso(context),
            },
        )
        polls += 1
        lease_until = context.current_utc_datetime + timedelta(seconds=lease)
        last = chk["status"]
        elapsed = (context.current_utc_datetime - began).total_seconds()
        # A lost lease means another import may have been let in: keep going, but say so where operators look.
        lease_lost = lease_lost or not chk.get("lease_ok", True)
        _publish(
            context,
            {
                "stage": "polling",
                "status": last,
                "polls": polls,
                "execution_id": req["execution_id"],
                "lease_lost": lease_lost,
                **({"woken_by_event": True} if by_event else {}),
            },
            heard,
        )
        if last in TERMINAL:
            # Done by the first call: it may have ended well before, so learn a little shorter; otherwise
            # it ended between the last two calls.
            if by_event:  # F&O said so within seconds of finishing
                observed = elapsed
            else:
                observed = 0.9 * elapsed if polls == 1 and expected else (last_pending_at + elapsed) / 2
            return {
                "status": last,
                "polls": polls,
                "last_status": last,
                "started": True,
                "confirmed_start_at": began.isoformat(),
                "observed_seconds": observed,
            }
        last_pending_at = elapsed
        if last not in ("NotFound", "Unreachable"):
            confirmed = True  # F&O knows the execution: it was started
        grace = policy.not_found_grace if confirmed else verify_grace
        if last == "NotFound" and elapsed >= grace:
            if confirmed or recalls >= MAX_RECALLS:
                return {
                    "status": "Failed",
                    "reason": f"F&O has no record of execution {req['execution_id']} after {elapsed:.0f}s",
                    "polls": polls,
                    "last_status": last,
                }
            # The ambiguous import call never reached F&O: now, and only now, call it again.
            recalls += 1
            st = yield from _start(context, req, policy, lease, recall=True)
            if st["state"] == "lost-gate":
                return {"status": LOST_GATE}
            if st["state"] in ("failed", "retry", "throttled"):
                return {"status": "Failed", "reason": st.get("error"), "polls": polls}
            confirmed = bool(st.get("confirmed"))
            began = context.current_utc_datetime
            polls = 0
            last_pending_at = 0.0


def _collect_errors(context: df.DurableOrchestrationContext, req: dict):
    base = {
        "environment": req["route"]["environment"],
        "execution_id": req["execution_id"],
        "drop_id": req["drop_id"],
        "seq": req["seq"],
    }
    errors = yield context.call_activity_with_retry(
        "collect_errors", RETRY, base | {"entities": req.get("entities")}
    )
    pending = errors.pop("pending_target_keys", [])
    tries = 0
    while pending and tries < TARGET_KEY_TRIES:
        yield timer_in(context, 15 * 2**tries)
        got = yield context.call_activity_with_retry(
            "fetch_target_error_keys", RETRY, base | {"entities": pending}
        )
        errors["files"] = errors["files"] + got["files"]
        pending = got["pending"]
        tries += 1
    if pending:
        errors["messages"] = [*errors["messages"], f"target error keys not ready for: {', '.join(pending)}"]
    return errors
