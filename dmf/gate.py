"""The import gate: at most ``permits`` ImportFromPackage executions in flight per F&O environment.

F&O's ``ImportFromPackage`` must not run in parallel ("Otherwise, it fails"), across every orchestration
of this app. Durable Functions for Python 1.x has no entity locks, so the gate is a small Table-backed
semaphore with a FIFO queue, driven by activities:

- One partition per environment. Row ``state`` holds the holders (ticket, instance, lease expiry) and
  ``Permits``; it is only ever replaced with an ETag match, so two acquirers can never both win.
- Each waiter has a row ``w~<enqueued-at>~<ticket>``: row keys sort in arrival order, which is the FIFO.
- A holder's lease is renewed on every status poll. A crashed holder's lease expires; a terminated one is
  evicted as soon as a sweeper sees its orchestration in a terminal state (``evict``). Waiters refresh
  ``SeenAt`` whenever they try; a waiter not seen for ``stale_after`` seconds is skipped and removed, so a
  dead waiter cannot block the queue.
- ``release`` returns the instance ids of the next waiters so the caller can raise an event to them at
  once (no waiter sits out a polling interval after a release).
- Operators may **pause** a gate (``Paused`` on the state row, set with an ETag match like every other
  change): no permit is granted while paused, holders finish, waiters keep their place. They may also
  **cancel** a waiter (``Canceled`` on its row, ETag-matched, so a waiter being granted meanwhile wins and
  the cancel says so): the waiter's next ``try_acquire`` answers ``canceled`` instead of joining the queue.
  State-row writes merge, so holders' updates never wipe the pause and a pause never wipes the holders.

Times come from the caller: orchestrations pass ``context.current_utc_datetime``, which keeps the gate
deterministic under replay and lets a virtual clock drive it in tests.
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
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from dmf.logs import ops_event
from dmf.storage.outcomes import safe_key

log = logging.getLogger(__name__)

STATE = "state"
MAX_RECHECK_FACTOR = 4


def recheck_seconds(base: float, position: int) -> float:
    """A waiter's safety-net recheck (hand-over normally comes as an event): rarer further back in line."""
    return base * min(1 + position, MAX_RECHECK_FACTOR)


def stale_after(recheck: float) -> float:
    """Waiters refresh at least every ``MAX_RECHECK_FACTOR`` rechecks; missing far more means they are gone."""
    return max(10 * recheck, 300.0)


WAITER_PREFIX = "w~"
MAX_ATTEMPTS = 20


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


