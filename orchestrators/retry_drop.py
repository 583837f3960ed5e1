"""Orchestration for an operator's retry of a drop (``POST /api/drops/{id}/retry``).

Input: the plan from ``dmf.operators.retry.plan_retry`` (the packages to import again, with the route).
Each package is imported by the same ``import_package`` orchestration as any drop's — the environment's
gate, polling, error collection and outcome row — under ``<retry id>-p<seq>``, hence a new execution id.
"""

from __future__ import annotations

import azure.durable_functions as df

from dmf.pipeline.ids import package_instance_id
from dmf.redact import redact
from orchestrators.import_package import CANCELED_REASON

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)


@bp.orchestration_trigger(context_name="context")
def retry_drop(context: df.DurableOrchestrationContext):
    plan = dict(context.get_input())
    retry_id = context.instance_id
    packages = plan.pop("packages")
    results = []
    for n, pkg in enumerate(packages, start=1):
        seq = pkg["seq"]
        if results and results[-1].get("error_summary") == CANCELED_REASON:
            results.append({"seq": seq, "status": "Canceled", "error_summary": CANCELED_REASON})
            continue
        context.set_custom_status(
            {"stage": "importing", "package": n, "of": len(packages), "seq": seq, "retry_of": plan["drop_id"]}
        )
        sub_input = {
            "drop_id": retry_id,
            "day": plan["day"],
            "seq": seq,
            "staged": pkg["staged"],
            "entities": pkg["entities"],
            "rows": pkg["rows"],
            "source": pkg["source"],
            "route": plan["route"],
        }
        try:
            res = yield context.call_sub_orchestrator(
                "import_package", sub_input, package_instance_id(retry_id, seq)
            )
        except Exception as exc:
            res = {"seq": seq, "status": "Unknown", "reason": redact(f"import orchestration failed: {exc}")}
        results.append(res)
    context.set_custom_status({"stage": "finalising"})
    result = yield context.call_activity_with_retry(
        "finalize_retry", RETRY, plan | {"retry_id": retry_id, "results": results}
    )
    context.set_custom_status({"stage": "done", "status": result["status"]})
    return result
