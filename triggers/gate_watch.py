"""Operators' view of the import gates, and the sweeper that frees permits held by ended orchestrations.
Both go through the gate service (``dmf/gate/service.py``)."""

from __future__ import annotations

import asyncio
import json

import azure.durable_functions as df
import azure.functions as func

from dmf.gate import gate_service

bp = df.Blueprint()


async def sweep(client: df.DurableOrchestrationClient) -> dict[str, list[str]]:
    """Evict gate holders and waiters whose orchestration has ended, once F&O is done with their execution."""
    return await gate_service().sweep(client)


@bp.timer_trigger(schedule="%GATE_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=False)
@bp.durable_client_input(client_name="client")
async def gate_sweeper(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await sweep(client)


@bp.route(route="gates", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def gates(req: func.HttpRequest) -> func.HttpResponse:
    """Holders and waiters of every environment's import gate. Read-only: evicting is the sweeper's job."""
    snaps = await asyncio.to_thread(gate_service().statuses)
    return func.HttpResponse(json.dumps({"gates": snaps}, default=str), mimetype="application/json")
