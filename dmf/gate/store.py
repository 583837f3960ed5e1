"""The gate's rows in ``GATES_TABLE``: a semaphore with a FIFO queue per environment (see ``dmf/gate``).

Every change of a row goes through ``dmf.storage.etag`` (written only over the version read, started over
when someone else wrote first). ``snapshot`` only reads: it neither creates the state row nor tidies up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from dmf.logs import ops_event
from dmf.pipeline.payloads import Payload
from dmf.storage.etag import MAX_ATTEMPTS, RETRY, read_row, retry_on_conflict, write_if_unchanged
from dmf.storage.outcomes import safe_key

log = logging.getLogger(__name__)

STATE = "state"
MAX_RECHECK_FACTOR = 4
WAITER_PREFIX = "w~"
# Holders whose permit a waiter freed (lease out, F&O not running) are listed on the state row until a sweep
# has looked at their orchestration: one that ended unseen would otherwise leave its package row Importing.
MAX_FREED = 100
__all__ = ["MAX_ATTEMPTS", "Acquire", "Holder", "ImportGate", "recheck_seconds", "stale_after"]


def recheck_seconds(base: float, position: int) -> float:
    """A waiter's safety-net recheck (hand-over normally comes as an event): rarer further back in line."""
    return base * min(1 + position, MAX_RECHECK_FACTOR)


def stale_after(recheck: float) -> float:
    """Waiters refresh at least every ``MAX_RECHECK_FACTOR`` rechecks; missing far more means they are gone."""
    return max(10 * recheck, 300.0)


@dataclass
class Holder:
    ticket: str
    instance_id: str
    lease_until: datetime
    since: datetime
    execution_id: str | None = None  # the F&O execution this permit covers, when known

    def to_json(self) -> dict[str, str | None]:
        return {
            "ticket": self.ticket,
            "instance_id": self.instance_id,
            "lease_until": self.lease_until.isoformat(),
            "since": self.since.isoformat(),
            "execution_id": self.execution_id,
        }

    @classmethod
    def from_json(cls, d: dict[str, str]) -> Holder:
        return cls(
            d["ticket"],
            d["instance_id"],
            datetime.fromisoformat(d["lease_until"]),
            datetime.fromisoformat(d["since"]),
            d.get("execution_id"),
        )


@dataclass(frozen=True)
class Acquire(Payload):
    """``try_acquire``'s answer; ``gate_try_acquire`` puts it on the wire (``to_wire``), the import
    orchestration reads it back (``Acquire.of``)."""

    granted: bool
    position: int  # waiters ahead in the queue (0 when granted)
    holders: list[str] = field(default_factory=list)  # instance ids currently holding
    paused: bool = False  # the gate is paused by an operator: nobody is let in
    canceled: bool = False  # an operator canceled this waiter: it must not import