@dataclass
class Acquire:
    granted: bool
    position: int  # waiters ahead in the queue (0 when granted)
    holders: list[str] = field(default_factory=list)  # instance ids currently holding
    paused: bool = False  # the gate is paused by an operator: nobody is let in
    canceled: bool = False  # an operator canceled this waiter: it must not import


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


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
        try:
            e = self.table.get_entity(self.pk, STATE)
        except ResourceNotFoundError:
            try:
                self.table.create_entity({"PartitionKey": self.pk, "RowKey": STATE, "Holders": "[]"})
            except ResourceExistsError:
                pass
            e = self.table.get_entity(self.pk, STATE)
        holders = [Holder.from_json(h) for h in json.loads(e.get("Holders") or "[]")]
        return holders, e.metadata["etag"], dict(e)

    def _state_entity(self, holders: list[Holder]) -> dict[str, Any]:
        return {
            "PartitionKey": self.pk,
            "RowKey": STATE,
            "Holders": json.dumps([h.to_json() for h in holders]),
            "HolderCount": len(holders),
            "Permits": self.permits,
        }

    def _waiters(self) -> list[dict[str, Any]]:
        q = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        rows = self.table.query_entities(q, parameters={"pk": self.pk, "lo": WAITER_PREFIX, "hi": "w\x7f"})
        out = []
        for r in rows:
            if not all(k in r for k in ("Ticket", "InstanceId", "EnqueuedAt", "SeenAt")):
                self._delete_quietly(r["RowKey"])  # a fragment left by a race: never let it jam the gate
                continue
            out.append({**dict(r), "_etag": r.metadata["etag"]})
        return sorted(out, key=lambda r: r["RowKey"])

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
        now = _aware(now)
        for _ in range(MAX_ATTEMPTS):
            holders, etag, state = self._load_state()
            paused = bool(state.get("Paused"))
            live = [h for h in holders if h.lease_until > now]
            expired = [h for h in holders if h.lease_until <= now]
            kept = [h for h in expired if still_running is not None and still_running(h)]
            if kept:
                for h in kept:
                    log.warning(
                        "gate %s: %s's lease ran out but its F&O execution %s still runs; keeping the permit",
                        self.pk,
                        h.instance_id,
                        h.execution_id,
                    )
                    h.lease_until = now + timedelta(seconds=lease_seconds)
                live += kept
                expired = [h for h in expired if h not in kept]
                self._replace_holders(live, etag)
                continue  # start over from the stored state either way
            for h in expired:
                self._log_freed(h, now, "lease expired")
            if any(h.ticket == ticket for h in live):
                return Acquire(True, 0, [h.instance_id for h in live])
            waiters = self._waiters()
            mine = next((w for w in waiters if w["Ticket"] == ticket), None)
            if mine is None:
                self.enqueue(ticket, instance_id, now)
                continue
            if mine.get("Canceled"):
                return Acquire(False, 0, [h.instance_id for h in live], paused, canceled=True)
            cutoff = now - timedelta(seconds=stale_after_seconds)
            queue = [
                w for w in waiters if w is mine or (_aware(w["SeenAt"]) >= cutoff and not w.get("Canceled"))
            ]
            for w in waiters:
                if w not in queue and not w.get("Canceled"):
                    log.warning(
                        "gate %s: dropping stale waiter %s (%s)", self.pk, w["Ticket"], w["InstanceId"]
                    )
                    self._delete_quietly(w["RowKey"], w["_etag"])  # unless it just refreshed itself
            position = queue.index(mine)
            free = 0 if paused else self.permits - len(live)
            if position < free:
                lease_until = now + timedelta(seconds=lease_seconds)
                new = [*live, Holder(ticket, instance_id, lease_until, now, execution_id)]
                ops = [
                    (
                        "update",
                        self._state_entity(new),
                        {
                            "mode": UpdateMode.MERGE,
                            "etag": etag,
                            "match_condition": MatchConditions.IfNotModified,
                        },
                    ),
                    # ETag-matched: a cancel written meanwhile makes the grant fail and be looked at again.
                    (
                        "delete",
                        {"PartitionKey": self.pk, "RowKey": mine["RowKey"]},
                        {"etag": mine["_etag"], "match_condition": MatchConditions.IfNotModified},
                    ),
                ]
                try:
                    self.table.submit_transaction(ops)
                except (TableTransactionError, HttpResponseError) as exc:
                    log.info("gate %s: lost a race acquiring for %s (%s); retrying", self.pk, ticket, exc)
                    continue
                ops_event(
                    log,
                    "gate_acquired",
                    "gate %s: permit to %s after %s",
                    self.pk,
                    ticket,
                    now - _aware(mine["EnqueuedAt"]),
                    gate=self.pk,
                    ticket=ticket,
                    waited_seconds=round((now - _aware(mine["EnqueuedAt"])).total_seconds(), 3),
                    holders=len(new),
                )
                return Acquire(True, 0, [h.instance_id for h in new])
            try:
                # Update, never upsert: a row dropped as stale meanwhile must not come back half-empty.
                self.table.update_entity(
                    {"PartitionKey": self.pk, "RowKey": mine["RowKey"], "SeenAt": now},
                    mode=UpdateMode.MERGE,
                    etag=mine["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except HttpResponseError:
                continue  # our row changed or vanished: look again
            if expired:
                self._replace_holders(live, etag)
            return Acquire(False, position, [h.instance_id for h in live], paused)
        raise RuntimeError(f"gate {self.pk}: too much contention acquiring {ticket}")

    def renew(self, ticket: str, now: datetime, *, lease_seconds: float) -> bool:
        """Extend a holder's lease. False when the ticket no longer holds (its lease expired and was taken)."""
        now = _aware(now)
        for _ in range(MAX_ATTEMPTS):
            holders, etag = self._load()
            mine = next((h for h in holders if h.ticket == ticket), None)
            if mine is None:
                return False
            mine.lease_until = now + timedelta(seconds=lease_seconds)
            if self._replace_holders(holders, etag):
                return True
        raise RuntimeError(f"gate {self.pk}: too much contention renewing {ticket}")

    def release(self, ticket: str, now: datetime, *, stale_after_seconds: float) -> list[str]:
        """Give the permit back (idempotent) and return the instance ids of the waiters now first in line."""
        now = _aware(now)
        for _ in range(MAX_ATTEMPTS):
            holders, etag = self._load()
            # Only our own ticket: other holders' expired leases are judged by try_acquire (F&O may still run).
            remaining = [h for h in holders if h.ticket != ticket]
            if len(remaining) != len(holders) and not self._replace_holders(remaining, etag):
                continue
            for h in holders:
                if h.ticket == ticket:
                    held = now - _aware(h.since)
                    ops_event(
                        log,
                        "gate_released",
                        "gate %s: %s gave its permit back after %s",
                        self.pk,
                        ticket,
                        held,
                        gate=self.pk,
                        ticket=ticket,
                        held_seconds=round(held.total_seconds(), 3),
                    )
            self._delete_waiter(ticket)
            return self._next_in_line(len(remaining), now, stale_after_seconds)
        raise RuntimeError(f"gate {self.pk}: too much contention releasing {ticket}")

    def evict(self, instance_ids: set[str], now: datetime, *, stale_after_seconds: float) -> list[str]:
        """Remove holders and waiters belonging to orchestrations seen in a terminal state.

        The caller decides which ended holders may go: one whose F&O execution is still running keeps
        its permit (``renew``) until F&O finishes, so ending an orchestration never lets a second import in.
        """
        for _ in range(MAX_ATTEMPTS):
            holders, etag = self._load()
            remaining = [h for h in holders if h.instance_id not in instance_ids]
            if len(remaining) != len(holders):
                for h in holders:
                    if h.instance_id in instance_ids:
                        self._log_freed(h, now, "orchestration ended")
                if not self._replace_holders(remaining, etag):
                    continue
            for w in self._waiters():
                if w["InstanceId"] in instance_ids:
                    self._delete_quietly(w["RowKey"])
            return self._next_in_line(len(remaining), _aware(now), stale_after_seconds)
        raise RuntimeError(f"gate {self.pk}: too much contention evicting")

    def snapshot(self) -> dict[str, Any]:
        holders, _, state = self._load_state()
        return {
            "environment": self.pk,
            "permits": self.permits,
            "paused": bool(state.get("Paused")),
            "paused_at": _iso(state.get("PausedAt")) if state.get("Paused") else None,
            "paused_by": state.get("PausedBy"),
            "pause_reason": state.get("PauseReason"),
            "holders": [h.to_json() for h in holders],
            "waiters": [
                {
                    "ticket": w["Ticket"],
                    "instance_id": w["InstanceId"],
                    "enqueued_at": _aware(w["EnqueuedAt"]).isoformat(),
                    "seen_at": _aware(w["SeenAt"]).isoformat(),
                    "canceled": bool(w.get("Canceled")),
                }
                for w in self._waiters()
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
        for _ in range(MAX_ATTEMPTS):
            _, etag, _ = self._load_state()
            fields = {
                "PartitionKey": self.pk,
                "RowKey": STATE,
                "Paused": paused,
                "PausedAt": now if paused else None,
                "PausedBy": (by or "")[:200] if paused else "",
                "PauseReason": (reason or "")[:500] if paused else "",
            }
            try:
                self.table.update_entity(
                    {k: v for k, v in fields.items() if v is not None},
                    mode=UpdateMode.MERGE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except HttpResponseError as exc:
                if getattr(exc, "status_code", None) == 412:
                    continue
                raise
            log.warning("gate %s %s by %s", self.pk, "paused" if paused else "resumed", by or "an operator")
            if paused:
                return []
            # Wake every waiter (a rare, manual step): the first in line gets in at once, the others look and
            # wait again. Staleness is not judged here: the caller's clock is not the orchestrations' clock.
            return [w["InstanceId"] for w in self._waiters() if not w.get("Canceled")]
        raise RuntimeError(f"gate {self.pk}: too much contention pausing")

    def cancel_waiter(self, instance_id: str, now: datetime) -> bool:
        """Mark ``instance_id``'s waiter row canceled. False when it is not waiting (granted, or gone)."""
        for _ in range(MAX_ATTEMPTS):
            mine = next((w for w in self._waiters() if w["InstanceId"] == instance_id), None)
            if mine is None:
                return False
            try:
                self.table.update_entity(
                    {
                        "PartitionKey": self.pk,
                        "RowKey": mine["RowKey"],
                        "Canceled": True,
                        "CanceledAt": _aware(now),
                    },
                    mode=UpdateMode.MERGE,
                    etag=mine["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return True
            except HttpResponseError:
                continue  # it refreshed, or was granted and deleted: look again
        raise RuntimeError(f"gate {self.pk}: too much contention canceling {instance_id}")

    # -- helpers ---------------------------------------------------------------------------------------
    def _log_freed(self, h: Holder, now: datetime, reason: str) -> None:
        """A permit freed without its holder releasing it: an operations event (alerts read it)."""
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
            held_seconds=round((_aware(now) - _aware(h.since)).total_seconds(), 3),
        )

    def _replace_holders(self, holders: list[Holder], etag: str) -> bool:
        try:
            self.table.update_entity(
                self._state_entity(holders),
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
            return True
        except HttpResponseError as exc:
            if getattr(exc, "status_code", None) == 412:
                return False
            raise

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
