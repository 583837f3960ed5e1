"""Orchestration for an operator's retry of a drop (``POST /api/drops/{id}/retry``).

Input: the plan from ``dmf.operators.retry.plan_retry`` (the packages to import again, with the route).
Each package is imported by the same ``import_package`` orchestration as any drop's — the environment's
gate, polling, error collection and outcome row — under ``<retry id>-p<seq>``, hence a new execution id.
"""

from __future__ import annotations

import azure.durable_functions as df

from dmf.pipeline.payloads import FinalizeRetry, RetryPlan, to_wire
from dmf.pipeline.results import Recorded
from orchestrators.imports_in_order import import_in_order
from orchestrators.retries import DROP_RETRY as RETRY

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def retry_drop(context: df.DurableOrchestrationContext):
    plan = RetryPlan.of(context.get_input())
    retry_id = context.instance_id
    results = yield from import_in_order(
        context,
        retry_id,
        {"day": plan.day, "route": plan.route},
        [(pkg["seq"], pkg) for pkg in plan.packages],
        lambda n, seq: {
            "stage": "importing",
            "package": n,
            "of": len(plan.packages),
            "seq": seq,
            "retry_of": plan.drop_id,
        },
    )
    context.set_custom_status({"stage": "finalising"})
    of = {k: v for k, v in vars(plan).items() if k != "packages"}
    final = FinalizeRetry(**(of | {"retry_id": retry_id}), results=results)
    result = yield context.call_activity_with_retry("finalize_retry", RETRY, to_wire(final))
    context.set_custom_status({"stage": "done", "status": Recorded.of(result).status})
    return result
