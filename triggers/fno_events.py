"""Pushed completion: F&O's DMF import-status business event → the waiting import orchestration.

``POST /api/fno/events`` is FUNCTION-level: F&O's HTTPS endpoint keeps the whole URL (with ``?code=<key>``)
in a Key Vault secret, and an Event Grid webhook subscription carries the same URL, so the key never
needs a header. Both deliveries are accepted: the flat contract (HTTPS endpoint) and Event Grid's array
(with its ``SubscriptionValidation`` handshake). docs/INBOUND.md ("Pushed completion") says why HTTPS.

An execution id maps to its orchestration without any lookup (``package_instance_from_execution``); the
event is raised only while that orchestration is importing or polling *this* execution (its custom
status names it). Anything else — another tool's import, an unknown id, a duplicate, a late event after
the orchestration moved on — is answered 200 and ignored, so F&O never retries it. The orchestration
treats the event as a wake-up only: it asks F&O once for the execution's status before believing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from dmf.pipeline.fno_events import EVENT_NAME, BadDelivery, Notice, contracts, notice, validation_code
from dmf.settings import SettingsError, get_settings

bp = df.Blueprint()
log = logging.getLogger(__name__)

# Stages of ``import_package`` in which it may be waiting for this execution's completion.
_WAITING_STAGES = frozenset({"importing", "import-throttled", "polling"})
_RUNNING = {df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending}


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.route(route="fno/events", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def fno_business_event(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    try:
        enabled = (await asyncio.to_thread(get_settings)).fno_events_enabled
    except SettingsError:
        return _json({"error": "the app is misconfigured: see /api/health"}, 500)
    try:
        body = req.get_json()
    except ValueError:
        return _json({"error": "the body is not JSON"}, 400)
    try:
        code = validation_code(body, req.headers.get("aeg-event-type"))
        if code is not None:  # Event Grid's handshake when a webhook subscription is created
            return _json({"validationResponse": code})
        if not enabled:
            return _json({"error": "business events are not enabled (FNO_EVENTS_ENABLED)"}, 404)
        notices = [notice(c) for c in contracts(body)]
    except BadDelivery as exc:
        return _json({"error": str(exc)}, 400)
    results = [await _deliver(client, n) for n in notices]
    return _json({"results": results})


async def _deliver(client: df.DurableOrchestrationClient, n: Notice) -> dict[str, Any]:
    out: dict[str, Any] = {"execution_id": n.execution_id, "entity": n.entity}
    if n.ignored or n.instance_id is None:
        return out | {"result": n.ignored or "unknown"}
    status = await client.get_status(n.instance_id)
    if status is None or status.runtime_status is None:
        return out | {"result": "unknown"}
    custom = status.custom_status if isinstance(status.custom_status, dict) else {}
    name = custom.get("event")
    if (
        status.runtime_status not in _RUNNING
        or custom.get("execution_id") != n.execution_id
        or custom.get("stage") not in _WAITING_STAGES
        or not isinstance(name, str)
        or not name.startswith(EVENT_NAME)
    ):
        log.info("late business event for %s ignored (%s)", n.execution_id, custom.get("stage"))
        return out | {"result": "late"}
    try:
        # the name the orchestration listens on now (``import_completed_<n>``, see import_package.py)
        await client.raise_event(n.instance_id, name, n.payload())
    except Exception as exc:  # it finished meanwhile (410) or vanished (404): the event is late
        log.info("business event for %s not raised: %s", n.execution_id, type(exc).__name__)
        return out | {"result": "late"}
    log.info("business event for %s (%s, %s) raised", n.execution_id, n.entity, n.status)
    return out | {"result": "raised"}
