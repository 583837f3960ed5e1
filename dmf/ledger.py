"""Small facts the pipeline remembers across runs, in the ``LEDGER_TABLE``.

- ``content`` partition: which drop first claimed a content hash, so the same bytes dropped again under
  another name are recorded as a duplicate instead of imported twice. A claim is released when its drop
  ends Rejected or Failed, so a corrected re-drop (or a retry of a failed one) imports.
- ``duration`` partition: how long imports of a data project usually take (an exponentially weighted
  mean), so polling can wait about that long before its first status call instead of burning calls.
- ``run`` partition: single-run guards for timer-started jobs (a drain or export never overlaps itself).
- ``f~<hash of container/name>`` partitions: the operators' index of drops per source blob, one row per
  drop keyed by its inverted arrival time (newest first), written when the drop starts; ``drop`` partition:
  the outcome day of each drop, so ``GET /api/drops/{id}`` finds its rows without a scan.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from dmf.storage.etag import ContentionError, Write, delete_if_unchanged, read_row, update_row
from dmf.storage.outcomes import safe_key

EWMA_WEIGHT = 0.5
_INVERT_MS = 10**14  # > any epoch millisecond this code will see: inverted times sort newest first


def file_partition(source: str) -> str:
    """The index partition of a source blob (``container/name``; names may be 1,024 characters long)."""
    return "f~" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Claim:
    owner: str  # the drop (instance id) that holds the content
    mine: bool
    source_blob: str | None = None


class Ledger:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    # -- content claims ------------------------------------------------------------------------------
    def claim_content(self, sha256: str, drop_id: str, source_blob: str) -> Claim:
        entity = {"PartitionKey": "content", "RowKey": sha256, "Owner": drop_id, "SourceBlob": source_blob}
        try:
            self.table.create_entity(entity)
            return Claim(drop_id, True, source_blob)
        except ResourceExistsError:
            e = self.table.get_entity("content", sha256)
            return Claim(e["Owner"], e["Owner"] == drop_id, e.get("SourceBlob"))

    def release_content(self, sha256: str, drop_id: str) -> None:
        self._delete_owned("content", sha256, "Owner", drop_id)

    def _delete_owned(self, partition: str, row: str, owner_field: str, owner: str) -> None:
        """Delete the row while ``owner_field`` names ``owner`` and nobody changed it since it was read."""
        e = read_row(self.table, partition, row)
        if e is not None and e[owner_field] == owner:
            delete_if_unchanged(self.table, e)

    # -- learned durations ---------------------------------------------------------------------------
    def expected_duration(self, environment: str, data_project: str) -> float | None:
        try:
            e = self.table.get_entity("duration", safe_key(f"{environment}|{data_project}"))
        except ResourceNotFoundError:
            return None
        return float(e["Seconds"])

    def record_duration(self, environment: str, data_project: str, seconds: float) -> float:
        def decide(e: TableEntity | None) -> Write:
            if e is None:
                return Write({"Seconds": seconds, "Samples": 1}, seconds)
            new = (1 - EWMA_WEIGHT) * float(e["Seconds"]) + EWMA_WEIGHT * seconds
            return Write({"Seconds": new, "Samples": int(e.get("Samples", 0)) + 1}, new)

        key = safe_key(f"{environment}|{data_project}")
        try:
            return update_row(self.table, "duration", key, decide, what=f"learning {key}", attempts=10)
        except ContentionError:
            return seconds  # a lost sample: the mean is a hint

    # -- single-run guards ---------------------------------------------------------------------------
    def try_start_run(self, name: str, run_id: str, now: datetime, max_age: timedelta) -> str | None:
        """Mark ``name`` as running by ``run_id``. Returns the id already running, or None if we got it.

        A guard older than ``max_age`` is taken over (its run died without finishing).
        """
        now = now.astimezone(UTC)

        def decide(e: TableEntity | None) -> Write | str | None:
            if e is not None and e["RunId"] == run_id:
                return None  # ours already (a re-run)
            if e is not None and e["Since"] + max_age > now:
                return e["RunId"]  # another run holds it
            return Write({"RunId": run_id, "Since": now}, None, UpdateMode.REPLACE)

        return update_row(self.table, "run", safe_key(name), decide, what=f"on run guard {name}", attempts=10)

    def run_since(self, name: str) -> datetime | None:
        """When the current holder of guard ``name`` took it (None: nobody holds it)."""
        try:
            return self.table.get_entity("run", safe_key(name))["Since"]
        except ResourceNotFoundError:
            return None

    def finish_run(self, name: str, run_id: str) -> None:
        self._delete_owned("run", safe_key(name), "RunId", run_id)

    # -- operators' index ----------------------------------------------------------------------------
    def index_drop(self, source: str, drop_id: str, day: str, received_at: datetime) -> None:
        """Record that ``drop_id`` (outcome day ``day``) handles ``source``. Idempotent."""
        ms = int(received_at.astimezone(UTC).timestamp() * 1000)
        self.table.upsert_entity(
            {
                "PartitionKey": file_partition(source),
                "RowKey": f"{_INVERT_MS - ms:015d}~{safe_key(drop_id)}",
                "SourceBlob": source[:1100],
                "DropId": drop_id,
                "Day": day,
                "ReceivedAt": received_at.astimezone(UTC),
            },
            mode=UpdateMode.MERGE,  # a re-run of the drop's first step keeps the status its end recorded
        )
        self.table.upsert_entity({"PartitionKey": "drop", "RowKey": safe_key(drop_id), "Day": day})

    def drops_of(self, source: str, limit: int = 100) -> list[dict[str, Any]]:
        """The drops of ``source``, newest first (one partition read; never a scan)."""
        rows = self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": file_partition(source)}, results_per_page=limit
        )
        out = []
        for r in rows:
            if r.get("SourceBlob") == source[:1100]:  # a hash collision is not this file
                out.append(
                    {
                        "drop_id": r["DropId"],
                        "day": r["Day"],
                        "received_at": r.get("ReceivedAt"),
                        "status": r.get("Status"),
                        "effective_status": r.get("EffectiveStatus"),
                        "reason": r.get("Reason"),
                        "finished_at": r.get("FinishedAt"),
                    }
                )
            if len(out) >= limit:
                break
        return out

    def update_index(self, source: str, drop_id: str, fields: dict[str, Any]) -> None:
        """Copy a drop's end (status, reason) onto its index row, so a file's history is one read."""
        rows = self.table.query_entities(
            "PartitionKey eq @pk and DropId eq @id", parameters={"pk": file_partition(source), "id": drop_id}
        )
        for r in rows:
            self.table.upsert_entity(
                {"PartitionKey": r["PartitionKey"], "RowKey": r["RowKey"], **fields}, mode=UpdateMode.MERGE
            )

    def drop_day(self, drop_id: str) -> str | None:
        try:
            return self.table.get_entity("drop", safe_key(drop_id))["Day"]
        except ResourceNotFoundError:
            return None
