"""Inspection and control for tests and demos: in-process (``emu.admin``) and over HTTP (``/_emulator``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from .config import FaultRule
from .server import Handler, _Reply

if TYPE_CHECKING:
    from .app import EmulatorApp, Result, Route


class Admin:
    def __init__(self, app: EmulatorApp) -> None:
        self._app = app

    # -- inspection -------------------------------------------------------------------------------
    def calls(self, endpoint: str | None = None) -> list[dict]:
        """Every call (token, API, connector) with emulator time, wall time, status and injected fault."""
        entries = list(self._app.calls.entries)
        return [c for c in entries if endpoint is None or c["endpoint"].lower() == endpoint.lower()]

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
        app.calls.entries.clear()
        app.faults.clear()
        app.errors.clear()


def admin_router(app: EmulatorApp, admin: Admin):
    """HTTP routes under /_emulator/ (documented in README.md)."""

    def check_key(h: Handler) -> None:
        key = app.config.admin_key
        if key and h.headers.get("x-emulator-admin-key") != key:
            raise _Reply(403, b'{"Message":"admin key required"}')

    def reply(payload: object, status: int = 200) -> Result:
        return status, json.dumps(payload, default=str).encode(), "application/json", {}

    def route(method: str, path: str) -> tuple[str, Route]:
        parts = [p for p in path.split("/") if p][1:]  # drop "_emulator"

        def handle(h: Handler, p: str, q: dict[str, str]) -> Result:
            check_key(h)
            head = parts[0] if parts else ""
            if head == "calls" and method == "GET":
                return reply(admin.calls(q.get("endpoint")))
            if head == "state" and method == "GET":
                return reply(
                    {
                        "now": admin.now().isoformat(),
                        "peakConcurrentImports": admin.peak_concurrent_imports,
                        "peakConcurrentExecutions": admin.peak_concurrent_executions,
                        "violations": admin.violation_details(),
                        "tables": admin.tables(),
                        "faults": [r.model_dump() for r in app.faults.rules()],
                        "serverErrors": len(admin.server_errors()),
                    }
                )
            if head == "executions" and method == "GET":
                return reply(admin.executions())
            if head == "data" and len(parts) == 3 and method == "GET":
                return reply(admin.data(parts[1], parts[2]))
            if head == "data" and len(parts) == 3 and method == "POST":
                admin.seed_rows(parts[1], parts[2], json.loads(h.body() or b"[]"))
                return reply({"ok": True})
            if head == "faults" and method == "POST":
                app.faults.add(FaultRule.model_validate_json(h.body()))
                return reply({"ok": True})
            if head == "faults" and method == "DELETE":
                admin.clear_faults()
                return reply({"ok": True})
            if head == "clock" and method == "GET":
                return reply({"now": admin.now().isoformat()})
            if head == "clock" and method == "POST":
                body = json.loads(h.body() or b"{}")
                if "set" in body:
                    return reply({"now": admin.set_time(datetime.fromisoformat(body["set"])).isoformat()})
                return reply({"now": admin.advance(float(body.get("advance", 0))).isoformat()})
            if head == "outbound" and len(parts) == 2 and method == "POST":
                payload = h.body() or None
                cid = admin.seed_outbound(parts[1], payload, q.get("legalEntity"))
                return reply({"correlationId": cid})
            if head == "outbound" and method == "GET":
                return reply(admin.outbound(parts[1] if len(parts) > 1 else None))
            if head == "tokens" and parts[1:] == ["revoke"] and method == "POST":
                admin.revoke_tokens()
                return reply({"ok": True})
            if head == "business-events" and method == "POST":
                body = json.loads(h.body() or b"{}")
                admin.set_business_events(body.get("url"), body.get("key"))
                return reply({"ok": True})
            if head == "business-events" and method == "GET":
                return reply(admin.business_events_sent())
            if head == "reset" and method == "POST":
                admin.reset()
                return reply({"ok": True})
            return reply({"Message": f"unknown admin route {method} {p}"}, 404)

        return "admin:" + (parts[0] if parts else ""), handle

    return route
