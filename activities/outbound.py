"""Activities of the outbound pipeline (drains, scheduled exports, enqueue route): thin wrappers over
``dmf.pipeline.outbound*``. Each reads its plain-dict input as its payload (``dmf/pipeline/payloads.py``)
once, and hands that on."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.logs import log_context
from dmf.pipeline import outbound, outbound_enqueue, outbound_exports
from dmf.pipeline.payloads import (
    CheckExport,
    CheckMessage,
    DrainBatch,
    DrainResult,
    DrainStart,
    Enqueue,
    EnqueueResult,
    ExportPackage,
    ExportResult,
    StartExport,
)
from dmf.pipeline.polling import PollPolicy
from dmf.pipeline.services import services

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def outbound_config(req: Any) -> dict[str, Any]:
    """Settings the outbound orchestrators need, delivered through history."""
    s = services().settings
    return {
        "poll": PollPolicy.from_settings(s).to_dict(),
        "batch_messages": outbound.BATCH_MESSAGES,
        "batch_seconds": outbound.BATCH_SECONDS,
        "workers": outbound.DEFAULT_WORKERS,
    }


@bp.activity_trigger(input_name="req")
def drain_start(req: dict) -> dict[str, Any]:
    start = DrainStart.of(req)
    with log_context(instance_id=start.run_id):
        outbound.record_drain_start(services(), start)
    return {"ok": True}


@bp.activity_trigger(input_name="req")
def drain_batch(req: dict) -> dict[str, Any]:
    return outbound.drain_batch(services(), DrainBatch.of(req))


@bp.activity_trigger(input_name="req")
def drain_record(req: dict) -> dict[str, Any]:
    result = DrainResult.of(req)
    with log_context(instance_id=result.run_id):
        return outbound.record_drain_result(services(), result)


@bp.activity_trigger(input_name="req")
def export_start(req: dict) -> dict[str, Any]:
    start = StartExport.of(req)
    with log_context(instance_id=start.run_id, execution_id=start.execution_id):
        return outbound_exports.start_export(services(), start)


@bp.activity_trigger(input_name="req")
def export_check(req: dict) -> dict[str, Any]:
    check = CheckExport.of(req)
    with log_context(execution_id=check.execution_id):
        return outbound_exports.check_export(services(), check)


@bp.activity_trigger(input_name="req")
def export_fetch(req: dict) -> dict[str, Any]:
    fetch = ExportPackage.of(req)
    with log_context(instance_id=fetch.run_id, execution_id=fetch.execution_id):
        return outbound_exports.fetch_export(services(), fetch)


@bp.activity_trigger(input_name="req")
def export_record(req: dict) -> dict[str, Any]:
    result = ExportResult.of(req)
    with log_context(instance_id=result.run_id, execution_id=result.execution_id):
        return outbound_exports.record_export(services(), result)


@bp.activity_trigger(input_name="req")
def enqueue_send(req: dict) -> dict[str, Any]:
    send = Enqueue.of(req)
    with log_context(instance_id=send.drop_id, blob_name=send.source):
        return outbound_enqueue.enqueue_source(services(), send)


@bp.activity_trigger(input_name="req")
def enqueue_check(req: dict) -> dict[str, Any]:
    return outbound_enqueue.check_message(services(), CheckMessage.of(req))


@bp.activity_trigger(input_name="req")
def enqueue_record(req: dict) -> dict[str, Any]:
    result = EnqueueResult.of(req)
    with log_context(instance_id=result.drop_id, blob_name=result.source):
        return outbound_enqueue.record_enqueue(services(), result)
