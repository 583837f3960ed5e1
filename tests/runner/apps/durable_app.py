"""A small Durable app exercising each orchestration feature the runner must support."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

CALLS: list[tuple[str, object]] = []  # (activity, input) in call order, for assertions
_calls_lock = threading.Lock()
_flaky: dict[str, int] = {}


def _record(name: str, value: object) -> None:
    with _calls_lock:
        CALLS.append((name, value))


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    _record("double", value)
    return value * 2


@app.activity_trigger(input_name="value")
def jittery_square(value: int) -> dict:
    # random delays make completions arrive out of order
    time.sleep(random.uniform(0, 0.05))
    _record("jittery_square", value)
    return {"n": value, "sq": value * value}


@app.activity_trigger(input_name="value")
async def async_echo(value: dict) -> dict:
    await asyncio.sleep(0.01)
    _record("async_echo", value)
    return {"echo": value}


@app.activity_trigger(input_name="value")
def boom(value: str) -> None:
    _record("boom", value)
    raise ValueError(f"boom on {value}")


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails twice per key, then succeeds."""
    with _calls_lock:
        _flaky[key] = _flaky.get(key, 0) + 1
        n = _flaky[key]
    _record("flaky", n)
    if n < 3:
        raise RuntimeError(f"transient failure {n}")
    return f"ok after {n}"


@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    n = context.get_input() or 3
    total = 1
    for _ in range(n):
        total = yield context.call_activity("double", total)
    return total


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    n = context.get_input()
    results = yield context.task_all([context.call_activity("jittery_square", i) for i in range(n)])
    echoed = yield context.call_activity("async_echo", {"count": len(results)})
    return {"results": results, "echo": echoed}


@app.orchestration_trigger(context_name="context")
def catches_failure(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("boom", "x")
    except Exception as exc:
        after = yield context.call_activity("double", 21)
        return {"caught": str(exc).splitlines()[0], "after": after}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def fails(context: df.DurableOrchestrationContext):
    yield context.call_activity("boom", "y")
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def retries(context: df.DurableOrchestrationContext):
    opts = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    ok = yield context.call_activity_with_retry("flaky", opts, context.instance_id)
    after = yield context.call_activity("double", 5)
    return {"flaky": ok, "after": after}


@app.orchestration_trigger(context_name="context")
def retries_exhausted(context: df.DurableOrchestrationContext):
    opts = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=2)
    try:
        yield context.call_activity_with_retry("boom", opts, "r")
    except Exception as exc:
        return {"gave_up": "boom on r" in str(exc)}
    return {"gave_up": False}


@app.orchestration_trigger(context_name="context")
def polls_with_timers(context: df.DurableOrchestrationContext):
    """Three 30-minute polling waits, as the F&O status polling does."""
    seen = []
    for i in range(3):
        context.set_custom_status({"poll": i})
        yield context.create_timer(context.current_utc_datetime + timedelta(minutes=30))
        seen.append(context.current_utc_datetime.isoformat())
    return seen


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    """Wait for an 'approve' event or give up after an hour."""
    context.set_custom_status("waiting")
    timer = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    event = context.wait_for_external_event("approve")
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        context.set_custom_status("approved")
        return {"approved": event.result}
    context.set_custom_status("timed out")
    return {"approved": None}


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    a = yield context.call_sub_orchestrator("sequence", 2)
    b = yield context.call_sub_orchestrator("sequence", 3, instance_id=f"{context.instance_id}-child")
    try:
        yield context.call_sub_orchestrator("fails")
    except Exception as exc:
        return {"a": a, "b": b, "child_failed": "boom on y" in str(exc)}
    return {"a": a, "b": b, "child_failed": False}


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    state = context.get_input() or {"n": 0, "runs": []}
    state["n"] += 1
    value = yield context.call_activity("double", state["n"])
    state["runs"].append(value)
    if state["n"] < 3:
        context.continue_as_new(state)
        return None
    return state


