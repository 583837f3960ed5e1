"""Importing a list of packages one after another, each through an ``import_package`` sub-orchestration.

Shared by a drop (``inbound_drop``) and an operator's retry of one (``retry_drop``): the same instance ids
(``<owner>-p<seq>``), the same cancel rule and the same answer when a sub-orchestration fails.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import azure.durable_functions as df

from dmf.pipeline.ids import package_instance_id
from dmf.pipeline.payloads import PackageImport, to_wire
from dmf.redact import redact
from orchestrators.import_package import CANCELED_REASON


def import_in_order(
    context: df.DurableOrchestrationContext,
    owner_id: str,
    common: dict,
    packages: list[tuple[int, dict]],
    status: Callable[[int, int], dict],
) -> Generator[Any, Any, list[dict]]:
    """``packages`` are (seq, package) pairs; ``common`` goes into every sub-orchestration's input (day,
    route); ``status(n, seq)`` is the custom status shown while the n-th one imports."""
    results: list[dict] = []
    for n, (seq, pkg) in enumerate(packages, start=1):
        if results and results[-1].get("error_summary") == CANCELED_REASON:
            # An operator canceled the drop at the gate: the packages after it are not imported either.
            results.append({"seq": seq, "status": "Canceled", "error_summary": CANCELED_REASON})
            continue
        context.set_custom_status(status(n, seq))
        sub_input = PackageImport(
            drop_id=owner_id,
            day=common["day"],
            seq=seq,
            staged=pkg["staged"],
            entities=pkg["entities"],
            rows=pkg["rows"],
            source=pkg["source"],
            route=common["route"],
        )
        try:
            res = yield context.call_sub_orchestrator(
                "import_package", to_wire(sub_input), package_instance_id(owner_id, seq)
            )
        except Exception as exc:
            # F&O may or may not have imported it: "Unknown" keeps the content claim (no re-import).
            res = {"seq": seq, "status": "Unknown", "reason": redact(f"import orchestration failed: {exc}")}
        results.append(res)
    return results
