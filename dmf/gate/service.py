"""The gate service: every import-gate operation the app performs, in one place.

Activities (``activities/gate.py``), the sweeper and operators' routes (``triggers/``) and the pipeline's
import steps call these; none of them touches the gate's rows or raises gate events itself.

- An import's turn: ``enqueue``, ``try_acquire``, ``renew``, ``release`` (kept while F&O may still run the
  execution), ``hand_over`` (wake the next waiters at once).
- The sweeper: ``sweep`` frees permits and places of orchestrations that ended, once F&O is done with their
  execution, and records ``Failed`` on a package whose orchestration ended without recording its outcome.
- Operators: ``pause`` / ``resume``, ``cancel_waiting``, and ``status`` (read-only: it creates nothing).

The F&O client is imported on first use (cold start: ``activities/gate.py`` loads this module).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dmf.gate.events import waiting_on
from dmf.gate.store import Acquire, ImportGate, stale_after
from dmf.storage import clients
from dmf.storage.etag import Write, update_row
from dmf.storage.outcomes import TERMINAL_STATUSES, safe_key

if TYPE_CHECKING:
    from dmf.pipeline.services import Services
    from dmf.settings import Settings

log = logging.getLogger(__name__)

FNO_RUNNING = frozenset({"NotRun", "Executing", "Unknown"})
ENDED = frozenset({"Completed", "Failed", "Terminated", "Canceled"})  # Durable runtime statuses


class GateService:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.settings: Settings = svc.settings

    @property
    def lease_seconds(self) -> float:
        return self.settings.gate_lease_seconds

    @property
    def stale_after_seconds(self) -> float:
        return stale_after(self.settings.gate_recheck_seconds)

    def gate(self, environment: str, *, create: bool = True) -> ImportGate:
        """The environment's gate; ``create=False`` for reads (no table is created for them)."""
        env = self.settings.environment(environment)
        table = clients.table(self.settings, self.settings.gates_table, create=create)
        return ImportGate(table, env.name, env.import_permits)

    # -- an import's turn ------------------------------------------------------------------------------
    def enqueue(self, environment: str, ticket: str, instance_id: str, now: datetime) -> None:
        self.gate(environment).enqueue(ticket, instance_id, now)

    def try_acquire(
        self,
        environment: str,
        ticket: str,
        instance_id: str,
        now: datetime,
        *,
        execution_id: str | None = None,
    ) -> Acquire:
        """A permit when ``ticket`` is first in line and one is free; an expired holder whose F&O execution
        still runs keeps its permit."""
        return self.gate(environment).try_acquire(
            ticket,
            instance_id,
            now,
            lease_seconds=self.lease_seconds,
            stale_after_seconds=self.stale_after_seconds,
            execution_id=execution_id,
            still_running=lambda h: self.fno_running(environment, h.execution_id),
        )

    def renew(
        self, environment: str, ticket: str, now: datetime, *, lease_seconds: float | None = None
    ) -> bool:
        """Extend ``ticket``'s lease (default ``GATE_LEASE_SECONDS`` from ``now``). False when it no longer
        holds a permit (its lease ran out and the permit went to another import)."""
        lease = self.lease_seconds if lease_seconds is None else float(lease_seconds)
        return self.gate(environment).renew(ticket, now, lease_seconds=lease)

    def release(
        self,
        environment: str,
        ticket: str,
        now: datetime,
        *,
        execution_id: str | None = None,
        maybe_running: bool = False,
    ) -> list[str]:
        """Give the permit back; answers the waiters to wake (``hand_over``).

        After an import whose end we did not see (timed out, failed mid-poll: ``maybe_running``) the permit
        is kept while F&O still runs the execution: the sweeper or the next waiter frees it once F&O is done.
        """
        if maybe_running and self.fno_running(environment, execution_id):
            log.warning("F&O still runs %s: keeping the import permit until it ends", execution_id)
            self.renew(environment, ticket, now)
            return []
        return self.gate(environment).release(ticket, now, stale_after_seconds=self.stale_after_seconds)

    @staticmethod
    async def hand_over(client: Any, instance_ids: list[str], reason: str = "permit free") -> None:
        """Wake waiters at the gate: each with the event name its custom status names right now. One that is
        not waiting at this moment is left alone: it asks the gate again before it waits."""
        for instance_id in instance_ids:
            try:
                status = await client.get_status(instance_id)
                wake = waiting_on(getattr(status, "custom_status", None))
                if wake:
                    await client.raise_event(instance_id, wake, {"reason": reason})
            except Exception as exc:  # the waiter may have ended; its recheck timer covers any other case
                log.info("could not wake %s: %s", instance_id, exc)

    # -- the sweeper -----------------------------------------------------------------------------------
    async def sweep(self, client: Any, now: datetime | None = None) -> dict[str, list[str]]:
        """Evict gate holders and waiters whose orchestration has ended (terminated, failed, crashed out).

        A holder whose F&O execution is still running keeps its permit until F&O finishes it: ending our
        orchestration does not stop F&O, and a second import meanwhile would fail. Answers the instance ids
        evicted, per environment.
        """
        now = now or datetime.now(UTC)
        evicted: dict[str, list[str]] = {}
        for name in self.settings.environments:
            gone = await self._sweep_gate(client, name, now)
            if gone:
                evicted[name] = gone
        return evicted

    async def _sweep_gate(self, client: Any, environment: str, now: datetime) -> list[str]:
        gate = await asyncio.to_thread(self.gate, environment)  # creates its table on first use
        snap = await asyncio.to_thread(gate.snapshot)
        holders = {h["instance_id"]: h for h in snap["holders"]}
        waiters = {w["instance_id"] for w in snap["waiters"]}
        # Holders a waiter freed (lease out) since the last sweep: their end is recorded here too.
        freed = {h["instance_id"]: h for h in snap.get("freed", [])}
        ended = await _ended(client, set(holders) | waiters | set(freed))
        kept = set()
        for instance_id, status in sorted(ended.items()):
            holder = holders.get(instance_id) or freed.get(instance_id)
            if await asyncio.to_thread(self._close_ended, environment, status, holder, now):
                kept.add(instance_id)
        looked_at = set(freed) & (set(ended) - kept)
        if looked_at:
            await asyncio.to_thread(gate.forget_freed, looked_at)
        gone = sorted((set(ended) - kept) & (set(holders) | waiters))
        if gone:
            log.warning("gate %s: evicting ended orchestrations %s", environment, gone)
            stale = self.stale_after_seconds
            wake = await asyncio.to_thread(gate.evict, set(gone), now, stale_after_seconds=stale)
            await self.hand_over(client, wake)
        return gone

    def _close_ended(
        self, environment: str, status: Any, holder: dict[str, Any] | None, now: datetime
    ) -> bool:
        """Record the package of an ended orchestration (``record_abandoned``); True when it holds a permit
        that must stay taken because F&O may still be importing its execution."""
        execution_id = (holder or {}).get("execution_id")
        key = _package_key(status)
        row = self.svc.outcomes.get(*key) if key else None
        fno = self.fno_status(environment, execution_id)
        # F&O lists an execution some time after ImportFromPackage returns: "not found" soon after the call
        # (``ImportRequestedAt``, written just before it) may be an import that is about to run.
        grace = self.settings.poll_not_found_grace_seconds
        running = _running(fno) or (fno == "NotFound" and _requested_within(row, now, grace))
        if key:
            self.record_abandoned(key, status, execution_id, fno, running)
        if holder is None or not running:
            return False
        log.warning(
            "gate %s: %s ended but F&O execution %s may still run (%s); keeping its permit",
            environment,
            holder["instance_id"],
            execution_id,
            fno,
        )
        self.renew(environment, holder["ticket"], now)
        return True

    def record_abandoned(
        self,
        key: tuple[str, str],
        status: Any,
        execution_id: str | None,
        fno_status: str | None,
        running: bool = False,
    ) -> bool:
        """Record ``Failed`` on package row ``key`` (day, row) of an import orchestration that ended without
        recording its outcome (terminated, or failed between steps): the row would otherwise say
        ``Importing`` for good. A row that already has its outcome is left alone. True when written."""
        reason = _abandoned_reason(status, execution_id or _execution_of(status), fno_status, running)

        def decide(row: Any) -> Write | bool:
            if row is None or row.get("Status") in TERMINAL_STATUSES:
                return False
            fields = {"Status": "Failed", "Reason": reason, "FinishedAt": datetime.now(UTC)}
            return Write({**fields, **({"LastFnoStatus": fno_status} if fno_status else {})}, True)

        day, row = key
        written = update_row(
            self.svc.outcomes.table, safe_key(day), safe_key(row), decide, what=f"closing {row}"
        )
        if written:
            log.warning("package %s: %s", row, reason)
        return bool(written)

    # -- operators -------------------------------------------------------------------------------------
    def pause(
        self,
        environment: str,
        paused: bool,
        now: datetime,
        *,
        by: str | None = None,
        reason: str | None = None,
    ) -> list[str]:
        """Pause (no new permit) or resume; answers, on resume, the waiters to wake (``hand_over``)."""
        return self.gate(environment).set_paused(
            paused, now, by=by, reason=reason, stale_after_seconds=self.stale_after_seconds
        )

    def cancel_waiting(self, environment: str, drop_id: str, now: datetime) -> list[str]:
        """Cancel the drop's (or its retries') packages waiting at the gate; answers those canceled."""
        gate = self.gate(environment)
        waiting = [
            w["instance_id"] for w in gate.snapshot()["waiters"] if w["instance_id"].startswith(drop_id + "-")
        ]
        return [i for i in waiting if gate.cancel_waiter(i, now)]

    def status(self, environment: str) -> dict[str, Any]:
        """Holders, waiters and pause state of the environment's gate. Only reads."""
        return self.gate(environment, create=False).snapshot()

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(name) for name in self.settings.environments]

    # -- F&O -------------------------------------------------------------------------------------------
    def fno_status(self, environment: str, execution_id: str | None) -> str | None:
        """F&O's status of an execution (``Unknown`` when F&O cannot be asked); None without an id."""
        if not execution_id:
            return None
        from dmf.fno.clients import package_api  # first use only: the F&O client is heavy to import
        from dmf.fno.errors import FnoError

        try:
            return package_api(self.settings, environment).get_execution_summary_status(execution_id).value
        except FnoError:
            return "Unknown"  # can't tell: keep the permit rather than risk two imports in flight

    def fno_running(self, environment: str, execution_id: str | None) -> bool:
        """Whether F&O is still running an execution (a permit must not be freed under it)."""
        return _running(self.fno_status(environment, execution_id))


