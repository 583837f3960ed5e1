"""Scheduled package exports: which jobs are due, start once with our own execution id, fetch, archive.

"Never export twice": the outcome row records our execution id and ``ExportRequestedAt`` before
``ExportToPackageAsync`` is called; a retried start asks F&O about that id first. "Never overlap": the
timer starts a job only when its singleton orchestration is not running and its ledger run guard is free.
When a job is due again while its previous run is still going, the missed times are folded into one run
that starts as soon as the previous one ends (the schedule's last-due time only advances on a start).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from dmf.fno.clients import package_api
from dmf.fno.errors import FnoError, names_existing_execution
from dmf.fno.models import ExecutionStatus
from dmf.logs import log_context
from dmf.pipeline.ids import project_prefix, safe_name
from dmf.pipeline.payloads import CheckExport, ExportPackage, ExportResult, StartExport, to_wire
from dmf.pipeline.results import Checked, Fetched, Recorded, Started
from dmf.pipeline.services import Services
from dmf.settings import ExportJob
from dmf.storage import clients
from dmf.storage.outcomes import finish_fields, safe_key
from dmf.storage.transfer import blob_client_for_url, copy_blob

log = logging.getLogger(__name__)

SCHEDULE_PARTITION = "export-schedule"
MAX_ERROR_MESSAGES = 20


def export_instance_id(job_name: str) -> str:
    return f"export-{safe_name(job_name)}"


def export_run_id(job_name: str, due: datetime) -> str:
    return f"export-{safe_name(job_name)}-{due.astimezone(UTC):%Y%m%dT%H%M%S}"


def export_execution_id(data_project: str, run_id: str) -> str:
    """Our DMF execution id for a run: deterministic, so a retried start can ask F&O about it."""
    return f"{project_prefix(data_project, 'export')}-{run_id}"


def package_name(job: ExportJob, due: datetime) -> str:
    """The job's ``package_name`` pattern with {job}, {timestamp}, {date}, {legal_entity}, {data_project}."""
    due = due.astimezone(UTC)
    values = {
        "job": safe_name(job.name),
        "timestamp": f"{due:%Y%m%d%H%M%S}",
        "date": f"{due:%Y%m%d}",
        "legal_entity": job.legal_entity or "",
        "data_project": job.data_project,
    }
    try:
        name = job.package_name.format(**values)
    except (KeyError, IndexError, ValueError):
        name = f"{values['job']}-{values['timestamp']}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or values["job"]


# -- schedule -------------------------------------------------------------------------------------------


def latest_due(expression: str, after: datetime, until: datetime) -> datetime | None:
    """The last time the NCRONTAB schedule (seconds first) fired in ``(after, until]``, or None."""
    from croniter import croniter  # loaded by the first export tick, not at app import

    # croniter's get_prev is strictly before its start: start one second past ``until`` (whole seconds).
    start = until.replace(microsecond=0) + timedelta(seconds=1)
    prev = croniter(expression, start, second_at_beginning=True).get_prev(datetime)
    return prev if prev > after else None


class ExportSchedule:
    """Per job: the due time of the last run started (ledger table, partition ``export-schedule``)."""

    def __init__(self, table: TableClient) -> None:
        self.table = table

    def last_due(self, job: str) -> datetime | None:
        try:
            return self.table.get_entity(SCHEDULE_PARTITION, safe_key(job))["LastDue"]
        except ResourceNotFoundError:
            return None

    def initialise(self, job: str, when: datetime) -> datetime:
        """A new job starts counting from now: its first run is the next scheduled time, not a backlog."""
        try:
            self.table.create_entity(
                {"PartitionKey": SCHEDULE_PARTITION, "RowKey": safe_key(job), "LastDue": when}
            )
            return when
        except ResourceExistsError:
            return self.last_due(job) or when

    def mark_started(self, job: str, due: datetime, run_id: str) -> None:
        self.table.upsert_entity(
            {"PartitionKey": SCHEDULE_PARTITION, "RowKey": safe_key(job), "LastDue": due, "LastRun": run_id},
            mode=UpdateMode.MERGE,
        )


def export_schedule(svc: Services) -> ExportSchedule:
    return ExportSchedule(clients.table(svc.settings, svc.settings.ledger_table))


