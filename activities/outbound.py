"""Activities of the outbound pipeline (drains, scheduled exports, enqueue route): thin wrappers over
``dmf.pipeline.outbound*``."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.logs import log_context
from dmf.pipeline import outbound, outbound_enqueue, outbound_exports
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
    with log_context(instance_id=req["run_id"]):
        outbound.record_drain_start(services(), req)
    return {"ok": True}


@bp.activity_trigger(input_name="req")
def drain_batch(req: dict) -> dict[str, Any]:
    return outbound.drain_batch(services(), req)


@bp.activity_trigger(input_name="req")
def drain_record(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["run_id"]):
        return outbound.record_drain_result(services(), req)


@bp.activity_trigger(input_name="req")
def export_start(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["run_id"], execution_id=req["execution_id"]):
        return outbound_exports.start_export(services(), req)


@bp.activity_trigger(input_name="req")
def export_check(req: dict) -> dict[str, Any]:
    with log_context(execution_id=req["execution_id"]):
        return outbound_exports.check_export(services(), req)


@bp.activity_trigger(input_name="req")
def export_fetch(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["run_id"], execution_id=req["execution_id"]):
        return outbound_exports.fetch_export(services(), req)


@bp.activity_trigger(input_name="req")
def export_record(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["run_id"], execution_id=req["execution_id"]):
        return outbound_exports.record_export(services(), req)


@bp.activity_trigger(input_name="req")
def enqueue_send(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["drop_id"], blob_name=req["source"]):
        return outbound_enqueue.enqueue_source(services(), req)


@bp.activity_trigger(input_name="req")
def enqueue_check(req: dict) -> dict[str, Any]:
    return outbound_enqueue.check_message(services(), req)


@bp.activity_trigger(input_name="req")
def enqueue_record(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["drop_id"], blob_name=req["source"]):
        return outbound_enqueue.record_enqueue(services(), req)
