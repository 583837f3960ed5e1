"""Activities of the inbound pipeline: thin wrappers over ``dmf.pipeline``.

Each reads its plain-dict input as its payload (``dmf/pipeline/payloads.py``) once, and hands that on."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from activities.steps import step_activity
from dmf.pipeline import drops, imports, payloads, results
from dmf.pipeline.polling import PollPolicy
from dmf.pipeline.services import services

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


# name, input payload, step, the log fields
step_activity(
    bp,
    "plan_drop",
    payloads.Drop,
    drops.plan_drop,
    lambda p: {"instance_id": p.instance_id, "blob_name": p.name},
)
step_activity(
    bp,
    "prepare_item",
    payloads.PrepareItem,
    drops.prepare_item,
    lambda p: {"instance_id": p.drop_id, "blob_name": p.item["source"]},
)
step_activity(
    bp,
    "finalize_drop",
    payloads.FinalizeDrop,
    drops.finalize_drop,
    lambda p: {"instance_id": p.instance_id, "blob_name": p.source},
)
step_activity(
    bp,
    "start_import",
    payloads.StartImport,
    imports.start_import,
    lambda p: {"instance_id": p.instance_id, "blob_name": p.staged},
)
step_activity(
    bp,
    "check_import",
    payloads.CheckImport,
    imports.check_import,
    lambda p: {"instance_id": p.ticket, "execution_id": p.execution_id},
)
step_activity(
    bp,
    "collect_errors",
    payloads.ImportErrors,
    imports.collect_errors,
    lambda p: {"instance_id": p.drop_id, "execution_id": p.execution_id},
)
step_activity(
    bp,
    "fetch_target_error_keys",
    payloads.ImportErrors,
    imports.fetch_target_error_keys,
    lambda p: {"instance_id": p.drop_id, "execution_id": p.execution_id},
)
step_activity(
    bp,
    "record_import_result",
    payloads.ImportResult,
    imports.record_import_result,
    lambda p: {"instance_id": p.drop_id, "execution_id": p.execution_id},
)