def due_jobs(svc: Services, now: datetime) -> list[tuple[ExportJob, datetime]]:
    """Jobs with a scheduled time in (last start, now], each with its latest such time."""
    sched = export_schedule(svc)
    out = []
    for job in svc.settings.export_jobs:
        last = sched.last_due(job.name)
        if last is None:
            sched.initialise(job.name, now)
            continue
        due = latest_due(job.schedule, last.astimezone(UTC), now)
        if due is not None:
            out.append((job, due))
    return out


# -- steps ----------------------------------------------------------------------------------------------


def _row_fields(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "Kind": "export",
        "Export": job["name"],
        "Environment": job["environment"],
        "DataProject": job["data_project"],
        "LegalEntity": job.get("legal_entity"),
    }


def start_export(svc: Services, req: StartExport | dict[str, Any]) -> dict[str, Any]:
    """Call ExportToPackageAsync with our execution id, at most once.

    ``req``: ``job`` (ExportJob dict), ``run_id``, ``day``, ``execution_id``, ``package_name``,
    ``instance_id``, optional ``allow_recall``. Returns ``state``: started | throttled (F&O refused it: 429,
    or 503 with Retry-After; ``retry_after``) | failed | ambiguous.
    """
    req = StartExport.of(req)
    job = req.job
    exec_id = req.execution_id
    day, row = req.day, req.run_id
    env = svc.settings.environment(job["environment"])
    le = job.get("legal_entity") or env.legal_entity
    api = package_api(svc.settings, env.name)
    existing = svc.outcomes.get(day, row) or {}
    with log_context(execution_id=exec_id, data_project=job["data_project"]):
        if existing.get("ExportRequestedAt") and not existing.get("ExportRefused"):
            try:
                status = api.get_execution_summary_status(exec_id)
            except FnoError as exc:
                return to_wire(Started(state="ambiguous", error=str(exc)))
            if status is not ExecutionStatus.NOT_FOUND:
                return to_wire(Started(state="started"))
            if not req.allow_recall:
                return to_wire(Started(state="ambiguous"))
            log.warning("export %s still unknown to F&O after the grace period; calling again", exec_id)
        svc.outcomes.upsert(
            day,
            row,
            {
                **_row_fields(job),
                "LegalEntity": le,
                "Status": "Exporting",
                "ExecutionId": exec_id,
                "PackageName": req.package_name,
                "InstanceId": req.instance_id,
                "StartedAt": existing.get("StartedAt") or datetime.now(UTC),
                "ExportRequestedAt": datetime.now(UTC),
                "ExportAttempts": int(existing.get("ExportAttempts") or 0) + 1,
                "ExportRefused": False,
            },
        )
        try:
            api.export_to_package(
                job["data_project"], req.package_name, exec_id, legal_entity_id=le, use_async=True
            )
        except FnoError as exc:
            if (
                exc.refused
            ):  # 429, or 503 with Retry-After: not started; the orchestrator waits and calls again
                svc.outcomes.upsert(day, row, {"ExportRefused": True})
                return to_wire(Started(state="throttled", error=str(exc), retry_after=exc.retry_after))
            if names_existing_execution(exc, exec_id):
                return to_wire(Started(state="started"))  # an earlier call whose answer was lost started it
            if not exc.transient:
                return to_wire(Started(state="failed", error=str(exc)))
            try:
                status = api.get_execution_summary_status(exec_id)
            except FnoError:
                status = ExecutionStatus.NOT_FOUND
            if status is not ExecutionStatus.NOT_FOUND:
                return to_wire(Started(state="started"))
            return to_wire(Started(state="ambiguous", error=str(exc)))
        return to_wire(Started(state="started"))


def check_export(svc: Services, req: CheckExport | dict[str, Any]) -> dict[str, Any]:
    req = CheckExport.of(req)
    api = package_api(svc.settings, req.environment)
    try:
        return to_wire(Checked(status=api.get_execution_summary_status(req.execution_id).value))
    except FnoError as exc:
        return to_wire(Checked(status="Unreachable", error=str(exc)))


def run_stamp(run_id: str) -> str:
    """The scheduled time a run id was made for (``export_run_id``): ``yyyymmddTHHMMSS``."""
    return run_id.rsplit("-", 1)[-1]


