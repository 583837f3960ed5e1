"""Activities of the inbound pipeline: thin wrappers over ``dmf.pipeline``.

Each reads its plain-dict input as its payload (``dmf/pipeline/payloads.py``) once, and hands that on."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.logs import log_context
from dmf.pipeline import drops, imports
from dmf.pipeline.payloads import (
    CheckImport,
    Drop,
    FinalizeDrop,
    ImportErrors,
    ImportResult,
    PrepareItem,
    StartImport,
)
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
    drop = Drop.of(req)
    with log_context(instance_id=drop.instance_id, blob_name=drop.name):
        return drops.plan_drop(services(), drop)


@bp.activity_trigger(input_name="req")
def prepare_item(req: dict) -> dict[str, Any]:
    item = PrepareItem.of(req)
    with log_context(instance_id=item.drop_id, blob_name=item.item["source"]):
        return drops.prepare_item(services(), item)


@bp.activity_trigger(input_name="req")
def finalize_drop(req: dict) -> dict[str, Any]:
    final = FinalizeDrop.of(req)
    with log_context(instance_id=final.instance_id, blob_name=final.source):
        return drops.finalize_drop(services(), final)


@bp.activity_trigger(input_name="req")
def start_import(req: dict) -> dict[str, Any]:
    start = StartImport.of(req)
    with log_context(instance_id=start.instance_id, blob_name=start.staged):
        return imports.start_import(services(), start)


@bp.activity_trigger(input_name="req")
def check_import(req: dict) -> dict[str, Any]:
    check = CheckImport.of(req)
    with log_context(instance_id=check.ticket, execution_id=check.execution_id):
        return imports.check_import(services(), check)


@bp.activity_trigger(input_name="req")
def collect_errors(req: dict) -> dict[str, Any]:
    errors = ImportErrors.of(req)
    with log_context(instance_id=errors.drop_id, execution_id=errors.execution_id):
        return imports.collect_errors(services(), errors)


@bp.activity_trigger(input_name="req")
def fetch_target_error_keys(req: dict) -> dict[str, Any]:
    errors = ImportErrors.of(req)
    with log_context(instance_id=errors.drop_id, execution_id=errors.execution_id):
        return imports.fetch_target_error_keys(services(), errors)


@bp.activity_trigger(input_name="req")
def record_import_result(req: dict) -> dict[str, Any]:
    result = ImportResult.of(req)
    with log_context(instance_id=result.drop_id, execution_id=result.execution_id):
        return imports.record_import_result(services(), result)
