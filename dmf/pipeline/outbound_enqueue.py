"""The recurring enqueue route: a dropped blob streamed to a recurring import job (for F&O jobs that
transform files with XSLT), its message status polled, its execution and errors recorded.

Enqueue is not idempotent and F&O offers no lookup by external identifier, so the outcome row records
``EnqueueRequestedAt`` before the call and the message id after it; a retried step with a request on
record but no message id stops with a clear reason instead of enqueuing a second copy.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from dmf.fno.clients import package_api, recurring_api
from dmf.fno.errors import FnoAuthError, FnoError
from dmf.logs import log_context
from dmf.pipeline.payloads import CheckMessage, Enqueue, EnqueueResult, to_wire
from dmf.pipeline.results import Checked, Started
from dmf.pipeline.services import Services
from dmf.settings import Deployment
from dmf.storage.transfer import stream_blob

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGES = 20
STATUS_MAP = {
    "Processed": "Succeeded",
    "ProcessedWithErrors": "PartiallySucceeded",
    "PreProcessingError": "Failed",
    "PostProcessingFailed": "Failed",
}


def message_row(drop_id: str) -> str:
    return f"{drop_id}~001"


def validate_route(svc: Services, route: dict[str, Any]) -> str | None:
    """Why this route cannot enqueue, or None."""
    if not route.get("activity_id"):
        return f"route {route.get('route')!r} is in enqueue mode but names no activity_id"
    try:
        env = svc.settings.environment(route["environment"])
    except Exception as exc:
        return str(exc)
    if env.deployment is Deployment.ONPREM:
        return (
            f"route {route.get('route')!r} enqueues to {env.name!r}, an on-premises environment: the "
            "Recurring Integration API does not exist there; use a package-import route"
        )
    return None


def enqueue_source(svc: Services, req: Enqueue | dict[str, Any]) -> dict[str, Any]:
    """Stream the source blob to the route's recurring import job, once.

    ``req``: ``drop_id``, ``day``, ``route`` (ResolvedRoute dict), ``source`` (``container/name``).
    Returns ``state``: enqueued (with ``message_id``) | retry | failed.
    """
    req = Enqueue.of(req)
    route = req.route
    day, row = req.day, message_row(req.drop_id)
    problem = validate_route(svc, route)
    base = {
        "Kind": "enqueue",
        "Environment": route["environment"],
        "LegalEntity": route.get("legal_entity"),
        "Entity": route.get("entity"),
        "ActivityId": route.get("activity_id"),
        "SourceBlob": req.source,
        "InstanceId": req.instance_id,
    }
    if problem:
        svc.outcomes.upsert(day, row, {**base, "Status": "Failed", "Reason": problem})
        return to_wire(Started(state="failed", error=problem))
    existing = svc.outcomes.get(day, row) or {}
    if existing.get("MessageId"):
        return to_wire(Started(state="enqueued", message_id=existing["MessageId"]))
    if existing.get("EnqueueRequestedAt"):
        reason = (
            "an earlier enqueue attempt ended without an answer; not sent again to avoid a second message "
            f"(look for external identifier {_external_id(req)!r} in F&O's message list)"
        )
        return to_wire(Started(state="failed", error=reason))
    container, _, name = req.source.partition("/")
    blob = svc.blob(container, name)
    try:
        size = blob.get_blob_properties().size
    except ResourceNotFoundError:
        return to_wire(Started(state="failed", error=f"{req.source} no longer exists"))
    api = recurring_api(svc.settings, route["environment"])
    svc.outcomes.upsert(
        day,
        row,
        {**base, "Status": "Enqueueing", "StartedAt": datetime.now(UTC), "SizeBytes": size,
         "EnqueueRequestedAt": datetime.now(UTC)},
    )  # fmt: skip
    entity = route.get("entity") if route.get("kind") != "package" else None
    with log_context(instance_id=req.drop_id, blob_name=req.source):
        try:
            message_id = api.enqueue(
                route["activity_id"],
                stream_blob(blob),
                entity=entity,
                company=route.get("legal_entity"),
                external_id=_external_id(req),
                length=size,
            )
        except FnoError as exc:
            # No token (or F&O refused ours): the file never left, so a retry cannot enqueue it twice.
            refused = isinstance(exc, FnoAuthError) and (exc.action is None or exc.status in (401, 403))
            if refused or exc.status == 429 or (not exc.transient and exc.status is not None):
                # Refused before anything was queued: safe to try again (429) or pointless (4xx).
                svc.outcomes.upsert(day, row, {"Reason": str(exc)})
                _clear_request(svc, day, row)
                state = "retry" if exc.status == 429 or (refused and exc.transient) else "failed"
                return to_wire(Started(state=state, error=str(exc), retry_after=exc.retry_after))
            return to_wire(Started(state="failed", error=f"enqueue outcome unknown, not repeated: {exc}"))
        except AzureError as exc:
            _clear_request(svc, day, row)
            return to_wire(Started(state="retry", error=f"reading {req.source} failed: {exc}"))
    svc.outcomes.upsert(day, row, {"MessageId": message_id, "Status": "Enqueued"})
    log.info("enqueued %s as message %s", req.source, message_id)
    return to_wire(Started(state="enqueued", message_id=message_id))


def _clear_request(svc: Services, day: str, row: str) -> None:
    # The request never reached F&O's queue: forget it so a retry may enqueue.
    entity = svc.outcomes.get(day, row)
    if entity is not None and "EnqueueRequestedAt" in entity:
        from azure.data.tables import UpdateMode

        entity.pop("EnqueueRequestedAt", None)
        svc.outcomes.table.upsert_entity(entity, mode=UpdateMode.REPLACE)


def _external_id(req: Enqueue) -> str:
    """The blob name (without the container): what users search for in F&O's message list."""
    return req.source.partition("/")[2] or req.source


