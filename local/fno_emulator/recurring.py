"""Recurring Integration API: inbound messages (enqueue -> processed by a recurring import job) and
outbound messages (dequeue / download / ack with a visibility timeout, like a storage queue)."""

from __future__ import annotations

import base64
import io
import secrets
import threading
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta

from .config import RecurringActivity
from .engine import EMPTY_GUID, Engine, ODataError
from .executions import EntityResult, Execution
from .package_reader import (
    Manifest,
    ManifestEntity,
    OpenedPackage,
    PackageError,
    PackageHeader,
    open_package,
)
from .package_writer import ExportEntity, build_package


class ConnectorError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class InboundMessage:
    message_id: str
    activity: RecurringActivity
    legal_entity: str
    entity_label: str | None
    blob_name: str
    external_id: str | None
    enqueued_at: datetime
    execution: Execution
    preprocessing_error: str | None

    def status(self, now: datetime) -> str:
        if now < self.execution.start_at:
            return "Enqueued"
        if self.preprocessing_error:
            return "PreProcessingError"
        if self.execution.end_at is None or now < self.execution.end_at:
            return "Processing"
        return "Processed" if self.execution.outcome == "Succeeded" else "ProcessedWithErrors"


@dataclass
class OutboundMessage:
    correlation_id: str
    activity_id: str
    blob_name: str
    blob_id: str
    created_at: datetime
    visible_at: datetime
    pop_receipt: str | None = None
    last_dequeue: datetime | None = None
    dequeue_count: int = 0
    acked: bool = False

    def status(self) -> str:
        if self.acked:
            return "Acked"
        return "Dequeued" if self.dequeue_count else "Enqueued"


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class RecurringQueues:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.inbound: dict[str, InboundMessage] = {}
        self.outbound: dict[str, OutboundMessage] = {}
        self._last_end: dict[str, datetime] = {}  # per activity: messages are processed in order
        self._lock = threading.Lock()
        self.api_root = ""  # set by the server: where DownloadLocation points

    def _activity(self, activity_id: str, direction: str) -> RecurringActivity:
        act = self.config.activity(activity_id)
        if act is None or act.direction != direction:
            raise ConnectorError(404, f"Recurring {direction} activity {activity_id} was not found.")
        return act

    # -- inbound ----------------------------------------------------------------------------------
    def enqueue(
        self,
        activity_id: str,
        body: bytes,
        entity: str | None,
        company: str | None,
        external_id: str | None,
    ) -> str:
        act = self._activity(activity_id, "import")
        engine = self.engine
        engine.settle()
        now = engine.clock.now()
        message_id = str(uuid.uuid4())
        blob_name = f"recurring/{act.activity_id.strip('{}')}/{message_id}"
        engine.blobs.upload(blob_name, body)
        le = (company if (company and act.use_company_from_message) else act.legal_entity).upper()
        label = entity or act.entity
        project = self.config.project(act.data_project)
        error: str | None = None
        results: list[EntityResult] = []
        try:
            if le not in {x.upper() for x in self.config.legal_entities}:
                raise PackageError(f"Company '{le}' does not exist.")
            pkg = open_package(body) if act.package else self._file_as_package(body, act, label)
            engine._check_manifest(pkg, act.data_project, project, False, "enqueue")
            results = engine.run_package(pkg, project)
        except (PackageError, ODataError) as exc:
            error = exc.message if isinstance(exc, ODataError) else str(exc)
        t = self.config.timings
        with self._lock:
            pickup = max(
                now + timedelta(seconds=t.recurring_pickup_seconds), self._last_end.get(act.activity_id, now)
            )
            rows = sum(r.total for r in results)
            base, per_row = engine._times(project, "import", rows)
            end = pickup + timedelta(seconds=(base + per_row * rows) if not error else 0)
            self._last_end[act.activity_id] = end
            execution = Execution(
                execution_id=f"{act.data_project}-{pickup:%Y-%m-%d_%H-%M-%S}-{uuid.uuid4()}",
                kind="import",
                definition_group=act.data_project,
                legal_entity=le,
                created_at=now,
                visible_at=pickup,
                start_at=pickup,
                end_at=end,
                results=results,
                package_error=error,
                message_id=message_id,
            )
            msg = InboundMessage(message_id, act, le, label, blob_name, external_id, now, execution, error)
            self.inbound[message_id] = msg
        with engine.lock:
            engine._register(execution)
            engine._schedule(execution)
        return message_id

    def _file_as_package(self, body: bytes, act: RecurringActivity, label: str | None) -> OpenedPackage:
        """A "File" job: the body is one data file for the activity's entity, mapped field to field."""
        if not label:
            raise PackageError("The entity name is missing: pass ?entity=<entity label>.")
        cat = self.config.entity(label)
        if cat is None:
            raise PackageError(f"Entity {label} does not exist in the target environment.")
        fmt = self.config.source_format(act.source_format)
        if fmt is None:
            raise PackageError(f"Source data format {act.source_format} does not exist.")
        me = ManifestEntity(
            entity_name=cat.label,
            input_file_path="data",
            source_format=fmt.name,
            auto_map=True,
        )
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("data", body)
        return OpenedPackage(
            header=PackageHeader("", "", "File", "1"),
            manifest=Manifest(act.data_project, "", [me]),
            zip=zipfile.ZipFile(io.BytesIO(buf.getvalue())),
        )

    def message_status(self, message_id: str) -> str:
        self.engine.settle()
        mid = message_id.strip().strip('"{}').lower()
        now = self.engine.clock.now()
        with self._lock:
            msg = self.inbound.get(mid)
            if msg is not None:
                return msg.status(now)
            out = self.outbound.get(mid)
            if out is not None:
                return out.status()
        raise ODataError(400, f"Message {message_id} was not found.", "GetMessageStatus")

    def execution_id_by_message(self, message_id: str) -> str:
        mid = message_id.strip().strip('"{}').lower()
        now = self.engine.clock.now()
        with self._lock:
            msg = self.inbound.get(mid)
        if msg is None or now < msg.execution.start_at:
            return EMPTY_GUID  # not picked up yet (or unknown), as F&O answers
        return msg.execution.execution_id

    # -- outbound ---------------------------------------------------------------------------------
    def seed_outbound(
        self, activity_id: str, payload: bytes | None = None, legal_entity: str | None = None
    ) -> str:
        """Queue an outbound message: the given bytes, or a package built from the data store for the
        activity's export project (what a recurring export job would produce)."""
        act = self._activity(activity_id, "export")
        if payload is None:
            payload = self._export_package(act, (legal_entity or act.legal_entity).upper())
        correlation_id = str(uuid.uuid4())
        blob_id = str(uuid.uuid4())
        blob_name = f"outbound/{act.activity_id.strip('{}')}/{blob_id}"
        self.engine.blobs.upload(blob_name, payload)
        now = self.engine.clock.now()
        with self._lock:
            self.outbound[correlation_id] = OutboundMessage(
                correlation_id, act.activity_id, blob_name, blob_id, now, visible_at=now
            )
        return correlation_id

    def _export_package(self, act: RecurringActivity, le: str) -> bytes:
        self.engine.settle()
        project = self.config.project(act.data_project)
        if project is None:
            raise ConnectorError(404, f"Data project {act.data_project} was not found.")
        entities = []
        for i, pe in enumerate(project.entities):
            cat = self.config.entity(pe.entity)
            fmt = self.config.source_format(pe.source_format)
            if cat is None or fmt is None:
                raise ConnectorError(400, f"Entity {pe.entity} cannot be exported.")
            entities.append(ExportEntity(cat, fmt, self.engine.store.rows(le, cat.label), sequence=i + 1))
        return build_package(project.name, project.name, entities)

    def dequeue(self, activity_id: str) -> dict | None:
        act = self._activity(activity_id, "export")
        now = self.engine.clock.now()
        timeout = timedelta(seconds=self.config.timings.visibility_timeout_seconds)
        with self._lock:
            candidates = sorted(
                (
                    m
                    for m in self.outbound.values()
                    if m.activity_id == act.activity_id and not m.acked and m.visible_at <= now
                ),
                key=lambda m: m.created_at,
            )
            if not candidates:
                return None
            m = candidates[0]
            previous = m.last_dequeue
            m.pop_receipt = base64.b64encode(secrets.token_bytes(16)).decode()
            m.visible_at = now + timeout
            m.last_dequeue = now
            m.dequeue_count += 1
        gone = self.engine.blobs.purge_if_expired(m.blob_name)
        scheme_root = self.api_root
        if self.config.download_location_http:
            scheme_root = "http://" + scheme_root.split("://", 1)[1]
        braces = "%7B" + act.activity_id.strip("{}") + "%7D"
        return {
            "CorrelationId": m.correlation_id,
            "PopReceipt": m.pop_receipt,
            "DownloadLocation": (
                f"{scheme_root}/api/connector/download/{braces}?correlation-id={m.correlation_id}&blob={m.blob_id}"
            ),
            "IsDownLoadFileExist": not gone,
            "FileDownLoadErrorMessage": ""
            if not gone
            else "The file was deleted after the retention period.",
            "LastDequeueDateTime": _iso(previous) if previous else None,
        }

    def download_blob(self, activity_id: str, correlation_id: str, blob_id: str) -> str:
        act = self._activity(activity_id, "export")
        with self._lock:
            m = self.outbound.get(correlation_id.lower())
        if m is None or m.activity_id != act.activity_id or m.blob_id != blob_id.lower():
            raise ConnectorError(404, "The file was not found.")
        return m.blob_name

    def ack(self, activity_id: str, body: dict) -> None:
        act = self._activity(activity_id, "export")
        cid = str(body.get("CorrelationId") or "").lower()
        with self._lock:
            m = self.outbound.get(cid)
            if m is None or m.activity_id != act.activity_id:
                raise ConnectorError(400, f"Message with correlation id {cid} was not found.")
            if m.dequeue_count == 0:
                raise ConnectorError(400, "The message has not been dequeued.")
            # Accepted with any PopReceipt the message was given: clients that re-ack after a
            # redelivery still succeed. Acknowledging twice is a no-op.
            m.acked = True

    def pending_outbound(self, activity_id: str | None = None) -> list[dict]:
        act = self.config.activity(activity_id) if activity_id else None
        with self._lock:
            return [
                {
                    "correlationId": m.correlation_id,
                    "activityId": m.activity_id,
                    "status": m.status(),
                    "dequeueCount": m.dequeue_count,
                    "visibleAt": m.visible_at.isoformat(),
                }
                for m in self.outbound.values()
                if act is None or m.activity_id == act.activity_id
            ]