def gate_service(svc: Services | None = None) -> GateService:
    """The gate service over ``svc`` (default: this worker's services)."""
    if svc is None:
        from dmf.pipeline.services import services

        svc = services()
    return GateService(svc)


def _running(fno_status: str | None) -> bool:
    return fno_status in FNO_RUNNING


async def _ended(client: Any, instance_ids: set[str]) -> dict[str, Any]:
    """The statuses (input included) of the orchestrations among ``instance_ids`` that have ended or are
    gone (purged: status None)."""
    out: dict[str, Any] = {}
    for instance_id in sorted(instance_ids):
        status = await client.get_status(instance_id, show_input=True)
        runtime = getattr(getattr(status, "runtime_status", None), "value", None)
        if runtime is None or runtime in ENDED:
            out[instance_id] = status
    return out


def _input(status: Any) -> dict[str, Any]:
    import json

    raw = getattr(status, "input_", None)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _package_key(status: Any) -> tuple[str, str] | None:
    """The (day, row) of an import orchestration's package row, from its input (None: not one of those)."""
    req = _input(status)
    if not {"drop_id", "day", "seq"} <= set(req):
        return None
    # The key the import steps write the package row under (dmf/pipeline/imports.py).
    return str(req["day"]), f"{req['drop_id']}~{int(req['seq']):03d}"


def _requested_within(row: dict[str, Any] | None, now: datetime, seconds: float) -> bool:
    """Whether the row's ImportFromPackage call was made less than ``seconds`` before ``now``."""
    asked = (row or {}).get("ImportRequestedAt")
    return isinstance(asked, datetime) and (now - asked).total_seconds() < seconds


def _execution_of(status: Any) -> str | None:
    custom = getattr(status, "custom_status", None)
    return custom.get("execution_id") if isinstance(custom, dict) else None


def _abandoned_reason(status: Any, execution_id: str | None, fno_status: str | None, running: bool) -> str:
    from dmf.redact import redact

    runtime = getattr(getattr(status, "runtime_status", None), "value", None) or "gone"
    why = getattr(status, "output", None)
    text = f"the import orchestration ended ({runtime}{f': {why}' if isinstance(why, str) and why else ''})"
    text += " without recording a result"
    if execution_id and fno_status:
        text += f"; F&O reports execution {execution_id} {fno_status}"
        if running:
            text += " (the import permit stays held until F&O ends it)"
    return redact(text)[:2000]
