"""F&O's DMF import-status business event (the public D365FO-DMFImportSatusBusinessEvent extension).

Pure functions: read the payloads of one delivery (F&O's HTTPS endpoint posts the flat contract; an Event
Grid subscription posts an array of events whose ``data`` is that contract) and turn each into what the
import orchestration is told. The HTTP function (``triggers/fno_events.py``) does the I/O.

The event fires once per entity of an execution (the extension's handler runs on every
``DMFDefinitionGroupExecutionHistory`` insert), for *every* DMF import in the environment, ours or not:
an execution id that is not ours is the normal case and costs nothing (no storage is read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dmf.pipeline.ids import package_instance_from_execution

EVENT_NAME = "import_completed"  # the external event the import orchestration waits for
BUSINESS_EVENT_ID = "DMFImportStatusBusinessEvent"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
# A history record of an entity still running is no completion signal (any other status wakes the
# orchestration, which asks F&O before believing it).
PENDING = frozenset({"executing"})


class BadDelivery(ValueError):
    """The body is not a business event delivery at all (answered 400)."""


@dataclass(frozen=True)
class Notice:
    """One import-status event, reduced to what the orchestration needs (nothing secret, nothing large)."""

    execution_id: str
    instance_id: str | None  # our import orchestration, when the execution id is ours
    event_id: str
    entity: str
    status: str
    ignored: str | None = None  # why it goes nowhere: "other-event", "not-import", "pending", "unknown"

    def payload(self) -> dict[str, str]:
        return {
            "execution_id": self.execution_id,
            "event_id": self.event_id,
            "entity": self.entity,
            "status": self.status,
        }


def validation_code(body: Any, event_type_header: str | None) -> str | None:
    """Event Grid's subscription validation handshake: the code to echo back, or None."""
    if (event_type_header or "").lower() != "subscriptionvalidation" and not (
        isinstance(body, list) and any(_is_validation(e) for e in body)
    ):
        return None
    for e in body if isinstance(body, list) else [body]:
        if _is_validation(e):
            code = (e.get("data") or {}).get("validationCode")
            if isinstance(code, str) and code:
                return code
    raise BadDelivery("a subscription validation event without a validation code")


def _is_validation(e: Any) -> bool:
    return isinstance(e, dict) and e.get("eventType") == VALIDATION_EVENT


def contracts(body: Any) -> list[dict[str, Any]]:
    """The business event contracts in one delivery: the flat JSON (HTTPS endpoint), or each Event Grid
    event's ``data`` (an object, or a JSON string of one), or a list of flat contracts."""
    items = body if isinstance(body, list) else [body]
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise BadDelivery("a business event must be a JSON object")
        if "data" in item and ("eventType" in item or "dataVersion" in item or "specversion" in item):
            data = item["data"]
            if isinstance(data, str):
                try:
                    data = json.loads(data)
                except ValueError:
                    raise BadDelivery("an Event Grid event whose data is not JSON") from None
            if not isinstance(data, dict):
                raise BadDelivery("an Event Grid event whose data is not an object")
            item = data
        out.append(item)
    return out


def notice(contract: dict[str, Any]) -> Notice:
    """What one contract means for us. Field names are the extension's DataMember names."""
    exec_id = str(contract.get("ExecutionId") or "")
    status = str(contract.get("Status") or "")
    base = {
        "execution_id": exec_id,
        "instance_id": None,
        "event_id": str(contract.get("EventId") or ""),
        "entity": str(contract.get("EntityName") or ""),
        "status": status,
    }
    if str(contract.get("BusinessEventId") or "") != BUSINESS_EVENT_ID:
        return Notice(**base, ignored="other-event")
    if str(contract.get("OperationType") or "Import").lower() != "import":
        return Notice(**base, ignored="not-import")
    if status.strip().lower() in PENDING:
        return Notice(**base, ignored="pending")
    instance = package_instance_from_execution(exec_id)
    if instance is None:
        return Notice(**base, ignored="unknown")
    return Notice(**(base | {"instance_id": instance}))
