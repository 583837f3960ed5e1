"""Recurring-export drains, now in ``dmf.pipeline.drain`` (the run) and ``dmf.pipeline.archive`` (the archive).

Kept so that ``from dmf.pipeline import outbound`` (activities, triggers) and older imports still work.
"""

from dmf.pipeline.archive import (
    INDEX_PARTITION,
    SMALL_MESSAGE_BYTES,
    ArchiveIndex,
    ArchiveMismatch,
    FileGone,
    IndexEntry,
    _ext_for,
    archive_index,
    archive_once,
    archive_path,
    archive_stem,
)
from dmf.pipeline.drain import (
    BATCH_MESSAGES,
    BATCH_SECONDS,
    DEFAULT_WORKERS,
    drain_batch,
    drain_instance_id,
    drain_run_id,
    message_row,
    process_message,
    record_drain_result,
    record_drain_start,
)
from dmf.pipeline.ids import safe_name

__all__ = [
    "BATCH_MESSAGES",
    "BATCH_SECONDS",
    "DEFAULT_WORKERS",
    "INDEX_PARTITION",
    "SMALL_MESSAGE_BYTES",
    "ArchiveIndex",
    "ArchiveMismatch",
    "FileGone",
    "IndexEntry",
    "_ext_for",
    "archive_index",
    "archive_once",
    "archive_path",
    "archive_stem",
    "drain_batch",
    "drain_instance_id",
    "drain_run_id",
    "message_row",
    "process_message",
    "record_drain_result",
    "record_drain_start",
    "safe_name",
]
