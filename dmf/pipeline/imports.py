"""Import steps run inside the gate: start an import once, check its status, fetch its errors, record it.

"Never import twice": the outcome row records our execution id and ``ImportRequestedAt`` before
``ImportFromPackage`` is called. A retried ``start_import`` (a worker died, the call timed out) first asks
F&O about that id and only calls again when the orchestrator, after the verify grace, says so.

How a failed ImportFromPackage call is read:
- **refused** (429, or 503 with Retry-After: ``FnoError.refused``): F&O did not start it. The row is marked
  ``ImportRefused`` and the orchestrator calls again after ``Retry-After`` (durable timer), without asking.
- **ambiguous** (timeout, reset, other 5xx): it may have started. F&O is asked about our id; until it knows
  it the orchestrator polls for a short verify grace, then calls again. A call answered "execution id
  already exists" means an earlier attempt did start it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from azure.core.exceptions import AzureError

from dmf.fno.clients import package_api
from dmf.fno.errors import FnoError, names_existing_execution
from dmf.fno.models import ExecutionStatus
from dmf.gate import gate_service
from dmf.logs import log_context, ops_event
from dmf.pipeline.payloads import CheckImport, ImportErrors, ImportResult, StartImport, to_wire
from dmf.pipeline.results import Checked, ErrorsFound, Recorded, Started, TargetKeys
from dmf.pipeline.services import Services
from dmf.redact import redact
from dmf.storage.transfer import blob_client_for_url, copy_blob

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGES = 20


def _row(req: StartImport | ImportResult) -> str:
    return f"{req.drop_id}~{int(req.seq):03d}"


def start_import(svc: Services, req: StartImport | dict[str, Any]) -> dict[str, Any]:
    """Copy the staged package to a fresh F&O write URL and call ImportFromPackage, at most once."""
    req = StartImport.of(req)
    s = svc.settings
    route = req.route
    exec_id = req.execution_id
    day, row = req.day, _row(req)
    api = package_api(s, route["environment"])
    expected = svc.ledger.expected_duration(route["environment"], route["data_project"])
    base = {"execution_id": exec_id, "expected_seconds": expected}
    existing = svc.outcomes.get(day, row) or {}
    with log_context(execution_id=exec_id, data_project=route["data_project"], blob_name=req.staged):
        # Only a holder of the environment's gate may call ImportFromPackage: renew our permit's lease
        # (the gate service's renew), which also says whether it lapsed.
        if req.now and not gate_service(svc).renew(
            route["environment"], req.instance_id, datetime.fromisoformat(req.now)
        ):
            log.warning("the import permit for %s lapsed before the import; queueing again", exec_id)
            return to_wire(Started(**base, state="lost-gate"))
        if existing.get("ImportRequestedAt") and not existing.get("ImportRefused"):
            # A previous attempt may have reached F&O: ask before calling again.
            try:
                status = api.get_execution_summary_status(exec_id)
            except FnoError as exc:
                return to_wire(Started(**base, state="ambiguous", error=str(exc)))
            if status is not ExecutionStatus.NOT_FOUND:
                return to_wire(Started(**base, state="started", confirmed=True))
            if existing.get("ImportConfirmed") or not req.allow_recall:
                return to_wire(
                    Started(**base, state="ambiguous", confirmed=bool(existing.get("ImportConfirmed")))
                )
            log.warning(
                "execution %s still unknown to F&O after the grace period; calling import again", exec_id
            )
        svc.outcomes.upsert(
            day,
            row,
            {
                "Kind": "package",
                "Status": "Importing",
                "ExecutionId": exec_id,
                "StagedBlob": req.staged,
                "ArchivedBlob": req.staged,
                "Environment": route["environment"],
                "LegalEntity": route["legal_entity"],
                "DataProject": route["data_project"],
                "Entity": ", ".join(req.entities or []) or None,
                "Records": req.rows,
                "InstanceId": req.instance_id,
                "SourceBlob": req.source,
                "StartedAt": existing.get("StartedAt") or datetime.now(UTC),
            },
        )
        try:
            write = api.get_azure_write_url(f"{exec_id}-{PurePosixPath(req.staged).name}")
            # No SDK retries into F&O's blob: the start loop is this step's one retry layer (fresh URL).
            dest = blob_client_for_url(
                write.blob_url,
                ca_bundle=s.fno_ca_bundle,
                timeout=s.fno_transfer_timeout_seconds,
                retry_total=0,
            )
            copy_blob(svc.blob_at(req.staged), dest, attempts=1)  # the start loop retries
        except FnoError as exc:
            # Nothing reached ImportFromPackage yet: safe to let the orchestrator retry later. A refusal (429,
            # 503 + Retry-After) is "not done", waited out like ImportFromPackage's own, not counted as a failure
            # (the fault matrix's 429 storm lost a package after six refused write-URL calls in a row).
            if exc.refused:
                return to_wire(
                    Started(**base, state="throttled", retry_after=exc.retry_after, error=str(exc))
                )
            return to_wire(Started(**base, state="retry" if exc.transient else "failed", error=str(exc)))
        except (AzureError, OSError) as exc:
            # The copy into F&O's blob failed (its URL may have expired): a fresh URL next time.
            return to_wire(
                Started(**base, state="retry", error=redact(f"upload to F&O's blob failed: {exc}"))
            )
        svc.outcomes.upsert(
            day,
            row,
            {
                "ImportRequestedAt": datetime.now(UTC),
                "ImportAttempts": int(existing.get("ImportAttempts") or 0) + 1,
                "ImportRefused": False,
            },
        )
        try:
            api.import_from_package(
                write.blob_url,
                route["data_project"],
                exec_id,
                execute=route.get("execute", True),
                overwrite=route.get("overwrite", True),
                legal_entity_id=route["legal_entity"],
            )
        except FnoError as exc:
            if exc.refused:
                # "Not done": F&O turned it away before running it. Call again after Retry-After.
                svc.outcomes.upsert(day, row, {"ImportRefused": True})
                log.info("ImportFromPackage for %s refused (HTTP %s); retry after %ss",
                         exec_id, exc.status, exc.retry_after)  # fmt: skip
                return to_wire(
                    Started(**base, state="throttled", retry_after=exc.retry_after, error=str(exc))
                )
            if names_existing_execution(exc, exec_id):
                # An earlier attempt whose answer was lost did start it.
                svc.outcomes.upsert(day, row, {"ImportConfirmed": True})
                return to_wire(Started(**base, state="started", confirmed=True))
            if not exc.transient:
                return to_wire(Started(**base, state="failed", error=str(exc)))
            # Ambiguous: the call may have started the import. Ask F&O about our id.
            try:
                status = api.get_execution_summary_status(exec_id)
            except FnoError:
                status = ExecutionStatus.NOT_FOUND
            if status is not ExecutionStatus.NOT_FOUND:
                svc.outcomes.upsert(day, row, {"ImportConfirmed": True})
                return to_wire(Started(**base, state="started", confirmed=True))
            return to_wire(Started(**base, state="ambiguous", confirmed=False, error=str(exc)))
        svc.outcomes.upsert(day, row, {"ImportConfirmed": True})
        return to_wire(Started(**base, state="started", confirmed=True))


def check_import(svc: Services, req: CheckImport | dict[str, Any]) -> dict[str, Any]:
    """Renew the gate lease (explicitly, through the gate service: each poll keeps the permit), then ask F&O
    for the execution's status (transient errors read as pending)."""
    req = CheckImport.of(req)
    s = svc.settings
    now = datetime.fromisoformat(req.now)
    lease_ok = gate_service(svc).renew(req.environment, req.ticket, now)
    api = package_api(s, req.environment)
    with log_context(execution_id=req.execution_id):
        try:
            status = api.get_execution_summary_status(req.execution_id).value
            error = None
        except FnoError as exc:
            status, error = "Unreachable", str(exc)
    return to_wire(Checked(status=status, lease_ok=lease_ok, error=error))