@app.activity_trigger(input_name="seconds")
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    _record("sleepy", seconds)
    return seconds


@app.orchestration_trigger(context_name="context")
def slow_then_branch(context: df.DurableOrchestrationContext):
    # Wrong on purpose: wall-clock time differs between the first run and the replay.
    # The first episode runs at once; the replay after 'sleepy' runs 1.5 s later and takes the other branch.
    late = datetime.now(UTC) - context.current_utc_datetime > timedelta(seconds=1)
    if late:
        yield context.call_activity("async_echo", {"late": True})
    yield context.call_activity("sleepy", 1.5)
    return "done"


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["name"], req.params.get("id"), body)
    return client.create_check_status_response(req, instance_id)


@app.route(route="status/{id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def http_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    status = await client.get_status(req.route_params["id"])
    body = {"runtimeStatus": status.runtime_status.value if status.runtime_status else None}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="ping", methods=["GET"])
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"pong {req.params.get('x', '')}")


ACTIVE = {"now": 0, "max": 0}


@app.activity_trigger(input_name="item")
def tracked(item: dict) -> int:
    """Counts how many run at once; earlier items sleep longer, so they complete last."""
    with _calls_lock:
        ACTIVE["now"] += 1
        ACTIVE["max"] = max(ACTIVE["max"], ACTIVE["now"])
    time.sleep(0.01 * (item["n"] - item["i"]))
    with _calls_lock:
        ACTIVE["now"] -= 1
    _record("tracked", item["i"])
    return item["i"]


@app.orchestration_trigger(context_name="context")
def many_tracked(context: df.DurableOrchestrationContext):
    n = context.get_input()
    done = yield context.task_all([context.call_activity("tracked", {"i": i, "n": n}) for i in range(n)])
    return done


@app.orchestration_trigger(context_name="context")
def long_wait(context: df.DurableOrchestrationContext):
    """Ten days: longer than Azure Storage's six-day timers, so the SDK splits it."""
    start = context.current_utc_datetime
    yield context.create_timer(start + timedelta(days=10))
    return (context.current_utc_datetime - start).total_seconds()


@app.activity_trigger(input_name="target")
@app.durable_client_input(client_name="client")
async def wake(target: str, client: df.DurableOrchestrationClient) -> str:
    """An activity with a durable client binding: raises an event on another instance."""
    await client.raise_event(target, "approve", {"by": "activity"})
    return target


@app.orchestration_trigger(context_name="context")
def waker(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("wake", context.get_input()))


@app.orchestration_trigger(context_name="context")
def two_events(context: df.DurableOrchestrationContext):
    a = yield context.wait_for_external_event("a")
    context.set_custom_status("got a")
    b = yield context.wait_for_external_event("b")
    return [a, b]


ORCH_ACTIVE = {"now": 0, "max": 0}


@app.orchestration_trigger(context_name="context")
def busy_orchestrator(context: df.DurableOrchestrationContext):
    # Not deterministic-safe code on purpose: it only measures how many episodes run at once.
    with _calls_lock:
        ORCH_ACTIVE["now"] += 1
        ORCH_ACTIVE["max"] = max(ORCH_ACTIVE["max"], ORCH_ACTIVE["now"])
    time.sleep(0.05)
    with _calls_lock:
        ORCH_ACTIVE["now"] -= 1
    return (yield context.call_activity("double", 1))


@app.activity_trigger(input_name="size")
def big_blob_of_text(size: int) -> str:
    return "y" * size


@app.orchestration_trigger(context_name="context")
def big_payloads(context: df.DurableOrchestrationContext):
    """Custom status of ``status_chars`` characters, then an activity output of ``output_chars``."""
    args = context.get_input()
    context.set_custom_status("x" * args["status_chars"])
    text = yield context.call_activity("big_blob_of_text", args["output_chars"])
    return len(text)
