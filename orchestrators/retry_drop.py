"""Orchestration for an operator's retry of a drop (``POST /api/drops/{id}/retry``).

Input: the plan from ``dmf.operators.retry.plan_retry`` (the packages to import again, with the route).
Each package is imported by the same ``import_package`` orchestration as any drop's — the environment's
gate, polling, error collection and outcome row — under ``<retry id>-p<seq>``, hence a new execution id.
"""

from __future__ import annotations

import azure.durable_functions as df

from orchestrators.imports_in_order import import_in_order
from orchestrators.retries import DROP_RETRY as RETRY

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def retry_drop(context: df.DurableOrchestrationContext):
    plan = dict(context.get_input())
    retry_id = context.instance_id
    packages = plan.pop("packages")
    results = yield from import_in_order(
        context,
        retry_id,
        {"day": plan["day"], "route": plan["route"]},
        [(pkg["seq"], pkg) for pkg in packages],
        lambda n, seq: {
            "stage": "importing",
            "package": n,
            "of": len(packages),
            "seq": seq,
            "retry_of": plan["drop_id"],
        },
    )
    context.set_custom_status({"stage": "finalising"})
    result = yield context.call_activity_with_retry(
        "finalize_retry", RETRY, plan | {"retry_id": retry_id, "results": results}
    )
    context.set_custom_status({"stage": "done", "status": result["status"]})
    return result