def collect_errors(svc: Services, req: ImportErrors | dict[str, Any]) -> dict[str, Any]:
    """Execution errors, staging error files and target error keys, copied before F&O deletes them."""
    req = ImportErrors.of(req)
    s = svc.settings
    api = package_api(s, req.environment)
    exec_id = req.execution_id
    prefix = f"{s.errors_container}/{req.drop_id}/{int(req.seq):03d}"
    files: list[str] = []
    pending: list[str] = []
    messages: list[str] = []
    count = 0
    page = None
    with log_context(execution_id=exec_id):
        try:
            errors = api.get_execution_errors(exec_id)
            count = len(errors)
            messages = [_error_text(e) for e in errors[:MAX_ERROR_MESSAGES]]
        except FnoError as exc:
            messages.append(f"could not read execution errors: {exc}")
        for entity in req.entities or []:
            try:
                url = api.get_import_staging_error_file_url(exec_id, entity)
                if url:
                    files.append(_copy_error_file(svc, url, f"{prefix}/{_safe(entity)}-staging-errors.csv"))
                if api.generate_import_target_error_keys_file(exec_id, entity):
                    pending.append(entity)
            except FnoError as exc:
                messages.append(f"{entity}: could not fetch error files: {exc}")
        try:
            page = api.get_execution_summary_page_url(exec_id)
        except FnoError:
            page = None
    found = ErrorsFound(
        error_count=count, messages=messages, files=files, pending_target_keys=pending, summary_page_url=page
    )
    return to_wire(found)


