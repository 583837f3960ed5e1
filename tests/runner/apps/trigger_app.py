"""Blob, timer and HTTP triggers shaped like the real app's client functions."""

from __future__ import annotations

import hashlib
import logging
import os
import threading

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
DELIVERIES: list[tuple[str, str]] = []  # (function, blob name or timer marker)
STARTS: list[str] = []
_lock = threading.Lock()
log = logging.getLogger("trigger_app")


def _source() -> func.BlobSource:
    return (
        func.BlobSource.EVENT_GRID
        if os.environ.get("INBOUND_BLOB_SOURCE", "EventGrid") == "EventGrid"
        else (func.BlobSource.LOGS_AND_CONTAINER_SCAN)
    )


@app.blob_trigger(
    arg_name="source", path="%INBOUND_CONTAINER%/{name}", connection="DATA_STORAGE", source=_source()
)
@app.durable_client_input(client_name="client")
async def on_inbound_blob(source: blob.BlobClient, client: df.DurableOrchestrationClient) -> None:
    props = source.get_blob_properties()  # an SDK client: nothing was streamed into the worker
    with _lock:
        DELIVERIES.append(("on_inbound_blob", source.blob_name))
    instance_id = "imp-" + hashlib.sha256(f"{source.blob_name}|{props.etag}".encode()).hexdigest()[:24]
    status = await client.get_status(instance_id)
    if status and status.runtime_status is not None:
        log.info("duplicate delivery of %s ignored", source.blob_name)
        return
    try:
        await client.start_new("import_blob", instance_id, {"blob": source.blob_name, "size": props.size})
    except Exception as exc:
        if "already exists" not in str(exc):
            raise
        log.info("duplicate delivery of %s ignored", source.blob_name)
        return
    with _lock:
        STARTS.append(instance_id)


@app.blob_trigger(arg_name="doc", path="streams/in-{name}.txt", connection="DATA_STORAGE")
def on_stream(doc: func.InputStream) -> None:
    text = doc.read().decode()
    with _lock:
        DELIVERIES.append(("on_stream", f"{doc.name}:{text}"))
    if "fail" in text:
        raise RuntimeError("cannot process this one")


@app.activity_trigger(input_name="item")
def measure(item: dict) -> dict:
    return {"blob": item["blob"], "size": item["size"]}


@app.orchestration_trigger(context_name="context")
def import_blob(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("measure", context.get_input()))


@app.timer_trigger(schedule="%DRAIN_SCHEDULE%", arg_name="timer", run_on_startup=False)
@app.durable_client_input(client_name="client")
async def drain(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    with _lock:
        DELIVERIES.append(("drain", "past_due" if timer.past_due else "on_time"))
    await client.start_new("import_blob", None, {"blob": "timer", "size": 0})


@app.timer_trigger(schedule="%STARTUP_SCHEDULE%", arg_name="timer", run_on_startup=True)
def warmup(timer: func.TimerRequest) -> None:
    with _lock:
        DELIVERIES.append(("warmup", "startup"))
