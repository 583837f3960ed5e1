"""Activities of the inbound pipeline: thin wrappers over ``dmf.pipeline``."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.logs import log_context
from dmf.pipeline import drops, imports
from dmf.pipeline.polling import PollPolicy
from dmf.pipeline.services import services

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def pipeline_config(req: Any) -> dict[str, Any]:
    """Settings the orchestrators need, delivered through history (orchestrators may not read settings)."""
    s = services().settings
    return {
        "poll": PollPolicy.from_settings(s).to_dict(),
        "gate_recheck_seconds": s.gate_recheck_seconds,
        "gate_lease_seconds": s.gate_lease_seconds,
        "events": {
            "enabled": s.fno_events_enabled,
            "fallback_seconds": s.fno_events_fallback_poll_seconds,
        },
    }


@bp.activity_trigger(input_name="req")
def plan_drop(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["instance_id"], blob_name=req["name"]):
        return drops.plan_drop(services(), req)


@bp.activity_trigger(input_name="req")
def prepare_item(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["drop_id"], blob_name=req["item"]["source"]):
        return drops.prepare_item(services(), req)


@bp.activity_trigger(input_name="req")
def finalize_drop(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["instance_id"], blob_name=req["source"]):
        return drops.finalize_drop(services(), req)


@bp.activity_trigger(input_name="req")
def start_import(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["instance_id"], blob_name=req["staged"]):
        return imports.start_import(services(), req)


@bp.activity_trigger(input_name="req")
def check_import(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["ticket"], execution_id=req["execution_id"]):
        return imports.check_import(services(), req)


@bp.activity_trigger(input_name="req")
def collect_errors(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["drop_id"], execution_id=req["execution_id"]):
        return imports.collect_errors(services(), req)


@bp.activity_trigger(input_name="req")
def fetch_target_error_keys(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["drop_id"], execution_id=req["execution_id"]):
        return imports.fetch_target_error_keys(services(), req)


@bp.activity_trigger(input_name="req")
def record_import_result(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["drop_id"], execution_id=req["execution_id"]):
        return imports.record_import_result(services(), req)
