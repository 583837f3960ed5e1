"""The DMF import-status business event, as the public D365FO-DMFImportSatusBusinessEvent extension sends
it (``../shared/reference/fno-metadata-and-events.md`` section 3): one flat JSON contract per entity of an
import, posted to an HTTPS endpoint when the import finishes.

Off until a target URL is set (``business_events_url`` in the config, ``admin.set_business_events`` or
``POST /_emulator/business-events``). The key, when given, is appended as ``code=`` (the Functions key of
the receiving endpoint: F&O's HTTPS endpoint stores the whole URL, key included, in Key Vault).

When: a thread posts every import whose finish time has passed on the emulator's clock (real time: within
~50 ms). With a virtual clock the owner of the clock can also be told each finish time (``on_scheduled``)
and call ``emit_due()`` exactly then, so the events arrive at the virtual instant the import finished.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clock import Clock
    from .executions import Execution

BUSINESS_EVENT_ID = "DMFImportStatusBusinessEvent"
log = logging.getLogger(__name__)


class BusinessEvents:
    def __init__(self, clock: Clock, url: str | None = None, key: str | None = None) -> None:
        self.clock = clock
        self.url = url
        self.key = key
        self.on_scheduled: Callable[[datetime], None] | None = None
        self.sent: list[dict[str, Any]] = []  # what was posted (no key), for tests and the admin API
        self._pending: list[Execution] = []
        self._lock = threading.Lock()  # pending list
        self._send_lock = threading.Lock()  # held for a whole emit_due: a second caller waits for the posts
        self._control = 5637144576
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
            self.sent.clear()

    def configure(self, url: str | None, key: str | None = None) -> None:
        self.url, self.key = url or None, key or None

    # -- engine side ----------------------------------------------------------------------------------
    def scheduled(self, e: Execution) -> None:
        """An import's finish time is known (called by the engine)."""
        if e.kind != "import" or e.end_at is None or not self.url:
            return  # nothing is kept while no target is set (imports started then are never posted)
        with self._lock:
            self._pending.append(e)
        if self.on_scheduled is not None and self.url:
            self.on_scheduled(e.end_at)

    # -- sending --------------------------------------------------------------------------------------
    def emit_due(self) -> int:
        """Post the events of every import finished by now; returns how many were posted."""
        with self._send_lock:
            now = self.clock.now()
            with self._lock:
                due = [e for e in self._pending if e.end_at is not None and e.end_at <= now]
                self._pending = [e for e in self._pending if e not in due]
            if not self.url:
                return 0
            n = 0
            for e in sorted(due, key=lambda e: e.end_at):
                for payload in self.payloads(e, now):
                    self._post(payload)
                    n += 1
            return n

    def payloads(self, e: Execution, now: datetime) -> list[dict[str, Any]]:
        results = e.results or [None]
        out = []
        for r in results:
            self._control += 1
            status = e.status_override or (r.status if r is not None else e.outcome)
            out.append(
                {
                    "BusinessEventId": BUSINESS_EVENT_ID,
                    "BusinessEventLegalEntity": e.legal_entity,
                    "ContextRecordSubject": "",
                    "ControlNumber": self._control,
                    "EndDateTime": (e.end_at or now).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "EntityName": r.label if r is not None else "",
                    "EventId": str(uuid.uuid4()).upper(),
                    "EventTime": f"/Date({int(now.timestamp() * 1000)})/",
                    "EventTimeIso8601": now.isoformat().replace("+00:00", "Z"),
                    "ExecutionId": e.execution_id,
                    "InitiatingUserAADObjectId": "{00000000-0000-0000-0000-000000000000}",
                    "LegalEntity": e.legal_entity,
                    "MajorVersion": 0,
                    "MinorVersion": 0,
                    "NoOfCreatedRecords": r.good_count if r is not None else 0,
                    "NoOfErrorRecords": r.error_record_count if r is not None else 0,
                    "NoOfRecords": r.total if r is not None else 0,
                    "NoOfUpdatedRecords": 0,
                    "OperationType": "Import",
                    "ParentContextRecordSubjects": [],
                    "ProjectCategory": "Project",
                    "ProjectDescription": "",
                    "ProjectName": e.definition_group,
                    "RecId": self._control,
                    "StartedDateTime": e.start_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "Status": status,
                }
            )
        return out

    def _post(self, payload: dict[str, Any]) -> None:
        assert self.url
        url = self.url
        if self.key:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"code": self.key})
        req = urllib.request.Request(
            url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        record = {
            "execution_id": payload["ExecutionId"],
            "entity": payload["EntityName"],
            "status": payload["Status"],
            "event_id": payload["EventId"],
            "at": self.clock.now().isoformat(),
        }
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # nosec B310 # the configured endpoint URL
                record["http_status"] = resp.status
                record["response"] = json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            record["http_status"] = exc.code
        except (OSError, ValueError) as exc:
            record["http_status"] = None
            record["error"] = type(exc).__name__
        self.sent.append(record)

    # -- the real-time sender -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fno-business-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            if self.url and self._pending:
                try:
                    self.emit_due()
                except Exception:  # never kill the sender thread; the next round tries the rest
                    log.exception("posting business events failed")
