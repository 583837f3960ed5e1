"""Activities of the outbound pipeline (drains, scheduled exports, enqueue route): thin wrappers over
``dmf.pipeline.outbound*``. Each reads its plain-dict input as its payload (``dmf/pipeline/payloads.py``)
once, and hands that on."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.pipeline import outbound, outbound_enqueue, outbound_exports, payloads, results
from dmf.pipeline.polling import PollPolicy
from dmf.pipeline.services import run_step, services

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def outbound_config(req: Any) -> dict[str, Any]:
    """Settings the outbound orchestrators need, delivered through history."""
    cfg = results.OutboundConfig(
        poll=PollPolicy.from_settings(services().settings).to_dict(),
        batch_messages=outbound.BATCH_MESSAGES,
        batch_seconds=outbound.BATCH_SECONDS,
        workers=outbound.DEFAULT_WORKERS,
    )
    return payloads.to_wire(cfg)


@bp.activity_trigger(input_name="req")
def drain_start(req: dict) -> dict[str, Any]:
    p = payloads.DrainStart.of(req)
    run_step(outbound.record_drain_start, p, instance_id=p.run_id)
    return {"ok": True}


@bp.activity_trigger(input_name="req")
def drain_batch(req: dict) -> dict[str, Any]:
    return outbound.drain_batch(services(), payloads.DrainBatch.of(req))


@bp.activity_trigger(input_name="req")
def drain_record(req: dict) -> dict[str, Any]:
    p = payloads.DrainResult.of(req)
    return run_step(outbound.record_drain_result, p, instance_id=p.run_id)


@bp.activity_trigger(input_name="req")
def export_start(req: dict) -> dict[str, Any]:
    p = payloads.StartExport.of(req)
    return run_step(outbound_exports.start_export, p, instance_id=p.run_id, execution_id=p.execution_id)


@bp.activity_trigger(input_name="req")
def export_check(req: dict) -> dict[str, Any]:
    p = payloads.CheckExport.of(req)
    return run_step(outbound_exports.check_export, p, execution_id=p.execution_id)


@bp.activity_trigger(input_name="req")
def export_fetch(req: dict) -> dict[str, Any]:
    p = payloads.ExportPackage.of(req)
    return run_step(outbound_exports.fetch_export, p, instance_id=p.run_id, execution_id=p.execution_id)


@bp.activity_trigger(input_name="req")
def export_record(req: dict) -> dict[str, Any]:
    p = payloads.ExportResult.of(req)
    return run_step(outbound_exports.record_export, p, instance_id=p.run_id, execution_id=p.execution_id)


@bp.activity_trigger(input_name="req")
def enqueue_send(req: dict) -> dict[str, Any]:
    p = payloads.Enqueue.of(req)
    return run_step(outbound_enqueue.enqueue_source, p, instance_id=p.drop_id, blob_name=p.source)


@bp.activity_trigger(input_name="req")
def enqueue_check(req: dict) -> dict[str, Any]:
    return outbound_enqueue.check_message(services(), payloads.CheckMessage.of(req))


@bp.activity_trigger(input_name="req")
def enqueue_record(req: dict) -> dict[str, Any]:
    p = payloads.EnqueueResult.of(req)
    return run_step(outbound_enqueue.record_enqueue, p, instance_id=p.drop_id, blob_name=p.source)
