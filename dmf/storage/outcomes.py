"""The outcome store: where users read what happened to every drop, package, drain and export.

Table ``OUTCOMES_TABLE``. Entity schema (documented in docs/OUTCOMES.md):

- ``PartitionKey``: the UTC day the work was received, ``yyyyMMdd`` (operators list a day cheaply).
- ``RowKey``: ``<run id>`` for the summary row of a drop / drain / export run, ``<run id>~<nnn>`` for
  one package or message inside it. Run ids are our deterministic orchestration instance ids.
- Common properties: ``Kind`` (drop | package | export | message | enqueue), ``Status``, ``Reason``,
  ``Environment``, ``LegalEntity``, ``DataProject``, ``Entity``, ``ExecutionId``, ``SourceBlob``,
  ``ArchivedBlob``, ``StagedBlob``, ``Records``, ``ErrorCount``, ``ErrorSummary``, ``ErrorFiles`` (JSON list
  of blob paths), ``SummaryPageUrl``, ``PollCount``, ``StartedAt``, ``ImportRequestedAt``, ``FinishedAt``,
  ``DurationSeconds``, ``ContentSha256``, ``InstanceId``, ``Warnings``.

Keys are made safe for Table rules (no ``/ \\ # ?`` or control characters). Every string value is passed
through ``redact`` and truncated to fit a Table property, so no SAS signature or token lands here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from dmf.redact import redact

_BAD_KEY_CHARS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
MAX_STRING = 30_000  # characters; a Table string property holds 64 KiB of UTF-16

TERMINAL_STATUSES = frozenset(
    {"Succeeded", "PartiallySucceeded", "Failed", "Canceled", "Rejected", "Duplicate", "TimedOut",
     "Archived", "Processed", "ProcessedWithErrors", "PreProcessingError", "PostProcessingFailed",
     "CompletedWithRejections", "Skipped"}
)  # fmt: skip


def safe_key(value: str) -> str:
    """A PartitionKey/RowKey-safe version of ``value`` (reversible enough to read, never ambiguous)."""
    return _BAD_KEY_CHARS.sub("_", value)[:512]


def day_key(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%d")


def finish_fields(started_at: str, finished_at: str) -> dict[str, Any]:
    """A run's ``FinishedAt`` and ``DurationSeconds`` columns, from its ISO start and finish times."""
    started, finished = datetime.fromisoformat(started_at), datetime.fromisoformat(finished_at)
    return {"FinishedAt": finished, "DurationSeconds": round((finished - started).total_seconds(), 3)}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        s = redact(value)
        return s if len(s) <= MAX_STRING else s[: MAX_STRING - 20] + " …[truncated]"
    if isinstance(value, (list, dict)):
        return _clean(json.dumps(value, default=str))
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


class OutcomeStore:
    """Upserts and reads outcome rows. Merge semantics: a later write adds or replaces named properties."""

    def __init__(self, table: TableClient) -> None:
        self.table = table

    def upsert(self, partition: str, row: str, fields: Mapping[str, Any]) -> None:
        entity = {"PartitionKey": safe_key(partition), "RowKey": safe_key(row)}
        entity.update({k: _clean(v) for k, v in fields.items() if v is not None})
        self.table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def get(self, partition: str, row: str) -> dict[str, Any] | None:
        try:
            return dict(self.table.get_entity(safe_key(partition), safe_key(row)))
        except ResourceNotFoundError:
            return None

    def rows_for_run(self, partition: str, run_id: str) -> list[dict[str, Any]]:
        """The summary row and its package/message rows, in order."""
        rid = safe_key(run_id)
        q = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        params = {"pk": safe_key(partition), "lo": rid, "hi": rid + "\x7f"}
        rows = [dict(e) for e in self.table.query_entities(q, parameters=params)]
        return sorted(rows, key=lambda r: r["RowKey"])

    def day(self, partition: str, kind: str | None = None) -> Iterator[dict[str, Any]]:
        q, params = "PartitionKey eq @pk", {"pk": safe_key(partition)}
        if kind:
            q += " and Kind eq @kind"
            params["kind"] = kind
        for e in self.table.query_entities(q, parameters=params):
            yield dict(e)
