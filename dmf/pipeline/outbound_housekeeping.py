"""Housekeeping: purge old terminal orchestration histories and, optionally, old archive blobs.

History is never deleted by the Durable Azure Storage provider itself, so without this the task hub's
tables grow forever. Archive retention is off by default (``ARCHIVE_RETENTION_DAYS=0``): archives are
the users' record, and lifecycle-management rules on the storage account are the usual tool in Azure.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError

from dmf.pipeline.services import Services
from dmf.storage import clients

log = logging.getLogger(__name__)

# Durable's own epoch floor for "created from": every instance is newer than this.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


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
