"""Activities that take, wait for and give back an environment's import gate (see ``dmf/gate.py``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from dmf.fno.clients import package_api
from dmf.fno.errors import FnoError
from dmf.gate import stale_after
from dmf.logs import log_context
from dmf.pipeline.services import services

bp = df.Blueprint()
log = logging.getLogger(__name__)

GATE_EVENT = "gate_open"


def fno_execution_running(environment: str, execution_id: str | None) -> bool:
    """Whether F&O is still running an execution (a permit must not be freed under it)."""
    if not execution_id:
        return False
    try:
        status = package_api(services().settings, environment).get_execution_summary_status(execution_id)
    except FnoError:
        return True  # can't tell: keep the permit rather than risk two imports in flight
    return status.value in ("NotRun", "Executing", "Unknown")


@bp.activity_trigger(input_name="req")
def gate_enqueue(req: dict) -> None:
    with log_context(instance_id=req["instance_id"]):
        services().gate(req["environment"]).enqueue(
            req["ticket"], req["instance_id"], datetime.fromisoformat(req["now"])
        )


@bp.activity_trigger(input_name="req")
def gate_try_acquire(req: dict) -> dict[str, Any]:
    s = services().settings
    with log_context(instance_id=req["instance_id"]):
        gate = services().gate(req["environment"])
        r = gate.try_acquire(
            req["ticket"],
            req["instance_id"],
            datetime.fromisoformat(req["now"]),
            lease_seconds=s.gate_lease_seconds,
            stale_after_seconds=stale_after(s.gate_recheck_seconds),
            execution_id=req.get("execution_id"),
            still_running=lambda h: fno_execution_running(req["environment"], h.execution_id),
        )
    return {
        "granted": r.granted,
        "position": r.position,
        "holders": r.holders,
        "paused": r.paused,
        "canceled": r.canceled,
    }


@bp.activity_trigger(input_name="req")
def gate_renew(req: dict) -> dict[str, Any]:
    """Extend the holder's lease to cover a long planned wait (e.g. a learned import duration)."""
    with log_context(instance_id=req["instance_id"]):
        ok = (
            services()
            .gate(req["environment"])
            .renew(
                req["ticket"], datetime.fromisoformat(req["now"]), lease_seconds=float(req["lease_seconds"])
            )
        )
    return {"lease_ok": ok}


@bp.activity_trigger(input_name="req")
@bp.durable_client_input(client_name="client")
async def gate_release(req: dict, client: df.DurableOrchestrationClient) -> list[str]:
    """Release, then tell the next waiters at once so none sits out its recheck interval.

    After an import whose end we did not see (timed out, failed mid-poll), the permit is kept while F&O
    still runs the execution: the sweeper or the next waiter frees it once F&O is done.
    """
    s = services().settings
    with log_context(instance_id=req["instance_id"], execution_id=req.get("execution_id")):
        gate = await asyncio.to_thread(services().gate, req["environment"])  # creates its table on first use
        now = datetime.fromisoformat(req["now"])
        # async def runs on the worker's event loop: the synchronous Table and F&O calls go to a thread.
        running = req.get("maybe_running") and await asyncio.to_thread(
            fno_execution_running, req["environment"], req.get("execution_id")
        )
        if running:
            log.warning("F&O still runs %s: keeping the import permit until it ends", req.get("execution_id"))
            await asyncio.to_thread(gate.renew, req["ticket"], now, lease_seconds=s.gate_lease_seconds)
            return []
        stale = stale_after(s.gate_recheck_seconds)
        wake = await asyncio.to_thread(gate.release, req["ticket"], now, stale_after_seconds=stale)
        await notify(client, wake)
    return wake


async def notify(
    client: df.DurableOrchestrationClient, instance_ids: list[str], reason: str = "permit free"
) -> None:
    """Wake waiters at the gate: each waits on the event name its custom status names (``wake``), a fresh
    one per wait. One that is not waiting right now is left alone: it asks the gate again before it waits."""
    for instance_id in instance_ids:
        try:
            status = await client.get_status(instance_id)
            custom = getattr(status, "custom_status", None)
            wake = custom.get("wake") if isinstance(custom, dict) else None
            if wake and str(wake).startswith(GATE_EVENT):
                await client.raise_event(instance_id, wake, {"reason": reason})
        except Exception as exc:  # the waiter may have ended; its recheck timer covers any other case
            log.info("could not wake %s: %s", instance_id, exc)
