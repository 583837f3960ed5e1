"""Inspection and control for tests and demos: in-process (``emu.admin``) and over HTTP (``/_emulator``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from .config import FaultRule
from .server import Handler, Result, Route, _Reply

if TYPE_CHECKING:
    from .app import EmulatorApp


class Admin:
    def __init__(self, app: EmulatorApp) -> None:
        self._app = app

    # -- inspection -------------------------------------------------------------------------------
    def calls(self, endpoint: str | None = None) -> list[dict]:
        """Every call (token, API, connector) with emulator time, wall time, status and injected fault."""
        entries = list(self._app.calls.entries)
        return [c for c in entries if endpoint is None or c["endpoint"].lower() == endpoint.lower()]

    def call_counts(self) -> tuple[int, dict[str, int]]:
        """Calls answered (or dropped) in all, and per injected fault kind: every call, however short
        ``call_log_size`` keeps the log."""
        return self._app.calls.total, dict(self._app.calls.faults)

    @property
    def peak_concurrent_imports(self) -> int:
        return self._app.engine.peak_concurrent_imports()

    @property
    def peak_concurrent_executions(self) -> int:
        return self._app.engine.peak_concurrent_executions()

    @property
    def violations(self) -> int:
        return len(self._app.engine.violations)

    def violation_details(self) -> list[dict]:
        return [
            {
                "at": v.at.isoformat(),
                "executionId": v.execution_id,
                "running": v.running,
                "message": v.message,
            }
            for v in self._app.engine.violations
        ]

    def data(self, legal_entity: str, entity_label: str) -> list[dict[str, str]]:
        self._app.engine.settle()
        return self._app.store.rows(legal_entity, entity_label)

    def tables(self) -> dict[str, dict[str, int]]:
        self._app.engine.settle()
        return self._app.store.tables()

    def executions(self) -> list[dict]:
        self._app.engine.settle()
        now = self._app.clock.now()
        with self._app.engine.lock:
            return [e.summary(now) for e in self._app.engine.executions.values()]

    def outbound(self, activity_id: str | None = None) -> list[dict]:
        return self._app.recurring.pending_outbound(activity_id)

    def inbound(self, activity_id: str | None = None) -> list[dict]:
        """Messages enqueued through the recurring-integration API: id, activity, external id, status."""
        now = self._app.clock.now()
        with self._app.recurring._lock:
            msgs = list(self._app.recurring.inbound.values())
        return [
            {"messageId": m.message_id, "activityId": m.activity.activity_id, "externalId": m.external_id,
             "legalEntity": m.legal_entity, "status": m.status(now)}
            for m in msgs
            if activity_id is None or m.activity.activity_id.lower() == activity_id.lower()
        ]  # fmt: skip

    def server_errors(self) -> list[str]:
        """Tracebacks of unexpected exceptions inside the emulator (should stay empty)."""
        return list(self._app.errors)

    # -- control ----------------------------------------------------------------------------------
    def seed_outbound(
        self, activity_id: str, payload_bytes: bytes | None = None, legal_entity: str | None = None
    ) -> str:
        """Queue an outbound message for dequeue; without bytes, a package built from the data store."""
        return self._app.recurring.seed_outbound(activity_id, payload_bytes, legal_entity)

    def seed_rows(self, legal_entity: str, entity_label: str, rows: list[dict[str, str]]) -> None:
        """Put rows straight into the data store (export tests), keyed by the catalogue keys."""
        cat = self._app.config.entity(entity_label)
        if cat is None:
            raise KeyError(entity_label)
        keyed = [(tuple(str(r.get(k, "")).upper() for k in cat.keys), dict(r)) for r in rows]
        self._app.store.upsert(legal_entity, cat.label, keyed, [f.name for f in cat.fields])

    def inject_fault(
        self,
        endpoint: str,
        kind: str,
        rate: float | None = None,
        next_n: int | None = None,
        retry_after: int | None = None,
        delay_seconds: float = 2.0,
        until: datetime | None = None,
    ) -> None:
        self._app.faults.add(
            FaultRule(
                endpoint=endpoint,
                kind=kind,  # type: ignore[arg-type]
                rate=rate,
                next_n=next_n,
                retry_after=retry_after,
                delay_seconds=delay_seconds,
                until=until,
            )
        )

    def cancel_execution(self, execution_id: str) -> None:
        """The execution becomes Canceled now and writes nothing (as stopped by a user in F&O)."""
        self._app.engine.cancel(execution_id)

    def override_status(self, execution_id: str, status: str | None) -> None:
        """Force what GetExecutionSummaryStatus answers (e.g. "Unknown"); None restores the real one."""
        self._app.engine.override_status(execution_id, status)

    def clear_faults(self) -> None:
        self._app.faults.clear()

    def now(self) -> datetime:
        return self._app.clock.now()

    def advance(self, seconds: float) -> datetime:
        return self._app.clock.advance(seconds)

    def set_time(self, when: datetime) -> datetime:
        return self._app.clock.set_time(when)

    def revoke_tokens(self) -> None:
        self._app.tokens.revoke_all()

    def purge_expired_files(self) -> int:
        return self._app.blobs.purge_expired()

    def set_business_events(self, url: str | None, key: str | None = None) -> None:
        """Post the DMF import-status business event to ``url`` (``?code=key``) when an import finishes."""
        self._app.engine.events.configure(url, key)

    def business_events_sent(self) -> list[dict]:
        return list(self._app.engine.events.sent)

    def reset(self) -> None:
        """Forget executions, violations, messages, calls and data (between tests sharing one emulator)."""
        app = self._app
        with app.engine.lock:
            app.engine.executions.clear()
            app.engine.violations.clear()
            app.engine._pending.clear()
            app.engine._next_due = None
        app.engine.events.reset()
        app.recurring.inbound.clear()
        app.recurring.outbound.clear()
        app.store.clear()
        app.calls.clear()
        app.faults.clear()
        app.errors.clear()


def admin_router(app: EmulatorApp, admin: Admin) -> Callable[[str, str], tuple[str, Route]]:
    """HTTP routes under /_emulator/ (documented in README.md)."""
    routes = _AdminRoutes(app, admin)

    def route(method: str, path: str) -> tuple[str, Route]:
        parts = [p for p in path.split("/") if p][1:]  # drop "_emulator"
        head = parts[0] if parts else ""

        def handle(h: Handler, p: str, q: dict[str, str]) -> Result:
            routes.check_key(h)
            action = routes.table.get((method, head))
            payload = action(h, parts, q) if action is not None else None
            if payload is None:
                return _reply({"Message": f"unknown admin route {method} {p}"}, 404)
            return _reply(payload)

        return "admin:" + head, handle

    return route


def _reply(payload: object, status: int = 200) -> Result:
    return status, json.dumps(payload, default=str).encode(), "application/json", {}


_OK = {"ok": True}
# An admin action: the handler, the path's parts after /_emulator/, the query; the payload to answer
# with, or None when the path does not fit the action (404).
_Action = Callable[[Handler, list[str], dict[str, str]], object]


def _then_ok(do: Callable[[], None]) -> _Action:
    """An action that answers {"ok": true} once ``do`` is done."""

    def act(h: Handler, parts: list[str], q: dict[str, str]) -> object:
        do()
        return _OK

    return act


class _AdminRoutes:
    """The admin API's actions by (method, first path part)."""

    def __init__(self, app: EmulatorApp, admin: Admin) -> None:
        self.app, self.admin = app, admin
        self.table: dict[tuple[str, str], _Action] = {
            ("GET", "calls"): lambda h, parts, q: admin.calls(q.get("endpoint")),
            ("GET", "state"): lambda h, parts, q: self._state(),
            ("GET", "executions"): lambda h, parts, q: admin.executions(),
            ("GET", "data"): lambda h, parts, q: admin.data(parts[1], parts[2]) if len(parts) == 3 else None,
            ("POST", "data"): self._seed_rows,
            ("POST", "faults"): self._add_fault,
            ("DELETE", "faults"): _then_ok(admin.clear_faults),
            ("GET", "clock"): lambda h, parts, q: {"now": admin.now().isoformat()},
            ("POST", "clock"): self._set_clock,
            ("POST", "outbound"): self._seed_outbound,
            ("GET", "outbound"): lambda h, parts, q: admin.outbound(parts[1] if len(parts) > 1 else None),
            ("POST", "tokens"): self._revoke_tokens,
            ("POST", "business-events"): self._set_business_events,
            ("GET", "business-events"): lambda h, parts, q: admin.business_events_sent(),
            ("POST", "reset"): _then_ok(admin.reset),
        }

    def check_key(self, h: Handler) -> None:
        key = self.app.config.admin_key
        if key and h.headers.get("x-emulator-admin-key") != key:
            raise _Reply(403, b'{"Message":"admin key required"}')

    def _state(self) -> dict:
        admin = self.admin
        return {
            "now": admin.now().isoformat(),
            "peakConcurrentImports": admin.peak_concurrent_imports,
            "peakConcurrentExecutions": admin.peak_concurrent_executions,
            "violations": admin.violation_details(),
            "tables": admin.tables(),
            "faults": [r.model_dump() for r in self.app.faults.rules()],
            "serverErrors": len(admin.server_errors()),
        }

    def _seed_rows(self, h: Handler, parts: list[str], q: dict[str, str]) -> object:
        if len(parts) != 3:
            return None
        self.admin.seed_rows(parts[1], parts[2], json.loads(h.body() or b"[]"))
        return _OK

    def _add_fault(self, h: Handler, parts: list[str], q: dict[str, str]) -> object:
        self.app.faults.add(FaultRule.model_validate_json(h.body()))
        return _OK

    def _set_clock(self, h: Handler, parts: list[str], q: dict[str, str]) -> object:
        body = json.loads(h.body() or b"{}")
        if "set" in body:
            return {"now": self.admin.set_time(datetime.fromisoformat(body["set"])).isoformat()}
        return {"now": self.admin.advance(float(body.get("advance", 0))).isoformat()}

    def _seed_outbound(self, h: Handler, parts: list[str], q: dict[str, str]) -> object:
        if len(parts) != 2:
            return None
        payload = h.body() or None
        return {"correlationId": self.admin.seed_outbound(parts[1], payload, q.get("legalEntity"))}

    def _revoke_tokens(self, h: Handler, parts: list[str], q: dict[str, str]) -> object:
        if parts[1:] != ["revoke"]:
            return None
        self.admin.revoke_tokens()
        return _OK

    def _set_business_events(self, h: Handler, parts: list[str], q: dict[str, str]) -> object:
        body = json.loads(h.body() or b"{}")
        self.admin.set_business_events(body.get("url"), body.get("key"))
        return _OK
