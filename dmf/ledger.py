"""Small facts the pipeline remembers across runs, in the ``LEDGER_TABLE``.

- ``content`` partition: which drop first claimed a content hash, so the same bytes dropped again under
  another name are recorded as a duplicate instead of imported twice. A claim is released when its drop
  ends Rejected or Failed, so a corrected re-drop (or a retry of a failed one) imports.
- ``duration`` partition: how long imports of a data project usually take (an exponentially weighted
  mean), so polling can wait about that long before its first status call instead of burning calls.
- ``run`` partition: single-run guards for timer-started jobs (a drain or export never overlaps itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from dmf.storage.outcomes import safe_key

EWMA_WEIGHT = 0.5


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
        try:
            e = self.table.get_entity("content", sha256)
        except ResourceNotFoundError:
            return
        if e["Owner"] == drop_id:
            try:
                self.table.delete_entity(
                    e, etag=e.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )
            except HttpResponseError:
                pass

    # -- learned durations ---------------------------------------------------------------------------
    def expected_duration(self, environment: str, data_project: str) -> float | None:
        try:
            e = self.table.get_entity("duration", safe_key(f"{environment}|{data_project}"))
        except ResourceNotFoundError:
            return None
        return float(e["Seconds"])

    def record_duration(self, environment: str, data_project: str, seconds: float) -> float:
        key = safe_key(f"{environment}|{data_project}")
        for _ in range(10):
            try:
                e = self.table.get_entity("duration", key)
            except ResourceNotFoundError:
                try:
                    self.table.create_entity(
                        {"PartitionKey": "duration", "RowKey": key, "Seconds": seconds, "Samples": 1}
                    )
                    return seconds
                except ResourceExistsError:
                    continue
            new = (1 - EWMA_WEIGHT) * float(e["Seconds"]) + EWMA_WEIGHT * seconds
            e["Seconds"], e["Samples"] = new, int(e.get("Samples", 0)) + 1
            try:
                self.table.update_entity(
                    e,
                    mode=UpdateMode.REPLACE,
                    etag=e.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return new
            except HttpResponseError:
                continue
        return seconds

    # -- single-run guards ---------------------------------------------------------------------------
    def try_start_run(self, name: str, run_id: str, now: datetime, max_age: timedelta) -> str | None:
        """Mark ``name`` as running by ``run_id``. Returns the id already running, or None if we got it.

        A guard older than ``max_age`` is taken over (its run died without finishing).
        """
        key = safe_key(name)
        now = now.astimezone(UTC)
        for _ in range(10):
            try:
                e = self.table.get_entity("run", key)
            except ResourceNotFoundError:
                try:
                    self.table.create_entity(
                        {"PartitionKey": "run", "RowKey": key, "RunId": run_id, "Since": now}
                    )
                    return None
                except ResourceExistsError:
                    continue
            if e["RunId"] == run_id:
                return None
            if e["Since"] + max_age > now:
                return e["RunId"]
            e["RunId"], e["Since"] = run_id, now
            try:
                self.table.update_entity(
                    e,
                    mode=UpdateMode.REPLACE,
                    etag=e.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return None
            except HttpResponseError:
                continue
        raise RuntimeError(f"contention on run guard {name}")

    def run_since(self, name: str) -> datetime | None:
        """When the current holder of guard ``name`` took it (None: nobody holds it)."""
        try:
            return self.table.get_entity("run", safe_key(name))["Since"]
        except ResourceNotFoundError:
            return None

    def finish_run(self, name: str, run_id: str) -> None:
        try:
            e = self.table.get_entity("run", safe_key(name))
        except ResourceNotFoundError:
            return
        if e["RunId"] == run_id:
            try:
                self.table.delete_entity(
                    e, etag=e.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )
            except HttpResponseError:
                pass