def fetch_target_error_keys(svc: Services, req: ImportErrors | dict[str, Any]) -> dict[str, Any]:
    """Copy the target error-keys files that are ready; return the entities still being generated."""
    req = ImportErrors.of(req)
    s = svc.settings
    api = package_api(s, req.environment)
    prefix = f"{s.errors_container}/{req.drop_id}/{int(req.seq):03d}"
    entities = list(req.entities or [])
    files, pending = [], []
    for i, entity in enumerate(entities):
        try:
            url = api.get_import_target_error_keys_file_url(req.execution_id, entity)
            if url:
                files.append(_copy_error_file(svc, url, f"{prefix}/{_safe(entity)}-target-error-keys.csv"))
                continue
        except FnoError as exc:
            if exc.refused:  # throttled: the rest wait too, and the loop does not count this try
                rest = [*pending, *entities[i:]]
                return to_wire(
                    TargetKeys(files=files, pending=rest, refused=True, retry_after=exc.retry_after)
                )
            log.info("target error keys for %s not fetched yet: %s", entity, exc)
        pending.append(entity)
    return to_wire(TargetKeys(files=files, pending=pending))


def record_import_result(svc: Services, req: ImportResult | dict[str, Any]) -> dict[str, Any]:
    """The package's final outcome row; successful durations teach the polling schedule."""
    req = ImportResult.of(req)
    route = req.route
    status = req.status
    started = datetime.fromisoformat(req.started_at)
    finished = datetime.fromisoformat(req.finished_at)
    errors = req.errors or {}
    svc.outcomes.upsert(
        req.day,
        _row(req),
        {
            "Status": status,
            "Reason": req.reason,
            "LastFnoStatus": req.last_status,
            "PollCount": req.polls,
            "FinishedAt": finished,
            "ImportSeconds": round((finished - started).total_seconds(), 3),
            "ErrorCount": errors.get("error_count"),
            "ErrorSummary": " | ".join(errors.get("messages") or []) or None,
            "ErrorFiles": errors.get("files") or None,
            "SummaryPageUrl": errors.get("summary_page_url"),
        },
    )
    confirmed = req.confirmed_start_at
    ops_event(
        log,
        "import_finished",
        "import %s of %s ended %s",
        req.execution_id,
        route.get("data_project"),
        status,
        level=logging.INFO if status == "Succeeded" else logging.WARNING,
        status=status,
        environment=route.get("environment"),
        legal_entity=route.get("legal_entity"),
        data_project=route.get("data_project"),
        execution_id=req.execution_id,
        drop_id=req.drop_id,
        import_seconds=(
            round((finished - datetime.fromisoformat(confirmed)).total_seconds(), 3) if confirmed else None
        ),
        total_seconds=round((finished - started).total_seconds(), 3),
        error_count=errors.get("error_count"),
    )
    if status in {"Succeeded", "PartiallySucceeded", "Failed"} and req.confirmed_start_at:
        seconds = (finished - datetime.fromisoformat(req.confirmed_start_at)).total_seconds()
        if req.observed_seconds:
            seconds = float(req.observed_seconds)
        svc.ledger.record_duration(route["environment"], route["data_project"], seconds)
    return to_wire(Recorded(status=status))


def _copy_error_file(svc: Services, url: str, dest: str) -> str:
    s = svc.settings
    src = blob_client_for_url(url, ca_bundle=s.fno_ca_bundle)
    try:
        copy_blob(src, svc.blob_at(dest), source_url=url)
    except (AzureError, OSError) as exc:
        raise FnoError(redact(f"copying an error file from F&O failed: {exc}"), transient=True) from None
    return dest


def _error_text(e: Any) -> str:
    rec = getattr(e, "record_id", None)
    msg = getattr(e, "error_message", None) or getattr(e, "message", None) or str(e)
    return f"record {rec}: {msg}" if rec else str(msg)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