def archive_path(job_name: str, day: str, name: str, run_id: str) -> str:
    """``exports/<job>/yyyy/mm/dd/<package name>.zip`` when the name tells the runs apart (it holds the run's
    ``{timestamp}``, as the default pattern does), else ``.../<package name>-<HHMMSS of the run>.zip``: every
    run keeps its own package, and a repeated fetch of one run (retry, redelivery, replay) writes the same
    name again instead of a second copy."""
    stamp = run_stamp(run_id)
    if stamp.replace("T", "") not in name:
        name = f"{name}-{stamp.partition('T')[2] or stamp}"
    return f"exports/{safe_name(job_name)}/{day[:4]}/{day[4:6]}/{day[6:8]}/{name}.zip"


def fetch_export(svc: Services, req: ExportPackage | dict[str, Any]) -> dict[str, Any]:
    """GetExportedPackageUrl (empty until F&O has written the package), then copy it into the archive.

    Server-side copy first (nothing passes through the worker), streamed when refused.
    """
    req = ExportPackage.of(req)
    s = svc.settings
    job = req.job
    api = package_api(s, job["environment"])
    try:
        url = api.get_exported_package_url(req.execution_id)
    except FnoError as exc:
        if exc.refused:  # the 429 storm lost an export after six refusals counted as failures
            return to_wire(Fetched(ready=False, refused=True, retry_after=exc.retry_after, error=str(exc)))
        return to_wire(Fetched(ready=False, error=str(exc), permanent=not exc.transient))
    if not url:
        return to_wire(Fetched(ready=False))
    path = archive_path(job["name"], req.day, req.package_name, req.run_id)
    src = blob_client_for_url(url, ca_bundle=s.fno_ca_bundle, timeout=s.fno_transfer_timeout_seconds)
    dest = svc.blob(s.archive_container, path)
    metadata = {
        "execution_id": req.execution_id,
        "export": safe_name(job["name"]),
        "data_project": job["data_project"],
        "environment": job["environment"],
        "source": "scheduled-export",
        "run_id": req.run_id,
    }
    try:
        result = copy_blob(
            src, dest, source_url=url, metadata=metadata, timeout=s.fno_transfer_timeout_seconds
        )
    except Exception as exc:  # storage or network: the orchestrator retries a few times, then records it
        from dmf.redact import redact

        return to_wire(Fetched(ready=False, error=f"copying the package failed: {redact(exc)}"))
    archived = f"{s.archive_container}/{path}"
    return to_wire(Fetched(ready=True, archived=archived, size=result.size, method=result.method))


def record_export(svc: Services, req: ExportResult | dict[str, Any]) -> dict[str, Any]:
    """The run's final outcome row (errors fetched for PartiallySucceeded/Failed), and the guard released."""
    req = ExportResult.of(req)
    job = req.job
    status = req.status
    warnings = None
    messages: list[str] = []
    count = None
    if status in ("PartiallySucceeded", "Failed") and req.started:
        api = package_api(svc.settings, job["environment"])
        try:
            errors = api.get_execution_errors(req.execution_id)
            count = len(errors)
            messages = [e.error_message for e in errors[:MAX_ERROR_MESSAGES]]
        except FnoError as exc:
            messages = [f"could not read execution errors: {exc}"]
    if status == "PartiallySucceeded":
        warnings = "export PartiallySucceeded: the package is archived but some records were not exported"
    svc.outcomes.upsert(
        req.day,
        req.run_id,
        {
            **_row_fields(job),
            "Status": status,
            "Reason": req.reason,
            "ExecutionId": req.execution_id,
            "PackageName": req.package_name,
            "ArchivedBlob": req.archived,
            "SizeBytes": req.size,
            "CopyMethod": req.method,
            "PollCount": req.polls,
            "Warnings": warnings,
            "ErrorCount": count,
            "ErrorSummary": " | ".join(messages) or None,
            **finish_fields(req.started_at, req.finished_at),
            "InstanceId": req.instance_id,
        },
    )
    if req.guard:
        svc.ledger.finish_run(req.guard, req.guard_token or req.run_id)
    return to_wire(Recorded(status=status, warnings=warnings))


def guard_max_age(poll_deadline_minutes: float) -> timedelta:
    """How long a run guard holds before a later firing may take it over (its run must have died)."""
    return timedelta(minutes=poll_deadline_minutes + 60)
