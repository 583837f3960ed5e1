"""Activities of the outbound pipeline (drains, scheduled exports, enqueue route): thin wrappers over
``dmf.pipeline.outbound*``. Each reads its plain-dict input as its payload (``dmf/pipeline/payloads.py``)
once, and hands that on."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from activities.steps import step_activity
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


# name, input payload, step, the log fields
step_activity(
    bp, "drain_batch", payloads.DrainBatch, outbound.drain_batch, lambda p: {"instance_id": p.run_id}
)
step_activity(
    bp,
    "drain_record",
    payloads.DrainResult,
    outbound.record_drain_result,
    lambda p: {"instance_id": p.run_id},
)
step_activity(
    bp,
    "export_start",
    payloads.StartExport,
    outbound_exports.start_export,
    lambda p: {"instance_id": p.run_id, "execution_id": p.execution_id},
)
step_activity(
    bp,
    "export_check",
    payloads.CheckExport,
    outbound_exports.check_export,
    lambda p: {"execution_id": p.execution_id},
)
step_activity(
    bp,
    "export_fetch",
    payloads.ExportPackage,
    outbound_exports.fetch_export,
    lambda p: {"instance_id": p.run_id, "execution_id": p.execution_id},
)
step_activity(
    bp,
    "export_record",
    payloads.ExportResult,
    outbound_exports.record_export,
    lambda p: {"instance_id": p.run_id, "execution_id": p.execution_id},
)
step_activity(
    bp,
    "enqueue_send",
    payloads.Enqueue,
    outbound_enqueue.enqueue_source,
    lambda p: {"instance_id": p.drop_id, "blob_name": p.source},
)
step_activity(bp, "enqueue_check", payloads.CheckMessage, outbound_enqueue.check_message, lambda p: {})
step_activity(
    bp,
    "enqueue_record",
    payloads.EnqueueResult,
    outbound_enqueue.record_enqueue,
    lambda p: {"instance_id": p.drop_id, "blob_name": p.source},
)
