"""Orchestration for one staged package: wait for the environment's import gate, import once, poll with
durable timers (``ImportWait``, on the one wait of ``orchestrators/waiting.py``), release the gate, then
fetch errors and record the outcome.

The gate is a Table-backed FIFO (see ``dmf/gate/``). Waiting uses ``task_any`` of a ``gate_open`` event
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

from dataclasses import replace
from datetime import timedelta

import azure.durable_functions as df

from dmf.gate import Acquire, recheck_seconds
from dmf.gate.events import wake_event
from dmf.pipeline.fno_events import EVENT_NAME as COMPLETED_EVENT
from dmf.pipeline.ids import execution_id
from dmf.pipeline.payloads import (
    ABSENT,
    CheckImport,
    GateRelease,
    GateRenew,
    GateTicket,
    ImportErrors,
    ImportResult,
    PackageImport,
    StartImport,
    to_wire,
)
from dmf.pipeline.polling import TERMINAL, PollPolicy
from dmf.pipeline.results import Checked, ErrorsFound, PipelineConfig, Recorded, Started, TargetKeys
from dmf.redact import redact
from orchestrators.retries import MAX_RECALLS, RETRY, TARGET_KEY_REFUSALS, TARGET_KEY_TRIES
from orchestrators.timing import now_iso, refusal_wait, timer_in
from orchestrators.waiting import LOST_GATE, CompletionEvents, DurableWait, WaitOutcome

bp = df.Blueprint()

# After an ambiguous ImportFromPackage (timeout, reset, 5xx without Retry-After) F&O is asked about our
# execution id; while it answers "not found" the import is re-called after this long, not after the full
# POLL_NOT_FOUND_GRACE_SECONDS (which applies to starts F&O confirmed): the gate is held meanwhile.
VERIFY_GRACE_SECONDS = 60.0
CANCELED = "canceled"
# What the outcome row keeps of how the wait ended.
RECORDED_OUTCOME = ("status", "reason", "last_status", "polls", "confirmed_start_at", "observed_seconds")
CANCELED_REASON = "canceled by an operator while waiting at the import gate (nothing was sent to F&O)"


@bp.orchestration_trigger(context_name="context")
def import_package(context: df.DurableOrchestrationContext):
    pkg = PackageImport.from_wire(context.get_input())
    exec_id = execution_id(pkg.route["data_project"], context.instance_id)
    # ``instance_id`` is the gate ticket too: one permit per package orchestration.
    req = StartImport(**vars(pkg), instance_id=context.instance_id, execution_id=exec_id)
    cfg = PipelineConfig.of((yield context.call_activity("pipeline_config", None)))
    policy = PollPolicy(**cfg.poll)
    ticket = GateTicket(
        environment=req.route["environment"],
        ticket=req.instance_id,
        instance_id=req.instance_id,
        execution_id=exec_id,
        now=now_iso(context),
    )

    started_at = now_iso(context)
    while True:
        # 1. Wait for the gate (FIFO across every orchestration importing into this environment).
        if (yield from _wait_for_gate(context, ticket, cfg)) == CANCELED:
            outcome = WaitOutcome("Canceled", CANCELED_REASON, 0)
            break
        # 2. Import and poll, holding the gate; then release it (kept while F&O may still be importing).
        try:
            wait = ImportWait(context, req, policy, cfg.gate_lease_seconds, cfg.events)
            outcome = yield from wait.run()
        except Exception as exc:  # unexpected: still free the gate and record the package
            outcome = WaitOutcome("Failed", redact(f"import step failed: {exc}"), 0)
        if outcome.status != LOST_GATE:
            break
        # Our permit lapsed before ImportFromPackage was called: queue again rather than import unguarded.
        context.set_custom_status({"stage": "gate-lost", "execution_id": exec_id})
    maybe_running = outcome.status not in TERMINAL and bool(outcome.started)
    try:
        release = GateRelease(**vars(_at_now(context, ticket)), maybe_running=maybe_running)
        yield context.call_activity_with_retry("gate_release", RETRY, to_wire(release))
    except Exception:  # the lease expires and the sweeper evicts us: the outcome still gets recorded
        context.set_custom_status({"stage": "gate-release-failed"})

    # 3. Errors (outside the gate: other imports need not wait for error files).
    errors: ErrorsFound | None = None
    if outcome.status in ("PartiallySucceeded", "Failed", "Canceled") and outcome.started:
        context.set_custom_status({"stage": "collecting-errors", "execution_id": exec_id})
        try:
            errors = yield from _collect_errors(context, req)
        except Exception as exc:  # the import happened: a missing error file must not turn it into a failure
            errors = ErrorsFound(
                error_count=None, messages=[redact(f"could not collect errors: {exc}")], files=[]
            )

    record = ImportResult(
        **{k: getattr(req, k) for k in ("drop_id", "day", "seq", "route", "execution_id")},
        **{k: getattr(outcome, k) for k in RECORDED_OUTCOME},
        started_at=started_at,
        finished_at=now_iso(context),
        errors=to_wire(errors) if errors else None,
    )
    result = Recorded.of(
        (yield context.call_activity_with_retry("record_import_result", RETRY, to_wire(record)))
    )
    context.set_custom_status({"stage": "done", "status": result.status, "execution_id": exec_id})
    return {
        "seq": req.seq,
        "status": outcome.status,
        "execution_id": exec_id,
        "records": req.rows,
        "error_count": errors.error_count if errors else None,
        "error_summary": outcome.reason or " | ".join(errors.messages if errors else []) or None,
        "polls": outcome.polls,
    }


def _at_now(context: df.DurableOrchestrationContext, ticket: GateTicket) -> GateTicket:
    return replace(ticket, now=now_iso(context))


def _wait_for_gate(context: df.DurableOrchestrationContext, ticket: GateTicket, cfg: PipelineConfig):
    yield context.call_activity_with_retry("gate_enqueue", RETRY, to_wire(_at_now(context, ticket)))
    waits = 0
    while True:
        ask = to_wire(_at_now(context, ticket))
        acq = Acquire.of((yield context.call_activity_with_retry("gate_try_acquire", RETRY, ask)))
        if acq.granted:
            return "granted"
        if acq.canceled:
            return CANCELED
        # A fresh event name per wait, published in the custom status for whoever wakes us: the Durable
        # Python SDK 1.x keeps an event that arrived while nobody waited and hands it to *every* later wait
        # on that name, which would turn this wait into a busy loop of gate_try_acquire calls.
        waits += 1
        wake = wake_event(waits)
        context.set_custom_status(
            {
                "stage": "waiting-for-gate",
                "position": acq.position,
                "holders": acq.holders,
                "paused": bool(acq.paused),
                "wake": wake,
            }
        )
        timer = timer_in(context, recheck_seconds(cfg.gate_recheck_seconds, acq.position))
        opened = context.wait_for_external_event(wake)
        winner = yield context.task_any([opened, timer])
        if winner is opened and not timer.is_completed:
            timer.cancel()


class ImportWait(DurableWait):
    """ImportFromPackage once under our execution id, then status calls, holding the environment's gate.

    The gate's permit is renewed by every start and status call, and before a wait that would outlast
    half of it (``gate_renew``); a lost lease is shown in the custom status (another import may have been
    let in). Retries of a start that reached nothing stay shorter than half the lease.
    """

    max_recalls = MAX_RECALLS

    def __init__(
        self,
        context: df.DurableOrchestrationContext,
        req: StartImport,
        policy: PollPolicy,
        lease: float,
        events: dict | None = None,
    ) -> None:
        super().__init__(context, policy)
        self.req = req
        self.execution_id = req.execution_id
        self.lease = lease
        self.lease_until = context.current_utc_datetime + timedelta(seconds=lease)
        self.lease_lost = False
        self.verify_grace = min(policy.not_found_grace, VERIFY_GRACE_SECONDS)
        if (events or {}).get("enabled"):
            needed = max(1, len(req.entities or []))
            fallback = float((events or {}).get("fallback_seconds") or 0.0)
            self.events = CompletionEvents(COMPLETED_EVENT, self.execution_id, needed, fallback)

    def start_task(self, recall: bool) -> df.Task:
        return self.context.call_activity_with_retry(
            "start_import", RETRY, to_wire(replace(self.req, allow_recall=recall, now=now_iso(self.context)))
        )

    def check_task(self) -> df.Task:
        check = CheckImport(
            environment=self.req.route["environment"],
            execution_id=self.execution_id,
            ticket=self.req.instance_id,
            now=now_iso(self.context),
        )
        return self.context.call_activity_with_retry("check_import", RETRY, to_wire(check))

    def start_status(self) -> dict:
        return {"stage": "importing", "execution_id": self.execution_id}

    def throttled_status(self, wait: float) -> dict:
        return {"stage": "import-throttled", "execution_id": self.execution_id, "retry_in": wait}

    def progress(self, chk: Checked, by_event: bool) -> dict:
        # A lost lease means another import may have been let in: keep going, but say so where operators look.
        self.lease_lost = self.lease_lost or chk.lease_ok is False
        return {
            "stage": "polling",
            "status": self.last,
            "polls": self.polls,
            "execution_id": self.execution_id,
            "lease_lost": self.lease_lost,
            **({"woken_by_event": True} if by_event else {}),
        }

    def accepted(self, st: Started) -> bool:
        return bool(st.confirmed)

    def retry_wait(self, st: Started, attempt: int) -> float:
        # Short enough that the permit's lease outlives the wait (start_import renews it first thing).
        return min(self.policy.initial * 2**attempt, self.lease / 2)

    def called(self) -> None:
        self.lease_until = self.context.current_utc_datetime + timedelta(seconds=self.lease)

    def keep_lease(self, wait: float):
        now = self.context.current_utc_datetime
        if now + timedelta(seconds=wait) > self.lease_until - timedelta(seconds=self.lease / 2):
            # A long planned wait: keep the permit ours until just after it.
            yield self.context.call_activity_with_retry(
                "gate_renew", RETRY, _renew(self.req, self.context, wait + self.lease)
            )


def _renew(req: StartImport, context: df.DurableOrchestrationContext, lease_seconds: float) -> dict:
    renew = GateRenew(
        environment=req.route["environment"],
        ticket=req.instance_id,
        instance_id=req.instance_id,
        now=now_iso(context),
        lease_seconds=lease_seconds,
    )
    return to_wire(renew)


def _collect_errors(context: df.DurableOrchestrationContext, req: StartImport):
    """``collect_errors``, then the target error-keys files F&O is still generating, a few times."""
    base = ImportErrors(
        environment=req.route["environment"],
        execution_id=req.execution_id,
        drop_id=req.drop_id,
        seq=req.seq,
        entities=req.entities,
    )
    found = yield context.call_activity_with_retry("collect_errors", RETRY, to_wire(base))
    # from_wire: a key the answer lacks stays off the recorded errors, as it always was.
    errors = ErrorsFound.from_wire(found)
    pending = errors.pending_target_keys or []
    files = errors.files
    tries = refusals = 0
    wait = 15.0
    waited = 0.0  # on refusals
    while pending and tries < TARGET_KEY_TRIES:
        yield timer_in(context, wait)
        got = yield context.call_activity_with_retry(
            "fetch_target_error_keys", RETRY, to_wire(replace(base, entities=pending))
        )
        keys = TargetKeys.of(got)
        files = files + keys.files
        pending = keys.pending
        if keys.refused and waited < TARGET_KEY_REFUSALS.deadline:  # "not now" from F&O: not a try
            wait = refusal_wait(keys.retry_after, refusals, waited, TARGET_KEY_REFUSALS)
            refusals, waited = refusals + 1, waited + wait
            continue
        tries += 1
        wait = 15.0 * 2**tries
    messages = errors.messages
    if pending:
        messages = [*messages, f"target error keys not ready for: {', '.join(pending)}"]
    return replace(errors, files=files, messages=messages, pending_target_keys=ABSENT)
