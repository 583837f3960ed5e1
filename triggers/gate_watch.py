"""Operators' view of the import gates, and a sweeper that frees permits held by ended orchestrations."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func

from activities.gate import fno_execution_running, notify
from dmf.gate import stale_after
from dmf.pipeline.services import services

bp = df.Blueprint()
log = logging.getLogger(__name__)

_ENDED = {
    df.OrchestrationRuntimeStatus.Completed,
    df.OrchestrationRuntimeStatus.Failed,
    df.OrchestrationRuntimeStatus.Terminated,
    df.OrchestrationRuntimeStatus.Canceled,
}


async def sweep(client: df.DurableOrchestrationClient) -> dict[str, list[str]]:
    """Evict gate holders and waiters whose orchestration has ended (terminated, failed, crashed out).

    A holder whose F&O execution is still running keeps its permit until F&O finishes it: ending our
    orchestration does not stop F&O, and a second import meanwhile would fail.
    """
    svc = services()
    now = datetime.now(UTC)
    evicted: dict[str, list[str]] = {}
    for name in svc.settings.environments:
        gate = await asyncio.to_thread(svc.gate, name)  # creates its table on first use
        snap = await asyncio.to_thread(gate.snapshot)
        holders = {h["instance_id"]: h for h in snap["holders"]}
        ids = set(holders) | {w["instance_id"] for w in snap["waiters"]}
        ended = set()
        for instance_id in ids:
            status = await client.get_status(instance_id)
            if status is None or status.runtime_status is None or status.runtime_status in _ENDED:
                ended.add(instance_id)
        for instance_id in sorted(ended & set(holders)):
            holder = holders[instance_id]
            if await asyncio.to_thread(fno_execution_running, name, holder.get("execution_id")):
                log.warning(
                    "gate %s: %s ended but F&O execution %s still runs; keeping its permit",
                    name,
                    instance_id,
                    holder.get("execution_id"),
                )
                await asyncio.to_thread(
                    gate.renew, holder["ticket"], now, lease_seconds=svc.settings.gate_lease_seconds
                )
                ended.discard(instance_id)
        if ended:
            log.warning("gate %s: evicting ended orchestrations %s", name, sorted(ended))
            stale = stale_after(svc.settings.gate_recheck_seconds)
            wake = await asyncio.to_thread(gate.evict, ended, now, stale_after_seconds=stale)
            await notify(client, wake)
            evicted[name] = sorted(ended)
    return evicted


@bp.timer_trigger(schedule="%GATE_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=False)
@bp.durable_client_input(client_name="client")
async def gate_sweeper(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await sweep(client)


@bp.route(route="gates", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def gates(req: func.HttpRequest) -> func.HttpResponse:
    """Holders and waiters of every environment's import gate. Read-only: evicting is the sweeper's job."""
    svc = services()
    snaps = await asyncio.to_thread(lambda: [svc.gate(n).snapshot() for n in svc.settings.environments])
    return func.HttpResponse(json.dumps({"gates": snaps}, default=str), mimetype="application/json")
