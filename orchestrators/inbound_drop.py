"""Orchestration for one dropped blob: plan → prepare items in parallel → import packages in order → finalise.

Instance id = ``drop-<hash of container/name/etag>``, so repeated deliveries of one blob version start
nothing new. Every expected failure comes back from activities as a result object; an unexpected one is
caught here and still finalises the drop (outcome row written, blob moved to ``failed``).
"""

from __future__ import annotations

from dataclasses import replace

import azure.durable_functions as df

from dmf.pipeline.payloads import Drop, EnqueueRoute, FinalizeDrop, PrepareItem, to_wire
from dmf.pipeline.results import Plan, PreparedItem
from dmf.redact import redact
from orchestrators.imports_in_order import import_in_order
from orchestrators.retries import DROP_RETRY as RETRY

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def inbound_drop(context: df.DurableOrchestrationContext):
    drop = replace(Drop.from_wire(context.get_input()), instance_id=context.instance_id)
    drop_id = context.instance_id
    final = FinalizeDrop(
        instance_id=drop_id, day=drop.day, source=f"{drop.container}/{drop.name}", etag=drop.etag
    )
    context.set_custom_status({"stage": "planning"})
    try:
        plan = Plan.of((yield context.call_activity_with_retry("plan_drop", RETRY, to_wire(drop))))
    except Exception as exc:  # storage kept failing: record it and move the blob aside, don't lose it
        final = replace(final, action="error", reason=redact(f"planning the drop failed: {exc}"))
        return (yield from _finalize(context, final))
    if plan.action in ("gone", "already-done"):
        return {"status": plan.action, "reason": plan.reason}
    final = replace(final, sha256=plan.sha256, members=plan.members or [])
    if plan.action in ("reject", "duplicate"):
        final = replace(final, action=plan.action, reason=plan.reason, duplicate_of=plan.duplicate_of)
        context.set_custom_status({"stage": "finalising", "status": plan.action})
        return (yield from _finalize(context, final))
    if plan.action == "enqueue":
        sub = EnqueueRoute(drop=to_wire(drop), route=plan.route, source=final.source, day=drop.day)
        result = yield context.call_sub_orchestrator("recurring_enqueue", to_wire(sub), f"{drop_id}-enqueue")
        return (yield from _finalize(context, replace(final, action="import", results=[result])))

    route = plan.route
    items = plan.items
    try:
        context.set_custom_status({"stage": "preparing", "items": len(items)})
        answers = yield context.task_all(
            [
                context.call_activity_with_retry(
                    "prepare_item",
                    RETRY,
                    to_wire(PrepareItem(drop_id=drop_id, day=drop.day, item=it, route=route)),
                )
                for it in items
            ]
        )
    except Exception as exc:  # an activity kept failing unexpectedly: record it, don't lose the drop
        final = replace(final, action="error", reason=redact(f"preparing the drop failed: {exc}"))
        return (yield from _finalize(context, final))

    prepared = [PreparedItem.of(a) for a in answers]
    by_seq = {it["seq"]: it for it in items}
    rejected = [
        {"seq": p.seq, "problems": p.problems, "source": by_seq[p.seq]["source"]}
        for p in prepared
        if not p.ok
    ]
    packages = [pkg | {"source": by_seq[p.seq]["source"]} for p in prepared if p.ok for pkg in p.packages]

    results = yield from import_in_order(
        context,
        drop_id,
        {"day": drop.day, "route": route},
        list(enumerate(packages, start=1)),
        lambda n, _seq: {"stage": "importing", "package": n, "of": len(packages), "rejected": len(rejected)},
    )

    context.set_custom_status({"stage": "finalising"})
    return (
        yield from _finalize(context, replace(final, action="import", results=results, rejected=rejected))
    )


def _finalize(context: df.DurableOrchestrationContext, final: FinalizeDrop):
    return (yield context.call_activity_with_retry("finalize_drop", RETRY, to_wire(final)))
