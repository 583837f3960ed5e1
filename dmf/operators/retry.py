"""Retrying a drop: only its packages whose latest attempt ended Failed or TimedOut, never one that
Succeeded, each under a new execution id, through the same content claim and import gate as any drop.

A retry is its own orchestration, ``<drop id>-r<nn>``; its rows live beside the drop's in the same outcome
partition: a ``retry`` summary row ``<drop id>-r<nn>`` and package rows ``<drop id>-r<nn>~<seq>`` (the
package keeps the sequence number it had in the drop). The drop's own row gets ``LastRetryId`` and
``EffectiveStatus`` (what its packages' latest attempts add up to).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from azure.core.exceptions import ResourceExistsError

from dmf.operators import OperatorError
from dmf.operators.drops import drop_rows, latest_packages, seq_of
from dmf.pipeline.drops import FINAL_DROP_STATUSES, UNSETTLED, drop_status
from dmf.pipeline.payloads import FinalizeRetry, RetryOf, RetryPlan
from dmf.pipeline.services import Services
from dmf.redact import redact
from dmf.routing import RoutingError, resolve
from dmf.storage.outcomes import TERMINAL_STATUSES, safe_key

log = logging.getLogger(__name__)

RETRIABLE = frozenset({"Failed", "TimedOut"})
MAX_RETRIES = 99


def plan_retry(svc: Services, drop_id: str, requested_by: str | None = None) -> RetryPlan:
    """Check the drop may be retried, claim its content and the retry's id, and return the retry's input."""
    detail = drop_rows(svc, drop_id)
    day, head = detail["day"], detail["drop"]
    if head.get("Status") not in FINAL_DROP_STATUSES:
        raise OperatorError(f"drop {drop_id} is still {head.get('Status')}: retry it once it has ended")
    for run_id, rows in sorted(detail["retries"].items()):
        summary_row = next((r for r in rows if r["RowKey"] == run_id), {})
        if summary_row.get("Status") not in TERMINAL_STATUSES:
            raise OperatorError(f"retry {run_id} is still {summary_row.get('Status')}")
    latest = latest_packages(detail)
    todo = {n: r for n, r in sorted(latest.items()) if r.get("Status") in RETRIABLE}
    if not todo:
        states = ", ".join(f"package {n}: {r.get('Status')}" for n, r in sorted(latest.items())) or "none"
        raise OperatorError(f"drop {drop_id} has no Failed or TimedOut package to retry ({states})")
    missing = [n for n, r in todo.items() if not r.get("StagedBlob")]
    if missing:
        raise OperatorError(f"packages {missing} never reached staging: drop the file again instead")
    source = head.get("SourceBlob") or ""
    try:
        route = resolve(source.partition("/")[2], svc.settings)
    except RoutingError as exc:
        raise OperatorError(f"the drop's file no longer routes: {exc}") from None
    sha = head.get("ContentSha256")
    if sha:
        claim = svc.ledger.claim_content(sha, drop_id, source)
        if not claim.mine and not route.allow_duplicate_content:
            raise OperatorError(
                f"the same content was imported since by drop {claim.owner} ({claim.source_blob}); not retried"
            )
    n = len(detail["retries"]) + 1
    if n > MAX_RETRIES:
        raise OperatorError(f"drop {drop_id} was retried {MAX_RETRIES} times already")
    retry_id = f"{drop_id}-r{n:02d}"
    packages = [
        {
            "seq": seq,
            "staged": r["StagedBlob"],
            "entities": [e for e in (r.get("Entity") or "").split(", ") if e],
            "rows": r.get("Records"),
            "source": r.get("SourceBlob") or source,
            "previous": r["RowKey"],
        }
        for seq, r in todo.items()
    ]
    try:
        svc.outcomes.table.create_entity(
            {
                "PartitionKey": day,
                "RowKey": safe_key(retry_id),
                "Kind": "retry",
                "Status": "Running",
                "RetryOf": drop_id,
                "SourceBlob": source,
                "Environment": route.environment,
                "LegalEntity": route.legal_entity,
                "DataProject": route.data_project,
                "PackageCount": len(packages),
                "RequestedBy": redact((requested_by or "")[:200]) or None,
                "StartedAt": datetime.now(UTC),
            }
        )
    except ResourceExistsError:
        raise OperatorError(f"retry {retry_id} was just started by someone else") from None
    log.info("retry %s of %s planned: packages %s", retry_id, drop_id, [p["seq"] for p in packages])
    return RetryPlan(
        drop_id=drop_id,
        retry_id=retry_id,
        day=day,
        source=source,
        sha256=sha,
        route=route.model_dump(),
        packages=packages,
    )


def unfinished_retries(svc: Services, drop_id: str) -> list[tuple[str, datetime | None]]:
    """The drop's retries whose rows do not record an end yet, with when each was asked for."""
    detail = drop_rows(svc, drop_id)
    out = []
    for run_id, rows in sorted(detail["retries"].items()):
        head = next((r for r in rows if r["RowKey"] == run_id), {})
        if head.get("Status") not in TERMINAL_STATUSES:
            out.append((run_id, head.get("StartedAt")))
    return out


