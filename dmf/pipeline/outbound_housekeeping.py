"""Housekeeping: purge old terminal orchestration histories, outcome and ledger rows past their retention
and, optionally, old archive blobs.

History is never deleted by the Durable Azure Storage provider itself, so without this the task hub's
tables grow forever. The same holds for the app's own tables: ``purge_expired_rows`` deletes outcome rows of
days older than ``OUTCOME_RETENTION_DAYS`` and the ledger rows that only matter for a while (content claims,
the outbound archive index), in batched per-partition transactions within a time budget.

Archive retention is off by default (``ARCHIVE_RETENTION_DAYS=0``): archives are the users' record. Blobs in
the data containers are better aged out by the storage account's lifecycle-management rules (Bicep parameters
``*RetentionDays`` in ``infra/main.bicep``); ``purge_archives`` does the same job as the ``archive`` rule, in
code, for deployments without one. Set one or the other, not both (docs/RUNBOOK.md, "Retention").
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from dmf.pipeline.outbound import INDEX_PARTITION
from dmf.pipeline.services import Services
from dmf.storage import clients
from dmf.storage.outcomes import day_key

log = logging.getLogger(__name__)

# Durable's own epoch floor for "created from": every instance is newer than this.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# A Table transaction holds at most 100 operations, all in one partition.
BATCH_SIZE = 100
# One housekeeping run deletes rows for at most this long; the next run goes on where it stopped.
PURGE_MAX_SECONDS = 240.0
# Ledger partitions whose rows only matter for a while. The others are kept: ``duration`` (learned import
# durations), ``run`` (live single-run guards), ``export-schedule`` (each export job's last due time).
EXPIRING_LEDGER_PARTITIONS = ("content", INDEX_PARTITION)
_DAY = re.compile(r"^\d{8}$")


@dataclass
class PurgeResult:
    deleted: int = 0
    partitions: int = 0
    complete: bool = True  # False when the time budget ran out first


def _monotonic() -> float:
    return time.monotonic()


def _delete_in_batches(
    table: TableClient,
    rows: Iterable[dict[str, Any]],
    clock: Callable[[], float],
    deadline: float,
    result: PurgeResult,
) -> PurgeResult:
    """Delete ``rows`` (sorted by PartitionKey, as Table queries return them) in transactions of up to 100."""
    for pk, group in groupby(rows, key=lambda r: r["PartitionKey"]):
        result.partitions += 1
        for batch in _chunks(group, BATCH_SIZE):
            if clock() >= deadline:
                result.complete = False
                return result
            table.submit_transaction([("delete", {"PartitionKey": pk, "RowKey": r["RowKey"]}) for r in batch])
            result.deleted += len(batch)
    return result


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for r in rows:
        batch.append(r)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def purge_outcomes(
    table: TableClient,
    cutoff: datetime,
    clock: Callable[[], float] = _monotonic,
    *,
    max_seconds: float = PURGE_MAX_SECONDS,
) -> PurgeResult:
    """Delete every outcome row of a day (PartitionKey ``yyyyMMdd``) before ``cutoff``'s UTC day.

    Whole days go, so a run's summary row and its package or message rows (same day, same partition) always
    go together. ``clock`` (seconds, monotonic) bounds the run to ``max_seconds``.
    """
    deadline = clock() + max_seconds
    rows = table.query_entities(
        "PartitionKey lt @day", parameters={"day": day_key(cutoff)}, select=["PartitionKey", "RowKey"]
    )
    days = (r for r in rows if _DAY.match(str(r["PartitionKey"])))
    return _delete_in_batches(table, days, clock, deadline, PurgeResult())


def purge_ledger(
    table: TableClient,
    cutoff: datetime,
    clock: Callable[[], float] = _monotonic,
    *,
    max_seconds: float = PURGE_MAX_SECONDS,
) -> PurgeResult:
    """Delete content claims and archive-index rows last written before ``cutoff`` (their Table Timestamp)."""
    deadline = clock() + max_seconds
    result = PurgeResult()
    for pk in EXPIRING_LEDGER_PARTITIONS:
        rows = table.query_entities(
            "PartitionKey eq @pk and Timestamp lt @cutoff",
            parameters={"pk": pk, "cutoff": cutoff.astimezone(UTC)},
            select=["PartitionKey", "RowKey"],
        )
        _delete_in_batches(table, rows, clock, deadline, result)
        if not result.complete:
            break
    return result


def purge_expired_rows(svc: Services, now: datetime) -> dict[str, Any]:
    """The housekeeping step for the app's tables: outcome and ledger rows past ``OUTCOME_RETENTION_DAYS``."""
    days = svc.settings.outcome_retention_days
    if days <= 0:
        return {"outcome_rows_deleted": 0, "ledger_rows_deleted": 0, "complete": True}
    cutoff = now.astimezone(UTC) - timedelta(days=days)
    started = _monotonic()
    outcomes = purge_outcomes(svc.outcomes.table, cutoff)
    left = max(0.0, PURGE_MAX_SECONDS - (_monotonic() - started))
    ledger = purge_ledger(svc.ledger.table, cutoff, max_seconds=left) if outcomes.complete else PurgeResult()
    result = {
        "outcome_rows_deleted": outcomes.deleted,
        "ledger_rows_deleted": ledger.deleted,
        "complete": outcomes.complete and ledger.complete,
    }
    if outcomes.deleted or ledger.deleted:
        log.info("deleted rows older than %s days: %s", days, result)
    return result


def history_cutoff(now: datetime, retention_days: float) -> datetime:
    return now.astimezone(UTC) - timedelta(days=retention_days)


def purge_archives(svc: Services, now: datetime) -> int:
    """Delete archive blobs last modified before the retention cutoff; returns how many."""
    days = svc.settings.archive_retention_days
    if days <= 0:
        return 0
    cutoff = now.astimezone(UTC) - timedelta(days=days)
    cc = clients.container(svc.settings, svc.settings.archive_container)
    deleted = 0
    for props in cc.list_blobs():
        if props.last_modified and props.last_modified < cutoff:
            try:
                cc.delete_blob(props.name, delete_snapshots="include")
                deleted += 1
            except ResourceNotFoundError:
                pass
    if deleted:
        log.info("deleted %d archive blobs older than %s days", deleted, days)
    return deleted
