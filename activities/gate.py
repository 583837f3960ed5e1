"""Activities that take, wait for and give back an environment's import gate: thin wrappers over the gate
service (``dmf/gate/service.py``), which holds every gate operation."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from dmf.gate import gate_service
from dmf.logs import log_context

bp = df.Blueprint()


def _now(req: dict) -> datetime:
    return datetime.fromisoformat(req["now"])


@bp.activity_trigger(input_name="req")
def gate_enqueue(req: dict) -> None:
    with log_context(instance_id=req["instance_id"]):
        gate_service().enqueue(req["environment"], req["ticket"], req["instance_id"], _now(req))


@bp.activity_trigger(input_name="req")
def gate_try_acquire(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["instance_id"]):
        got = gate_service().try_acquire(
            req["environment"],
            req["ticket"],
            req["instance_id"],
            _now(req),
            execution_id=req.get("execution_id"),
        )
    return got.to_dict()


@bp.activity_trigger(input_name="req")
def gate_renew(req: dict) -> dict[str, Any]:
    """Extend the holder's lease to cover a long planned wait (e.g. a learned import duration)."""
    with log_context(instance_id=req["instance_id"]):
        ok = gate_service().renew(
            req["environment"], req["ticket"], _now(req), lease_seconds=float(req["lease_seconds"])
        )
    return {"lease_ok": ok}


@bp.activity_trigger(input_name="req")
@bp.durable_client_input(client_name="client")
async def gate_release(req: dict, client: df.DurableOrchestrationClient) -> list[str]:
    """Release (kept while F&O may still run the execution), then hand over to the next waiters at once."""
    with log_context(instance_id=req["instance_id"], execution_id=req.get("execution_id")):
        gates = gate_service()
        # async def runs on the worker's event loop: the synchronous Table and F&O calls go to a thread.
        wake = await asyncio.to_thread(
            gates.release,
            req["environment"],
            req["ticket"],
            _now(req),
            execution_id=req.get("execution_id"),
            maybe_running=bool(req.get("maybe_running")),
        )
        await gates.hand_over(client, wake)
    return wake