def check_message(svc: Services, req: CheckMessage | dict[str, Any]) -> dict[str, Any]:
    req = CheckMessage.of(req)
    api = package_api(svc.settings, req.environment)
    try:
        status = api.get_message_status(req.message_id)
    except FnoError as exc:
        return to_wire(Checked(status="Unreachable", terminal=False, error=str(exc)))
    return to_wire(Checked(status=status.value, terminal=status.is_terminal))


def record_enqueue(svc: Services, req: EnqueueResult | dict[str, Any]) -> dict[str, Any]:
    """Execution id and errors for a terminal message, the outcome row, and the result for finalize_drop."""
    req = EnqueueResult.of(req)
    route = req.route
    day, row = req.day, message_row(req.drop_id)
    message_id = req.message_id
    message_status = req.message_status
    status = req.status or STATUS_MAP.get(str(message_status), "Failed")
    execution_id = None
    messages: list[str] = []
    error_count = None
    if message_id:
        api = package_api(svc.settings, route["environment"])
        try:
            execution_id = api.get_execution_id_by_message_id(message_id)
        except FnoError as exc:
            messages.append(f"could not read the execution id: {exc}")
        if execution_id and status in ("PartiallySucceeded", "Failed"):
            try:
                errors = api.get_execution_errors(execution_id)
                error_count = len(errors)
                messages += [e.error_message for e in errors[:MAX_ERROR_MESSAGES]]
            except FnoError as exc:
                messages.append(f"could not read execution errors: {exc}")
    reason = req.reason
    if status == "Failed" and not reason and message_status:
        reason = f"F&O message status {message_status}"
    summary = " | ".join([m for m in [reason, *messages] if m]) or None
    finished = datetime.fromisoformat(req.finished_at)
    started = datetime.fromisoformat(req.started_at)
    svc.outcomes.upsert(
        day,
        row,
        {
            "Kind": "enqueue",
            "Status": status,
            "Reason": reason,
            "MessageId": message_id,
            "MessageStatus": message_status,
            "ExecutionId": execution_id,
            "ErrorCount": error_count,
            "ErrorSummary": summary,
            "PollCount": req.polls,
            "FinishedAt": finished,
            "DurationSeconds": round((finished - started).total_seconds(), 3),
            "Entity": route.get("entity"),
            "SourceBlob": req.source,
            "FileName": PurePosixPath(req.source).name,
        },
    )
    return {
        "seq": 1,
        "status": status,
        "execution_id": execution_id,
        "records": None,
        "error_count": error_count,
        "error_summary": summary,
        "message_id": message_id,
        "message_status": message_status,
        "polls": req.polls,
    }
