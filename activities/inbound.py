"""Activities of the inbound pipeline: thin wrappers over ``dmf.pipeline``.

Each reads its plain-dict input as its payload (``dmf/pipeline/payloads.py``) once, and hands that on."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.pipeline import drops, imports, payloads, results
from dmf.pipeline.polling import PollPolicy
from dmf.pipeline.services import run_step, services

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def pipeline_config(req: Any) -> dict[str, Any]:
    """Settings the orchestrators need, delivered through history (orchestrators may not read settings)."""
    s = services().settings
    cfg = results.PipelineConfig(
        poll=PollPolicy.from_settings(s).to_dict(),
        gate_recheck_seconds=s.gate_recheck_seconds,
        gate_lease_seconds=s.gate_lease_seconds,
        events={"enabled": s.fno_events_enabled, "fallback_seconds": s.fno_events_fallback_poll_seconds},
    )
    return payloads.to_wire(cfg)


@bp.activity_trigger(input_name="req")
def plan_drop(req: dict) -> dict[str, Any]:
    p = payloads.Drop.of(req)
    return run_step(drops.plan_drop, p, instance_id=p.instance_id, blob_name=p.name)


@bp.activity_trigger(input_name="req")
def prepare_item(req: dict) -> dict[str, Any]:
    p = payloads.PrepareItem.of(req)
    return run_step(drops.prepare_item, p, instance_id=p.drop_id, blob_name=p.item["source"])


@bp.activity_trigger(input_name="req")
def finalize_drop(req: dict) -> dict[str, Any]:
    p = payloads.FinalizeDrop.of(req)
    return run_step(drops.finalize_drop, p, instance_id=p.instance_id, blob_name=p.source)


@bp.activity_trigger(input_name="req")
def start_import(req: dict) -> dict[str, Any]:
    p = payloads.StartImport.of(req)
    return run_step(imports.start_import, p, instance_id=p.instance_id, blob_name=p.staged)


@bp.activity_trigger(input_name="req")
def check_import(req: dict) -> dict[str, Any]:
    p = payloads.CheckImport.of(req)
    return run_step(imports.check_import, p, instance_id=p.ticket, execution_id=p.execution_id)


@bp.activity_trigger(input_name="req")
def collect_errors(req: dict) -> dict[str, Any]:
    p = payloads.ImportErrors.of(req)
    return run_step(imports.collect_errors, p, instance_id=p.drop_id, execution_id=p.execution_id)


@bp.activity_trigger(input_name="req")
def fetch_target_error_keys(req: dict) -> dict[str, Any]:
    p = payloads.ImportErrors.of(req)
    return run_step(imports.fetch_target_error_keys, p, instance_id=p.drop_id, execution_id=p.execution_id)


@bp.activity_trigger(input_name="req")
def record_import_result(req: dict) -> dict[str, Any]:
    p = payloads.ImportResult.of(req)
    return run_step(imports.record_import_result, p, instance_id=p.drop_id, execution_id=p.execution_id)
