"""Timers that start outbound work, and HTTP routes to start the same work by hand (operators, the demo).

- ``drain_timer`` (``%DRAIN_SCHEDULE%``): one ``recurring_drain`` per RECURRING_EXPORTS entry.
- ``export_timer`` (``%EXPORT_SCHEDULE%``, a tick): each EXPORT_JOBS entry whose own NCRONTAB schedule has
  come due since its last start gets a ``scheduled_export`` run.
- ``housekeeping_timer`` (``%HOUSEKEEPING_SCHEDULE%``): purge terminal orchestration histories older than
  HISTORY_RETENTION_DAYS; delete archives older than ARCHIVE_RETENTION_DAYS when that is set.

Never two runs of one drain or export: the instance id is a per-export singleton (not started while
Running/Pending) and a ledger run guard is taken before ``start_new``, so two firings racing each other
(timer + HTTP, two hosts) still start one run. The run releases its guard when it records its outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from dmf.logs import log_context
from dmf.pipeline import outbound, outbound_exports, outbound_housekeeping
from dmf.pipeline.payloads import DrainRun, ExportRun, to_wire
from dmf.pipeline.services import Services, services
from dmf.settings import ExportJob, RecurringExport
from dmf.storage.outcomes import day_key

bp = df.Blueprint()
log = logging.getLogger(__name__)

_RUNNING = {df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending}
_TERMINAL = [
    df.OrchestrationRuntimeStatus.Completed,
    df.OrchestrationRuntimeStatus.Failed,
    df.OrchestrationRuntimeStatus.Terminated,
]


ORPHANED_GUARD_GRACE = timedelta(seconds=60)


def _now() -> datetime:
    return datetime.now(UTC)


def _token(run_id: str) -> str:
    # Unique per firing: two firings in the same second (same run id) must not both own the guard.
    return f"{run_id}#{uuid.uuid4().hex[:8]}"


async def _take_guard(
    svc: Services, client: df.DurableOrchestrationClient, instance_id: str, guard: str, token: str,
    now: datetime, max_age: timedelta,
) -> str | None:  # fmt: skip
    """Start conditions for a singleton run: None when we may start, else why not."""
    status = await client.get_status(instance_id, show_input=True)
    if status is not None and status.runtime_status in _RUNNING:
        return f"{instance_id} is still {status.runtime_status.value}"
    holder = await asyncio.to_thread(lambda: svc.ledger.try_start_run(guard, token, now, max_age))
    if holder is None:
        return None
    # The guard's owner ended without releasing it (crashed or terminated run): its instance is not
    # running, so the guard is stale. Only the run that instance was started for may be cleared.
    last_input = getattr(status, "input_", None) if status is not None else None
    if isinstance(last_input, str):
        try:
            last_input = json.loads(last_input)
        except ValueError:
            last_input = None
    # The instance is not running (ended, or never started): if the guard is older than a grace that covers
    # a live firing's few calls between taking it and starting the instance, that firing died in between
    # (a host crash) and nothing runs under it.
    since = await asyncio.to_thread(lambda: svc.ledger.run_since(guard))
    orphaned = since is not None and now - since > ORPHANED_GUARD_GRACE
    if orphaned or (isinstance(last_input, dict) and last_input.get("guard_token") == holder):
        await asyncio.to_thread(lambda: svc.ledger.finish_run(guard, holder))
        if await asyncio.to_thread(lambda: svc.ledger.try_start_run(guard, token, now, max_age)) is None:
            return None
    return f"run {holder} holds the guard {guard}"


def _not_started(what: str, instance_id: str, why_not: str) -> dict[str, Any]:
    log.info("%s not started: %s", what, why_not)
    return {"started": False, "instance_id": instance_id, "reason": why_not}


async def _start_guarded(
    svc: Services,
    client: df.DurableOrchestrationClient,
    orchestrator: str,
    instance_id: str,
    run: DrainRun | ExportRun,
) -> None:
    """Start ``run``, which holds its guard; the guard goes back when the start fails (nothing would free it)."""
    try:
        await client.start_new(orchestrator, instance_id, to_wire(run))
    except Exception:
        await asyncio.to_thread(lambda: svc.ledger.finish_run(run.guard, run.guard_token))
        raise


async def start_drain(
    client: df.DurableOrchestrationClient, export: RecurringExport, now: datetime | None = None
) -> dict[str, Any]:
    """Start one drain of ``export`` unless one is running. Returns what happened (for logs and HTTP)."""
    svc = services()
    s = svc.settings
    now = now or _now()
    instance_id = outbound.drain_instance_id(export.name)
    run_id = outbound.drain_run_id(export.name, now)
    guard = f"drain:{export.name}"
    token = _token(run_id)
    # A drain stops by itself after DRAIN_MAX_SECONDS (plus its last batch); twice that means it died.
    max_age = timedelta(seconds=2 * s.drain_max_seconds + 2 * outbound.BATCH_SECONDS)
    with log_context(instance_id=instance_id):
        why_not = await _take_guard(svc, client, instance_id, guard, token, now, max_age)
        if why_not:
            return _not_started(f"drain of {export.name}", instance_id, why_not)
        run = DrainRun(
            export=export.model_dump(),
            run_id=run_id,
            day=day_key(now),
            max_messages=s.drain_max_messages,
            max_seconds=s.drain_max_seconds,
            guard=guard,
            guard_token=token,
        )
        await _start_guarded(svc, client, "recurring_drain", instance_id, run)
        log.info("started drain %s of %s", run_id, export.name)
        return {"started": True, "instance_id": instance_id, "run_id": run_id}


async def start_export(
    client: df.DurableOrchestrationClient,
    job: ExportJob,
    due: datetime,
    now: datetime | None = None,
    *,
    manual: bool = False,
) -> dict[str, Any]:
    """Start one run of an export job for the scheduled time ``due`` unless its previous run is going."""
    svc = services()
    now = now or _now()
    instance_id = outbound_exports.export_instance_id(job.name)
    run_id = outbound_exports.export_run_id(job.name, due)
    guard = f"export:{job.name}"
    token = _token(run_id)
    max_age = outbound_exports.guard_max_age(svc.settings.poll_deadline_minutes)
    with log_context(instance_id=instance_id, data_project=job.data_project):
        why_not = await _take_guard(svc, client, instance_id, guard, token, now, max_age)
        if not why_not and not manual:
            last = await asyncio.to_thread(lambda: outbound_exports.export_schedule(svc).last_due(job.name))
            if last is not None and last >= due:  # another firing started this very time already
                await asyncio.to_thread(lambda: svc.ledger.finish_run(guard, token))
                why_not = f"the run for {due.isoformat()} was already started"
        if why_not:
            return _not_started(f"export {job.name}", instance_id, why_not)
        run = ExportRun(
            job=job.model_dump(),
            run_id=run_id,
            day=day_key(due),
            execution_id=outbound_exports.export_execution_id(job.data_project, run_id),
            package_name=outbound_exports.package_name(job, due),
            guard=guard,
            guard_token=token,
        )
        await _start_guarded(svc, client, "scheduled_export", instance_id, run)
        # Only a started run moves the schedule on; a skipped time is picked up by the next tick.
        await asyncio.to_thread(
            lambda: outbound_exports.export_schedule(svc).mark_started(job.name, due, run_id)
        )
        log.info("started export %s of %s", run_id, job.name)
        return {"started": True, "instance_id": instance_id, "run_id": run_id}


async def drain_all(client: df.DurableOrchestrationClient, now: datetime | None = None) -> list[dict]:
    return [await start_drain(client, e, now) for e in services().settings.recurring_exports]


async def export_tick(client: df.DurableOrchestrationClient, now: datetime | None = None) -> list[dict]:
    now = now or _now()
    due_jobs = await asyncio.to_thread(outbound_exports.due_jobs, services(), now)
    return [await start_export(client, job, due, now) for job, due in due_jobs]


async def housekeeping(client: df.DurableOrchestrationClient, now: datetime | None = None) -> dict[str, Any]:
    svc = services()
    now = now or svc.now()  # the app's clock: tests move it instead of sleeping
    cutoff = outbound_housekeeping.history_cutoff(now, svc.settings.history_retention_days)
    purged = await client.purge_instance_history_by(
        created_time_from=outbound_housekeeping.EPOCH, created_time_to=cutoff, runtime_status=_TERMINAL
    )
    archives = await asyncio.to_thread(outbound_housekeeping.purge_archives, svc, now)
    result = {"instances_purged": getattr(purged, "instances_deleted", None), "archives_deleted": archives}
    # Outcome and ledger rows past OUTCOME_RETENTION_DAYS (learned durations and run guards are kept).
    result |= await asyncio.to_thread(outbound_housekeeping.purge_expired_rows, svc, now)
    log.info("housekeeping: %s", result)
    return result


# -- timers ---------------------------------------------------------------------------------------------


@bp.timer_trigger(schedule="%DRAIN_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def drain_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await drain_all(client)


@bp.timer_trigger(schedule="%EXPORT_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def export_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await export_tick(client)


@bp.timer_trigger(
    schedule="%HOUSEKEEPING_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True
)
@bp.durable_client_input(client_name="client")
async def housekeeping_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await housekeeping(client)


# -- by hand ----------------------------------------------------------------------------------------------


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


def _named(items: list, name: str) -> Any:
    """The configured item (recurring export, export job) named ``name``, case-insensitively, or None."""
    return next((i for i in items if i.name.lower() == name.lower()), None)


async def _started(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, item: Any, missing: str, start: Any
) -> func.HttpResponse:
    """Answer a start-by-hand route: 404 ``missing`` without ``item``; else the standard Durable payload
    (statusQueryGetUri and friends, for the caller to follow), or 409 saying why nothing started."""
    if item is None:
        return _json({"error": missing}, 404)
    res = await start(item)
    if res["started"]:
        return client.create_check_status_response(req, res["instance_id"])
    return _json(res, 409)


@bp.route(route="outbound/drains/{name}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def drain_now(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a drain of one configured recurring export now (same guards as the timer)."""
    name = req.route_params.get("name", "")
    export = _named(services().settings.recurring_exports, name)
    missing = f"no recurring export named {name!r} in RECURRING_EXPORTS"
    return await _started(req, client, export, missing, lambda e: start_drain(client, e))


@bp.route(route="outbound/exports/{name}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def export_now(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Run one configured export job now, outside its schedule (same no-overlap guards)."""
    name = req.route_params.get("name", "")
    job = _named(services().settings.export_jobs, name)
    now = _now()
    missing = f"no export job named {name!r} in EXPORT_JOBS"
    return await _started(req, client, job, missing, lambda j: start_export(client, j, now, now, manual=True))