def abandon_run(svc: Services, drop_id: str, run_id: str) -> None:
    """A retry's orchestration ended without recording its end: record that it did not finish."""
    day = drop_rows(svc, drop_id)["day"]
    reason = "the retry's orchestration ended without recording a result (terminated or crashed)"
    svc.outcomes.upsert(day, run_id, {"Status": "Failed", "Reason": reason, "FinishedAt": datetime.now(UTC)})
    log.warning("retry %s of %s: %s", run_id, drop_id, reason)


def abandon(svc: Services, plan: RetryOf, reason: str) -> None:
    """The retry's orchestration could not be started: say so on its row."""
    svc.outcomes.upsert(
        plan.day, plan.retry_id, {"Status": "Failed", "Reason": reason, "FinishedAt": datetime.now(UTC)}
    )


def finalize_retry(svc: Services, req: FinalizeRetry | dict[str, Any]) -> dict[str, Any]:
    """Record the retry's result and what the drop's packages now add up to; settle the content claim."""
    req = FinalizeRetry.of(req)
    drop_id, retry_id, day = req.drop_id, req.retry_id, req.day
    results: list[dict[str, Any]] = req.results or []
    status = drop_status(results, [])
    errors = [
        f"package {r.get('seq')} {r.get('status')}: {r.get('error_summary') or r.get('reason')}"
        for r in results
        if r.get("error_summary") or r.get("reason")
    ]
    now = datetime.now(UTC)
    svc.outcomes.upsert(
        day,
        retry_id,
        {
            "Status": status,
            "Reason": " | ".join(errors) if status not in ("Succeeded",) and errors else None,
            "ErrorCount": sum(int(r.get("error_count") or 0) for r in results),
            "FinishedAt": now,
        },
    )
    detail = drop_rows(svc, drop_id, day)
    latest = latest_packages(detail)
    effective = drop_status(
        [{"status": r.get("Status")} for _, r in sorted(latest.items())],
        [{"seq": seq_of(r["RowKey"])} for r in detail["rejected"]],
    )
    svc.outcomes.upsert(day, drop_id, {"LastRetryId": retry_id, "EffectiveStatus": effective})
    if req.source:
        svc.ledger.update_index(req.source, drop_id, {"EffectiveStatus": effective, "LastRetryId": retry_id})
    unsettled = any(r.get("Status") in UNSETTLED for r in latest.values())
    if effective in {"Failed", "Canceled"} and req.sha256 and not unsettled:
        svc.ledger.release_content(req.sha256, drop_id)
    log.info("retry %s of %s ended %s; the drop is now %s", retry_id, drop_id, status, effective)
    return {"status": status, "effective": effective, "name": PurePosixPath(req.source or "").name}
