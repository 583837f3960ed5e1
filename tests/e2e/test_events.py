"""Pushed completion end to end: the emulator posts F&O's DMF import-status business event to the app's
``/api/fno/events`` (function key), the app raises it to the waiting import orchestration, which asks F&O
once and records the outcome. Virtual clock: an import of ten F&O minutes takes a few real seconds.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest

from dmf.pipeline.ids import package_instance_from_execution
from local.fno_emulator import EmulatorConfig
from local.fno_emulator.config import Timings
from tests.e2e_support import Stack, customer_groups_package

IMPORT_SECONDS = 600.0  # F&O's import takes ten minutes (plus 1 s not found and 2 s NotRun)
NAME = "USMF/CustomerGroups-Import/groups.zip"


def _stack(azurite, unique_name: str, events: bool) -> Stack:
    cfg = EmulatorConfig(timings=Timings(import_base_seconds=IMPORT_SECONDS))
    settings = {"FNO_EVENTS_ENABLED": "true", "FNO_EVENTS_FALLBACK_POLL_SECONDS": "900"} if events else {}
    s = Stack(azurite, unique_name, emulator_config=cfg, **settings).start()
    s.enable_business_events()  # the emulator posts either way: with events off the app answers 404
    return s


@pytest.fixture
def events_on(azurite, unique_name):
    s = _stack(azurite, unique_name, events=True)
    try:
        yield s
    finally:
        s.stop()
    assert s.loop_blocks == [], "client functions blocked the event loop"


@pytest.fixture
def events_off(azurite, unique_name):
    s = _stack(azurite, unique_name + "off", events=False)
    try:
        yield s
    finally:
        s.stop()


def _import(stack: Stack) -> tuple[dict, dict]:
    (execution,) = [e for e in stack.emu.admin.executions() if e["kind"] == "import"]
    (row,) = [r for r in stack.outcomes() if r.get("Kind") == "package"]
    return execution, row


def _delay(execution: dict, row: dict) -> float:
    return (row["FinishedAt"] - datetime.fromisoformat(execution["endAt"])).total_seconds()


def _status_calls(stack: Stack) -> int:
    return len(stack.emu.admin.calls("GetExecutionSummaryStatus"))


def _post(
    stack: Stack, body: object, key: str | None = None, headers: dict | None = None
) -> tuple[int, dict]:
    code = stack.runner.function_key if key is None else key
    req = urllib.request.Request(
        f"{stack.runner.http_base_url}/api/fno/events?code={code}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # nosec B310 # the local runner
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _contract(execution_id: str, **kw: object) -> dict:
    return {
        "BusinessEventId": "DMFImportStatusBusinessEvent",
        "EventId": "7B1C2D3E-0000-4000-8000-000000000001",
        "ExecutionId": execution_id,
        "EntityName": "Customer groups",
        "LegalEntity": "USMF",
        "OperationType": "Import",
        "ProjectName": "CustomerGroups-Import",
        "Status": "Succeeded",
    } | kw


def test_event_arrives_outcome_within_seconds_with_one_status_call(events_on: Stack) -> None:
    events_on.drop(NAME, customer_groups_package(["E1", "E2"]))
    events_on.settle()
    execution, row = _import(events_on)
    assert row["Status"] == "Succeeded", row
    assert 0 <= _delay(execution, row) < 5, (execution["endAt"], row["FinishedAt"])
    # no poll before the event (the fallback is 900 s away): F&O is asked once, when the event came
    assert _status_calls(events_on) == 1
    sent = events_on.emu.admin.business_events_sent()
    assert [(s["entity"], s["status"], s["http_status"]) for s in sent] == [
        ("Customer groups", "Succeeded", 200)
    ]
    assert sent[0]["response"]["results"][0]["result"] == "raised"
    # learned from the event: the observed duration is the import's real one (within the event's seconds)
    assert abs(row["ImportSeconds"] - (IMPORT_SECONDS + 3)) < 5


def test_events_off_polls_as_before(events_off: Stack) -> None:
    events_off.drop(NAME, customer_groups_package(["F1"]))
    events_off.settle()
    execution, row = _import(events_off)
    assert row["Status"] == "Succeeded"
    # the polling schedule (5 s, doubling): 5, 15, 35, 75, 155, 315, 635 s → seen 32 s after F&O finished
    assert _status_calls(events_off) == 7
    assert _delay(execution, row) > 5
    sent = events_off.emu.admin.business_events_sent()
    assert [s["http_status"] for s in sent] == [404]  # the endpoint says events are not enabled


def test_unknown_duplicate_premature_and_late_events_are_ignored(events_on: Stack) -> None:
    stack = events_on
    # Not ours (another tool's import) and ours in shape but no such orchestration: 200, nothing raised.
    code, body = _post(stack, _contract("CustomerGroups-Import-2026-11-25_08-00-00-abc"))
    assert (code, body["results"][0]["result"]) == (200, "unknown")
    code, body = _post(stack, _contract("CustomerGroups-Import-drop-" + "0" * 32 + "-p001"))
    assert (code, body["results"][0]["result"]) == (200, "unknown")
    code, body = _post(stack, {"BusinessEventId": "SomethingElse", "ExecutionId": "x"})
    assert body["results"][0]["result"] == "other-event"
    assert _post(stack, {"ExecutionId": "x"}, key="wrong")[0] == 401

    with stack.runner.hold_clock():  # F&O's ten minutes do not pass meanwhile
        stack.drop(NAME, customer_groups_package(["D1"]))
        deadline = time.monotonic() + 60
        while not stack.emu.admin.executions() and time.monotonic() < deadline:
            time.sleep(0.05)
        exec_id = stack.emu.admin.executions()[0]["executionId"]
        instance = package_instance_from_execution(exec_id)
        assert instance is not None
        while time.monotonic() < deadline:
            st = stack.runner.get_status(instance) or {}
            if (st.get("customStatus") or {}).get("stage") == "importing" and not stack.runner.engine.busy:
                break
            time.sleep(0.05)
        # A premature "Succeeded" (F&O still executing) wakes it: one status call, then it waits again.
        premature = _contract(exec_id)
        assert _post(stack, premature)[1]["results"][0]["result"] == "raised"
        _wait_for_calls(stack, 1)
        # The same event again (F&O retried the delivery): raised, but the orchestration ignores it.
        assert _post(stack, premature)[1]["results"][0]["result"] == "raised"
        time.sleep(1.0)
        assert _status_calls(stack) == 1
    stack.settle()
    execution, row = _import(stack)
    assert row["Status"] == "Succeeded" and _delay(execution, row) < 5
    assert _status_calls(stack) == 2  # the premature wake-up and the real event: never the duplicate
    # Late: the emulator's real event delivered again after the orchestration finished.
    code, body = _post(stack, _contract(exec_id, EventId="7B1C2D3E-0000-4000-8000-000000000009"))
    assert (code, body["results"][0]["result"]) == (200, "late")
    assert _status_calls(stack) == 2
    assert _import(stack)[1]["Status"] == "Succeeded"


def _wait_for_calls(stack: Stack, n: int) -> None:
    deadline = time.monotonic() + 30
    while _status_calls(stack) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _status_calls(stack) == n


def test_event_grid_validation_handshake_and_delivery_shape(events_on: Stack) -> None:
    code, body = _post(
        events_on,
        [
            {
                "id": "1",
                "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
                "dataVersion": "1",
            }
        ],
        headers={"aeg-event-type": "SubscriptionValidation"},
    )
    assert (code, body) == (200, {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    code, body = _post(
        events_on,
        [
            {
                "id": "2",
                "eventType": "DMFImportStatusBusinessEvent",
                "dataVersion": "1",
                "data": _contract("x-1"),
            }
        ],
        headers={"aeg-event-type": "Notification"},
    )
    assert (code, body["results"][0]["result"]) == (200, "unknown")
