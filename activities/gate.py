"""Activities that take, wait for and give back an environment's import gate: thin wrappers over the gate
service (``dmf/gate/service.py``), which holds every gate operation. Inputs are ``dmf.pipeline.payloads``'
gate payloads; ``gate_try_acquire`` answers an ``Acquire`` on the wire."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from dmf.gate import gate_service
from dmf.logs import log_context
from dmf.pipeline.payloads import GateRelease, GateRenew, GateTicket, to_wire

bp = df.Blueprint()


def _now(p: GateTicket) -> datetime:
    return datetime.fromisoformat(p.now)


@bp.activity_trigger(input_name="req")
def gate_enqueue(req: dict) -> None:
    p = GateTicket.of(req)
    with log_context(instance_id=p.instance_id):
        gate_service().enqueue(p.environment, p.ticket, p.instance_id, _now(p))


@bp.activity_trigger(input_name="req")
def gate_try_acquire(req: dict) -> dict[str, Any]:
    p = GateTicket.of(req)
    with log_context(instance_id=p.instance_id):
        got = gate_service().try_acquire(
            p.environment, p.ticket, p.instance_id, _now(p), execution_id=p.execution_id
        )
    return to_wire(got)


@bp.activity_trigger(input_name="req")
def gate_renew(req: dict) -> dict[str, Any]:
    """Extend the holder's lease to cover a long planned wait (e.g. a learned import duration)."""
    p = GateRenew.of(req)
    with log_context(instance_id=p.instance_id):
        ok = gate_service().renew(p.environment, p.ticket, _now(p), lease_seconds=float(p.lease_seconds))
    return {"lease_ok": ok}


@bp.activity_trigger(input_name="req")
@bp.durable_client_input(client_name="client")
async def gate_release(req: dict, client: df.DurableOrchestrationClient) -> list[str]:
    """Release (kept while F&O may still run the execution), then hand over to the next waiters at once."""
    p = GateRelease.of(req)
    with log_context(instance_id=p.instance_id, execution_id=p.execution_id):
        gates = gate_service()
        # async def runs on the worker's event loop: the synchronous Table and F&O calls go to a thread.
        wake = await asyncio.to_thread(
            gates.release,
            p.environment,
            p.ticket,
            _now(p),
            execution_id=p.execution_id,
            maybe_running=bool(p.maybe_running),
        )
        await gates.hand_over(client, wake)
    return wake