@dataclass
class _Ask:
    """One ``try_acquire`` call's question."""

    ticket: str
    instance_id: str
    now: datetime
    lease_seconds: float
    stale_after_seconds: float
    execution_id: str | None
    still_running: Callable[[Holder], bool] | None


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _secs(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


def _iso(dt: Any) -> str | None:
    return _aware(dt).isoformat() if isinstance(dt, datetime) else None


class ImportGate:
    def __init__(self, table: TableClient, environment: str, permits: int = 1) -> None:
        self.table = table
        self.pk = safe_key(environment.lower())
        self.permits = permits

    # -- state row -------------------------------------------------------------------------------------
    def _load(self) -> tuple[list[Holder], str]:
        holders, etag, _ = self._load_state()
        return holders, etag

    def _load_state(self) -> tuple[list[Holder], str, dict[str, Any]]:
        """The state row, created when missing (writers need its ETag)."""
        e = read_row(self.table, self.pk, STATE)
        if e is None:
            try:
                self.table.create_entity({"PartitionKey": self.pk, "RowKey": STATE, "Holders": "[]"})
            except ResourceExistsError:
                pass
            e = self.table.get_entity(self.pk, STATE)
        holders = [Holder.from_json(h) for h in json.loads(e.get("Holders") or "[]")]
        return holders, e.metadata["etag"], dict(e)

    def _state_entity(self, holders: list[Holder], freed: list[Holder] | None = None) -> dict[str, Any]:
        entity = {
            "PartitionKey": self.pk,
            "RowKey": STATE,
            "Holders": json.dumps([h.to_json() for h in holders]),
            "HolderCount": len(holders),
            "Permits": self.permits,
        }
        if freed is not None:
            entity["Freed"] = json.dumps([h.to_json() for h in freed[-MAX_FREED:]])
        return entity

    @staticmethod
    def _freed(state: dict[str, Any]) -> list[Holder]:
        return [Holder.from_json(h) for h in json.loads(state.get("Freed") or "[]")]

    def _waiter_rows(self) -> list[dict[str, Any]]:
        q = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        rows = self.table.query_entities(q, parameters={"pk": self.pk, "lo": WAITER_PREFIX, "hi": "w\x7f"})
        return sorted(({**dict(r), "_etag": r.metadata["etag"]} for r in rows), key=lambda r: r["RowKey"])

    @staticmethod
    def _complete(row: dict[str, Any]) -> bool:
        return all(k in row for k in ("Ticket", "InstanceId", "EnqueuedAt", "SeenAt"))

    def _waiters(self) -> list[dict[str, Any]]:
        out = []
        for r in self._waiter_rows():
            if self._complete(r):
                out.append(r)
            else:
                self._delete_quietly(r["RowKey"])  # a fragment left by a race: never let it jam the gate
        return out

    @staticmethod
    def _waiter_key(ticket: str, enqueued_at: datetime) -> str:
        return f"{WAITER_PREFIX}{_aware(enqueued_at).astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}~{safe_key(ticket)}"

    # -- operations ------------------------------------------------------------------------------------
    def enqueue(self, ticket: str, instance_id: str, now: datetime) -> None:
        """Join the queue (idempotent: a re-run finds its row, or finds itself already holding)."""
        holders, _ = self._load()
        if any(h.ticket == ticket for h in holders):
            return
        if any(w["Ticket"] == ticket for w in self._waiters()):
            return
        row = {
            "PartitionKey": self.pk,
            "RowKey": self._waiter_key(ticket, now),
            "Ticket": ticket,
            "InstanceId": instance_id,
            "EnqueuedAt": _aware(now),
            "SeenAt": _aware(now),
        }
        try:
            self.table.create_entity(row)
        except ResourceExistsError:
            pass

    def try_acquire(
        self,
        ticket: str,
        instance_id: str,
        now: datetime,
        *,
        lease_seconds: float,
        stale_after_seconds: float,
        execution_id: str | None = None,
        still_running: Callable[[Holder], bool] | None = None,
    ) -> Acquire:
        """Take a permit if ``ticket`` is first in line and one is free.

        ``still_running`` is asked about each holder whose lease has run out: when its F&O execution is
        still going (the holder's orchestration died mid-import), the permit stays taken, its lease extended.
        """
        ask = _Ask(
            ticket, instance_id, _aware(now), lease_seconds, stale_after_seconds, execution_id, still_running
        )
        return retry_on_conflict(lambda: self._acquire_once(ask), what=f"gate {self.pk}: acquiring {ticket}")

    def _acquire_once(self, ask: _Ask) -> Acquire:
        holders, etag, state = self._load_state()
        paused = bool(state.get("Paused"))
        live = [h for h in holders if h.lease_until > ask.now]
        expired = [h for h in holders if h.lease_until <= ask.now]
        if self._keep_running(expired, live, etag, ask):
            return RETRY  # start over from the stored state either way
        for h in expired:
            self._log_freed(h, ask.now, "lease expired")
        holding = [h.instance_id for h in live]
        if any(h.ticket == ask.ticket for h in live):
            return Acquire(True, 0, holding)
        waiters = self._waiters()
        mine = next((w for w in waiters if w["Ticket"] == ask.ticket), None)
        if mine is None:
            self.enqueue(ask.ticket, ask.instance_id, ask.now)
            return RETRY
        if mine.get("Canceled"):
            return Acquire(False, 0, holding, paused, canceled=True)
        position = self._queue(waiters, mine, ask).index(mine)
        free = 0 if paused else self.permits - len(live)
        freed = [*self._freed(state), *expired] if expired else None
        if position < free:
            return self._grant(live, etag, mine, ask, freed)
        if not self._still_waiting(mine, ask.now):
            return RETRY  # our row changed or vanished: look again
        if expired:
            self._replace_holders(live, etag, freed)
        return Acquire(False, position, holding, paused)

    def _keep_running(self, expired: list[Holder], live: list[Holder], etag: str, ask: _Ask) -> bool:
        """Extend the leases of expired holders whose F&O execution still runs. True when any was kept."""
        kept = [h for h in expired if ask.still_running is not None and ask.still_running(h)]
        for h in kept:
            log.warning(
                "gate %s: %s's lease ran out but its F&O execution %s still runs; keeping the permit",
                self.pk,
                h.instance_id,
                h.execution_id,
            )
            h.lease_until = ask.now + timedelta(seconds=ask.lease_seconds)
        if kept:
            self._replace_holders([*live, *kept], etag)
        return bool(kept)

    def _queue(self, waiters: list[dict[str, Any]], mine: dict[str, Any], ask: _Ask) -> list[dict[str, Any]]:
        """The waiters in line (``mine`` always); stale ones are removed, canceled ones skipped."""
        cutoff = ask.now - timedelta(seconds=ask.stale_after_seconds)
        queue = [w for w in waiters if w is mine or (_aware(w["SeenAt"]) >= cutoff and not w.get("Canceled"))]
        for w in waiters:
            if w not in queue and not w.get("Canceled"):
                log.warning("gate %s: dropping stale waiter %s (%s)", self.pk, w["Ticket"], w["InstanceId"])
                self._delete_quietly(w["RowKey"], w["_etag"])  # unless it just refreshed itself
        return queue

    def _grant(
        self, live: list[Holder], etag: str, mine: dict[str, Any], ask: _Ask, freed: list[Holder] | None
    ) -> Acquire:
        """Move ``mine`` from the queue to the holders in one transaction (both ETag-matched)."""
        lease_until = ask.now + timedelta(seconds=ask.lease_seconds)
        new = [*live, Holder(ask.ticket, ask.instance_id, lease_until, ask.now, ask.execution_id)]
        matched = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        ops = [
            ("update", self._state_entity(new, freed), {"mode": UpdateMode.MERGE, **matched}),
            # ETag-matched: a cancel written meanwhile makes the grant fail and be looked at again.
            (
                "delete",
                {"PartitionKey": self.pk, "RowKey": mine["RowKey"]},
                {"etag": mine["_etag"], "match_condition": MatchConditions.IfNotModified},
            ),
        ]
        try:
            self.table.submit_transaction(ops)
        except HttpResponseError as exc:  # TableTransactionError included
            log.info("gate %s: lost a race acquiring for %s (%s); retrying", self.pk, ask.ticket, exc)
            return RETRY
        waited = ask.now - _aware(mine["EnqueuedAt"])
        ops_event(
            log,
            "gate_acquired",
            "gate %s: permit to %s after %s",
            self.pk,
            ask.ticket,
            waited,
            gate=self.pk,
            ticket=ask.ticket,
            waited_seconds=_secs(waited),
            holders=len(new),
        )
        return Acquire(True, 0, [h.instance_id for h in new])

    def _still_waiting(self, mine: dict[str, Any], now: datetime) -> bool:
        """Refresh the waiter's ``SeenAt``; False when its row changed or vanished meanwhile."""
        try:
            # Update, never upsert: a row dropped as stale meanwhile must not come back half-empty.
            write_if_unchanged(
                self.table, {"PartitionKey": self.pk, "RowKey": mine["RowKey"], "SeenAt": now}, mine["_etag"]
            )
        except HttpResponseError:
            return False
        return True

    def renew(self, ticket: str, now: datetime, *, lease_seconds: float) -> bool:
        """Extend a holder's lease. False when the ticket no longer holds (its lease expired and was taken)."""
        now = _aware(now)

        def attempt() -> bool:
            holders, etag = self._load()
            mine = next((h for h in holders if h.ticket == ticket), None)
            if mine is None:
                return False
            mine.lease_until = now + timedelta(seconds=lease_seconds)
            return True if self._replace_holders(holders, etag) else RETRY

        return retry_on_conflict(attempt, what=f"gate {self.pk}: renewing {ticket}")

    def release(self, ticket: str, now: datetime, *, stale_after_seconds: float) -> list[str]:
        """Give the permit back (idempotent) and return the instance ids of the waiters now first in line."""
        now = _aware(now)

        def attempt() -> list[str]:
            holders, etag = self._load()
            # Only our own ticket: other holders' expired leases are judged by try_acquire (F&O may still run).
            remaining = [h for h in holders if h.ticket != ticket]
            if len(remaining) != len(holders) and not self._replace_holders(remaining, etag):
                return RETRY
            for h in holders:
                if h.ticket == ticket:
                    self._log_released(h, now)
            self._delete_waiter(ticket)
            return self._next_in_line(len(remaining), now, stale_after_seconds)

        return retry_on_conflict(attempt, what=f"gate {self.pk}: releasing {ticket}")

    def evict(self, instance_ids: set[str], now: datetime, *, stale_after_seconds: float) -> list[str]:
        """Remove holders and waiters belonging to orchestrations seen in a terminal state.

        The caller decides which ended holders may go: one whose F&O execution is still running keeps
        its permit (``renew``) until F&O finishes, so ending an orchestration never lets a second import in.
        """

        def attempt() -> list[str]:
            holders, etag = self._load()
            remaining = [h for h in holders if h.instance_id not in instance_ids]
            if len(remaining) != len(holders):
                for h in holders:
                    if h.instance_id in instance_ids:
                        self._log_freed(h, now, "orchestration ended")
                if not self._replace_holders(remaining, etag):
                    return RETRY
            for w in self._waiters():
                if w["InstanceId"] in instance_ids:
                    self._delete_quietly(w["RowKey"])
            return self._next_in_line(len(remaining), _aware(now), stale_after_seconds)

        return retry_on_conflict(attempt, what=f"gate {self.pk}: evicting")

    def forget_freed(self, instance_ids: set[str]) -> None:
        """Take these off the freed list: a sweep has looked at their ended orchestrations."""

        def attempt() -> None:
            holders, etag, state = self._load_state()
            freed = self._freed(state)
            left = [h for h in freed if h.instance_id not in instance_ids]
            if len(left) != len(freed) and not self._replace_holders(holders, etag, left):
                return RETRY
            return None

        retry_on_conflict(attempt, what=f"gate {self.pk}: forgetting freed holders")

    def snapshot(self) -> dict[str, Any]:
        """Holders, waiters and pause state, as stored. Only reads (a gate never used reads as empty)."""
        try:
            state = dict(read_row(self.table, self.pk, STATE) or {})
            rows = [r for r in self._waiter_rows() if self._complete(r)]
        except ResourceNotFoundError:  # no table yet: nothing was ever queued
            state, rows = {}, []
        paused = bool(state.get("Paused"))
        return {
            "environment": self.pk,
            "permits": self.permits,
            "paused": paused,
            "paused_at": _iso(state.get("PausedAt")) if paused else None,
            "paused_by": state.get("PausedBy"),
            "pause_reason": state.get("PauseReason"),
            "holders": [Holder.from_json(h).to_json() for h in json.loads(state.get("Holders") or "[]")],
            "freed": [h.to_json() for h in self._freed(state)],
            "waiters": [
                {
                    "ticket": w["Ticket"],
                    "instance_id": w["InstanceId"],
                    "enqueued_at": _aware(w["EnqueuedAt"]).isoformat(),
                    "seen_at": _aware(w["SeenAt"]).isoformat(),
                    "canceled": bool(w.get("Canceled")),
                }
                for w in rows
            ],
        }

    # -- operators -------------------------------------------------------------------------------------
    def set_paused(
        self, paused: bool, now: datetime, *, by: str | None = None, reason: str | None = None,
        stale_after_seconds: float = 300.0,
    ) -> list[str]:  # fmt: skip
        """Pause (no new permit is granted) or resume. Returns, on resume, the waiters to wake now.

        ``stale_after_seconds`` is kept for callers' symmetry with ``release``; resuming wakes all waiters.
        """
        now = _aware(now)
        fields = {
            "PartitionKey": self.pk,
            "RowKey": STATE,
            "Paused": paused,
            "PausedAt": now if paused else None,
            "PausedBy": (by or "")[:200] if paused else "",
            "PauseReason": (reason or "")[:500] if paused else "",
        }

        def attempt() -> None:
            _, etag, _ = self._load_state()
            write_if_unchanged(self.table, {k: v for k, v in fields.items() if v is not None}, etag)

        retry_on_conflict(attempt, what=f"gate {self.pk}: pausing")
        log.warning("gate %s %s by %s", self.pk, "paused" if paused else "resumed", by or "an operator")
        if paused:
            return []
        # Wake every waiter (a rare, manual step): the first in line gets in at once, the others look and
        # wait again. Staleness is not judged here: the caller's clock is not the orchestrations' clock.
        return [w["InstanceId"] for w in self._waiters() if not w.get("Canceled")]

    def cancel_waiter(self, instance_id: str, now: datetime) -> bool:
        """Mark ``instance_id``'s waiter row canceled. False when it is not waiting (granted, or gone)."""

        def attempt() -> bool:
            mine = next((w for w in self._waiters() if w["InstanceId"] == instance_id), None)
            if mine is None:
                return False
            patch = {
                "PartitionKey": self.pk,
                "RowKey": mine["RowKey"],
                "Canceled": True,
                "CanceledAt": _aware(now),
            }
            try:
                write_if_unchanged(self.table, patch, mine["_etag"])
            except HttpResponseError:
                return RETRY  # it refreshed, or was granted and deleted: look again
            return True

        return retry_on_conflict(attempt, what=f"gate {self.pk}: canceling {instance_id}")

    # -- helpers ---------------------------------------------------------------------------------------
    def _log_freed(self, h: Holder, now: datetime, reason: str) -> None:
        """A permit freed without its holder releasing it: an operations event (alerts read it)."""
        held = _secs(_aware(now) - _aware(h.since))
        ops_event(
            log,
            "gate_freed",
            "gate %s: freeing the permit of %s (%s): %s",
            self.pk,
            h.ticket,
            h.instance_id,
            reason,
            level=logging.WARNING,
            gate=self.pk,
            ticket=h.ticket,
            reason=reason,
            held_seconds=held,
        )

    def _log_released(self, h: Holder, now: datetime) -> None:
        held = now - _aware(h.since)
        ops_event(
            log,
            "gate_released",
            f"gate {self.pk}: {h.ticket} gave its permit back after {held}",
            gate=self.pk,
            ticket=h.ticket,
            held_seconds=_secs(held),
        )

    def _replace_holders(self, holders: list[Holder], etag: str, freed: list[Holder] | None = None) -> bool:
        """Write the holders (and the freed list, when given) over the state row read as ``etag``; False when
        it changed since."""
        try:
            write_if_unchanged(self.table, self._state_entity(holders, freed), etag)
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise
        return True

    def _next_in_line(self, holding: int, now: datetime, stale_after_seconds: float) -> list[str]:
        if self._load_state()[2].get("Paused"):
            return []  # nobody is let in while paused: resuming wakes them
        free = max(self.permits - holding, 0)
        cutoff = now - timedelta(seconds=stale_after_seconds)
        fresh = [w for w in self._waiters() if _aware(w["SeenAt"]) >= cutoff and not w.get("Canceled")]
        return [w["InstanceId"] for w in fresh[:free]]

    def _delete_waiter(self, ticket: str) -> None:
        for w in self._waiters():
            if w["Ticket"] == ticket:
                self._delete_quietly(w["RowKey"])

    def _delete_quietly(self, row_key: str, etag: str | None = None) -> None:
        try:
            if etag:
                self.table.delete_entity(
                    self.pk, row_key, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            else:
                self.table.delete_entity(self.pk, row_key)
        except (ResourceNotFoundError, HttpResponseError):
            pass
