"""History events and orchestrator actions in the shapes the Durable extension exchanges with the SDK.

Event type numbers, field names and the cumulative action list follow azure-functions-durable 1.7's
``HistoryEventType``, ``HistoryEvent`` and ``OrchestratorState`` (see docs in ``durable-replay.md``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"


class EventType(IntEnum):
    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16


class ActionType(IntEnum):
    CallActivity = 0
    CallActivityWithRetry = 1
    CallSubOrchestrator = 2
    CallSubOrchestratorWithRetry = 3
    ContinueAsNew = 4
    CreateTimer = 5
    WaitForExternalEvent = 6
    CallEntity = 7
    CallHttp = 8
    SignalEntity = 9
    WhenAny = 11
    WhenAll = 12


# Actions that take a sequence number in the SDK (and in DTFx); external-event waits are keyed by name.
SEQUENCED_ACTIONS = {
    ActionType.CallActivity,
    ActionType.CallActivityWithRetry,
    ActionType.CallSubOrchestrator,
    ActionType.CallSubOrchestratorWithRetry,
    ActionType.ContinueAsNew,
    ActionType.CreateTimer,
    ActionType.CallEntity,
    ActionType.CallHttp,
    ActionType.SignalEntity,
}


def iso(dt: datetime) -> str:
    """.NET-style round-trip timestamp the SDK parses with dateutil (always UTC, 'Z')."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    dt = datetime.fromisoformat(v)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def event(etype: EventType, ts: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": int(etype), "EventId": event_id, "IsPlayed": False, "Timestamp": iso(ts), **fields}


def flatten_actions(state_actions: list[Any]) -> list[dict[str, Any]]:
    """Flatten the SDK's cumulative action list (schema V1 list-of-lists or V2/V3 compound) in order."""
    out: list[dict[str, Any]] = []

    def walk(a: Any) -> None:
        if isinstance(a, list):
            for x in a:
                walk(x)
        elif isinstance(a, dict):
            at = a.get("actionType")
            if at in (ActionType.WhenAll, ActionType.WhenAny):
                for x in a.get("compoundActions", []):
                    walk(x)
            else:
                out.append(a)

    walk(state_actions)
    return out


def _digest(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


@dataclass(frozen=True)
class ActionSignature:
    """What replay must reproduce at a given step: type, target name and a fingerprint of the input."""

    action_type: int
    name: str
    input_digest: str

    @classmethod
    def of(cls, action: dict[str, Any]) -> ActionSignature:
        at = ActionType(action["actionType"])
        if at == ActionType.CreateTimer:
            name = action.get("fireAt", "")
            payload = None
        elif at == ActionType.WaitForExternalEvent:
            name, payload = action.get("externalEventName", ""), None
        elif at in (ActionType.CallEntity, ActionType.SignalEntity):
            name, payload = json.dumps(action.get("instanceId")), action.get("operation")
        elif at == ActionType.CallHttp:
            name, payload = json.dumps(action.get("httpRequest"), sort_keys=True), None
        else:
            name, payload = action.get("functionName", ""), action.get("input")
        return cls(int(at), name, _digest(payload))

    def describe(self) -> str:
        at = ActionType(self.action_type)
        if at == ActionType.CreateTimer:
            return f"a timer firing at {self.name}"
        if at == ActionType.WaitForExternalEvent:
            return f"a wait for external event '{self.name}'"
        what = {
            ActionType.CallActivity: "activity",
            ActionType.CallActivityWithRetry: "activity (with retry)",
            ActionType.CallSubOrchestrator: "sub-orchestration",
            ActionType.CallSubOrchestratorWithRetry: "sub-orchestration (with retry)",
            ActionType.ContinueAsNew: "continue-as-new",
        }.get(at, at.name)
        return f"{what} '{self.name}' (input fingerprint {self.input_digest or 'none'})"

    def to_list(self) -> list[Any]:
        return [self.action_type, self.name, self.input_digest]

    @classmethod
    def from_list(cls, v: list[Any]) -> ActionSignature:
        return cls(int(v[0]), str(v[1]), str(v[2]))


def parse_orchestrator_failure(exc: BaseException) -> tuple[str, dict[str, Any] | None]:
    """Split the SDK's failure exception into (error message, orchestrator state) when it carries one."""
    text = str(exc)
    if OUT_OF_PROC_MARKER in text:
        message, _, state_json = text.partition(OUT_OF_PROC_MARKER)
        try:
            return message, json.loads(state_json)
        except ValueError:
            return message, None
    return text or type(exc).__name__, None
