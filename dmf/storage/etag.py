"""One optimistic-concurrency loop for every Table row that several workers change (gate, ledger, outcomes).

A change reads the row, decides, and writes only over the version it read (``If-Match: <etag>``; a create
when the row was missing). Someone else's write in between answers 412 (or 409 for two creates): the change
starts over from a fresh read, a bounded number of times, then gives up with ``ContentionError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

T = TypeVar("T")

MAX_ATTEMPTS = 20
CONFLICT = frozenset({409, 412})  # created meanwhile; changed meanwhile


class ContentionError(RuntimeError):
    """The row kept changing under us for every attempt."""


class _Retry:
    def __repr__(self) -> str:
        return "RETRY"


RETRY: Any = _Retry()  # an attempt's answer meaning "look again" (a lost race it detected itself)


def retry_on_conflict(attempt: Callable[[], T], *, what: str, attempts: int = MAX_ATTEMPTS) -> T:
    """Run ``attempt`` until it answers something other than ``RETRY`` without a 409/412 from storage."""
    for _ in range(attempts):
        try:
            out = attempt()
        except HttpResponseError as exc:
            if exc.status_code in CONFLICT:
                continue
            raise
        if out is not RETRY:
            return out
    raise ContentionError(f"too much contention {what}")


@dataclass(frozen=True)
class Write:
    """What ``update_row``'s ``decide`` wants written (merged, or replacing the row) and what to answer."""

    fields: dict[str, Any]
    result: Any = None
    mode: UpdateMode = field(default=UpdateMode.MERGE)


def write_if_unchanged(
    table: TableClient, entity: dict[str, Any], etag: str, mode: UpdateMode = UpdateMode.MERGE
) -> None:
    """Write ``entity`` only over the version ``etag`` names (412 when it changed)."""
    table.update_entity(entity, mode=mode, etag=etag, match_condition=MatchConditions.IfNotModified)


def delete_if_unchanged(table: TableClient, entity: TableEntity) -> bool:
    """Delete the row read as ``entity`` unless it changed or went since; True when deleted."""
    try:
        table.delete_entity(
            entity, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
        )
    except HttpResponseError:
        return False
    return True


def read_row(table: TableClient, pk: str, rk: str) -> TableEntity | None:
    try:
        return table.get_entity(pk, rk)
    except ResourceNotFoundError:
        return None


def update_row(
    table: TableClient,
    pk: str,
    rk: str,
    decide: Callable[[TableEntity | None], Write | Any],
    *,
    what: str,
    attempts: int = MAX_ATTEMPTS,
) -> Any:
    """Read row (pk, rk) (None when missing); ``decide`` answers a ``Write`` or, to write nothing, the result.

    The write goes only over the version read (a create when there was none); a lost race reads again.
    """

    def attempt() -> Any:
        current = read_row(table, pk, rk)
        decision = decide(current)
        if not isinstance(decision, Write):
            return decision
        entity = {**decision.fields, "PartitionKey": pk, "RowKey": rk}
        try:
            if current is None:
                table.create_entity(entity)
            else:
                write_if_unchanged(table, entity, current.metadata["etag"], decision.mode)
        except ResourceNotFoundError:
            return RETRY  # deleted since we read it: read again
        return decision.result

    return retry_on_conflict(attempt, what=what, attempts=attempts)
