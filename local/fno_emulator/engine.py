"""Execution engine: imports and exports, their status machine, the data they produce.

State is derived from the clock, lazily: an execution's phases are fixed times (details visible,
started, finished), its outcome is computed from the data when the package is read, and its rows reach
the data store when ``settle()`` first runs at or after its finish time (every API call settles first).
A virtual clock that jumps three hours therefore makes a three-hour import finish.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from datetime import datetime, timedelta

from .blobs import BlobFetchError, BlobStore
from .business_events import BusinessEvents
from .clock import Clock
from .config import CatalogueEntity, DataProject, EmulatorConfig
from .datastore import DataStore
from .executions import EntityResult, Execution, Violation
from .package_reader import (
    DataFileError,
    OpenedPackage,
    PackageError,
    Record,
    open_package,
    read_entity_records,
)
from .package_writer import ExportEntity, build_package
from .validation import Validated, validate

TERMINAL = ("Succeeded", "PartiallySucceeded", "Failed", "Canceled")
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


class ODataError(Exception):
    """An action failed; the server answers with the OData error body F&O uses."""

    def __init__(self, status: int, message: str, action: str = "", exc_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.action = action
        self.exc_type = exc_type or "System.InvalidOperationException"


def not_found(action: str, execution_id: str) -> ODataError:
    return ODataError(400, f"Execution details were not found for execution id: {execution_id}", action)


class Engine:
    def __init__(self, config: EmulatorConfig, clock: Clock, store: DataStore, blobs: BlobStore) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.blobs = blobs
        self.executions: dict[str, Execution] = {}
        self.violations: list[Violation] = []
        self.lock = threading.RLock()
        self._pending: list[Execution] = []  # not yet committed
        self._next_due: datetime | None = None
        self.summary_page_base = ""  # set by the server
        self.events = BusinessEvents(clock, config.business_events_url, config.business_events_key)

    # -- helpers ----------------------------------------------------------------------------------
    def _times(self, project: DataProject | None, kind: str, rows: int) -> tuple[float, float]:
        t = self.config.timings
        base = t.import_base_seconds if kind == "import" else t.export_base_seconds
        per_row = t.import_per_row_seconds if kind == "import" else t.export_per_row_seconds
        if project is not None:
            base = project.base_seconds if project.base_seconds is not None else base
            per_row = project.per_row_seconds if project.per_row_seconds is not None else per_row
        return base, per_row

    def _legal_entity(self, legal_entity: str, action: str) -> str:
        le = (legal_entity or "").strip().upper()
        if le not in {x.upper() for x in self.config.legal_entities}:
            raise ODataError(400, f"Company '{legal_entity}' does not exist.", action)
        return le

    def get(self, execution_id: str, action: str) -> Execution:
        self.settle()
        with self.lock:
            e = self.executions.get(execution_id)
        if e is None or e.status(self.clock.now()) is None:
            raise not_found(action, execution_id)
        return e

    def _register(self, e: Execution) -> None:
        self.executions[e.execution_id] = e
        self._pending.append(e)

    def _schedule(self, e: Execution) -> None:
        if e.end_at is not None and (self._next_due is None or e.end_at < self._next_due):
            self._next_due = e.end_at

    # -- imports ----------------------------------------------------------------------------------
    def running_imports(self, now: datetime) -> list[Execution]:
        return [
            e
            for e in self.executions.values()
            if e.counts_for_concurrency and e.created_at <= now and (e.end_at is None or now < e.end_at)
        ]

    def import_from_package(
        self,
        package_url: str,
        definition_group: str,
        execution_id: str,
        execute: bool,
        overwrite: bool,
        legal_entity: str,
        action: str = "ImportFromPackage",
    ) -> str:
        self.settle()
        le = self._legal_entity(legal_entity, action)
        now = self.clock.now()
        execution_id = execution_id or f"{definition_group}-{now:%Y-%m-%d_%H-%M-%S}-{uuid.uuid4()}"
        project = self.config.project(definition_group) if definition_group else None
        with self.lock:
            if execution_id in self.executions:
                raise ODataError(400, f"Execution id {execution_id} already exists.", action)
            running = self.running_imports(now)
            if len(running) >= self.config.parallel_imports:
                message = (
                    "Another import is executing in this environment. ImportFromPackage must not be called "
                    "in parallel: the batch job for execution "
                    f"{running[0].execution_id} is still running; parallel import failed."
                )
                self.violations.append(
                    Violation(now, execution_id, [r.execution_id for r in running], message)
                )
                raise ODataError(500, message, action)
            t = self.config.timings
            visible = now + timedelta(seconds=t.not_found_seconds)
            e = Execution(
                execution_id=execution_id,
                kind="import",
                definition_group=definition_group,
                legal_entity=le,
                created_at=now,
                visible_at=visible,
                start_at=visible + timedelta(seconds=t.queue_seconds),
                end_at=None,
                execute=execute,
                counts_for_concurrency=True,
            )
            self._register(e)  # reserved before reading, so a racing second call sees it running
        try:
            data = self.blobs.fetch(package_url)
            pkg = open_package(data)
            self._check_manifest(pkg, definition_group, project, overwrite, action)
        except (BlobFetchError, PackageError, ODataError) as exc:
            with self.lock:
                self.executions.pop(execution_id, None)
                self._pending.remove(e)
            if isinstance(exc, ODataError):
                raise
            raise ODataError(400, str(exc), action) from exc
        try:
            results = self.run_package(pkg, project)
        except Exception as exc:
            # Never leave the import slot reserved forever: the execution fails instead.
            with self.lock:
                e.package_error = f"Unexpected error while reading the package: {type(exc).__name__}"
            results = []
            self._finish_plan(e, results, project)
            raise
        self._finish_plan(e, results, project)
        return execution_id

    def _check_manifest(
        self,
        pkg: OpenedPackage,
        definition_group: str,
        project: DataProject | None,
        overwrite: bool,
        action: str,
    ) -> None:
        composites = 0
        for me in pkg.manifest.entities:
            cat = self.config.entity(me.entity_name, label_only=True)
            if cat is None:
                raise ODataError(
                    400, f"Entity {me.entity_name} does not exist in the target environment.", action
                )
            if self.config.source_format(me.source_format) is None:
                raise ODataError(400, f"Source data format {me.source_format} does not exist.", action)
            composites += cat.composite
        if composites:
            if composites > 1 or len(pkg.manifest.entities) > 1:
                raise ODataError(400, "Only one composite entity is supported in a package.", action)
            if overwrite:
                raise ODataError(
                    400, "Overwrite must be false for a package with a composite entity.", action
                )
            if project is None:
                raise ODataError(
                    400, f"Data project {definition_group} must exist to import a composite entity.", action
                )

    def run_package(self, pkg: OpenedPackage, project: DataProject | None) -> list[EntityResult]:
        """Read and validate every entity in execution-unit / level / sequence order."""
        results: list[EntityResult] = []
        failed_units: set[int] = set()
        failed_levels: set[tuple[int, int]] = set()
        for me in sorted(pkg.manifest.entities, key=lambda m: m.order):
            cat = self.config.entity(me.entity_name, label_only=True)
            fmt = self.config.source_format(me.source_format)
            assert cat is not None and fmt is not None  # checked by _check_manifest
            result = EntityResult(
                cat.label, cat.target_entity, me.order, fields=[m.entity_field for m in me.maps]
            )
            results.append(result)
            if me.execution_unit in failed_units or any(
                u == me.execution_unit and lv < me.level for u, lv in failed_levels
            ):
                result.skipped = True
                continue
            try:
                records = read_entity_records(pkg, me, fmt, cat, self.config)
            except DataFileError as exc:
                result.file_error = str(exc)
            else:
                self._validate_into(result, records, cat)
            if result.status != "Succeeded":
                if me.fail_execution_unit_on_error:
                    failed_units.add(me.execution_unit)
                if me.fail_level_on_error:
                    failed_levels.add((me.execution_unit, me.level))
        return results

    def _validate_into(self, result: EntityResult, records: list[Record], cat: CatalogueEntity) -> None:
        if not cat.composite:
            v = validate(records, cat)
            result.total, result.good, result.errors = v.total, v.good, v.errors
            return
        # Composite: validate each child entity's records; good rows are stored per child entity.
        result.total = len(records)
        by_label: dict[str, list[Record]] = {}
        for r in records:
            by_label.setdefault(r.entity_label, []).append(r)
        for label, recs in by_label.items():
            child = self.config.entity(label)
            assert child is not None
            v: Validated = validate(recs, child)
            result.good.extend(v.good)
            result.child_good.setdefault(label, []).extend(v.good)
            result.errors.extend(v.errors)

    def _finish_plan(self, e: Execution, results: list[EntityResult], project: DataProject | None) -> None:
        rows = sum(r.total for r in results)
        base, per_row = self._times(project, "import", rows)
        with self.lock:
            e.results = results
            e.end_at = e.start_at + timedelta(seconds=base + per_row * rows)
            self._schedule(e)
        self.events.scheduled(e)

    def commit(self, e: Execution) -> None:
        """Write an import's good rows to the data store (called once, at its finish time)."""
        if e.kind != "import" or not e.execute or e.package_error:
            return
        for r in sorted(e.results, key=lambda r: r.order):
            if r.skipped or r.file_error:
                continue
            if r.child_good:  # composite: rows go to each child entity
                for label, rows in r.child_good.items():
                    self.store.upsert(e.legal_entity, label, rows, self._columns(label))
            else:
                self.store.upsert(e.legal_entity, r.label, r.good, self._columns(r.label))
        for r in e.results:
            r.release_rows()

    def _columns(self, label: str) -> list[str]:
        cat = self.config.entity(label)
        return [f.name for f in cat.fields] if cat else []

    # -- exports ----------------------------------------------------------------------------------
    def export_to_package(
        self,
        definition_group: str,
        package_name: str,
        execution_id: str,
        legal_entity: str,
        action: str = "ExportToPackage",
        count: int | None = None,
    ) -> str:
        self.settle()
        le = self._legal_entity(legal_entity, action)
        project = self.config.project(definition_group)
        if project is None or project.operation != "export":
            raise ODataError(400, f"Export data project {definition_group} was not found.", action)
        entities: list[tuple[CatalogueEntity, str]] = []
        for pe in project.entities:
            cat = self.config.entity(pe.entity)
            if cat is None or cat.composite:
                raise ODataError(400, f"Entity {pe.entity} cannot be exported by this environment.", action)
            entities.append((cat, pe.source_format))
        now = self.clock.now()
        execution_id = execution_id or f"{definition_group}-{now:%Y-%m-%d_%H-%M-%S}-{uuid.uuid4()}"
        rows = sum(self.store.count(le, cat.label) for cat, _ in entities)
        if count is not None:
            rows = min(rows, count * len(entities))
        base, per_row = self._times(project, "export", rows)
        t = self.config.timings
        visible = now + timedelta(seconds=t.not_found_seconds)
        start = visible + timedelta(seconds=t.queue_seconds)
        with self.lock:
            if execution_id in self.executions:
                raise ODataError(400, f"Execution id {execution_id} already exists.", action)
            e = Execution(
                execution_id=execution_id,
                kind="export",
                definition_group=project.name,
                legal_entity=le,
                created_at=now,
                visible_at=visible,
                start_at=start,
                end_at=start + timedelta(seconds=base + per_row * rows),
                package_name=package_name or project.name,
                export_entities=entities,
                results=[
                    EntityResult(c.label, c.target_entity, (1, 1, i + 1), exported=True)
                    for i, (c, _) in enumerate(entities)
                ],
            )
            e.preview_count = count
            self._register(e)
            self._schedule(e)
        return execution_id

    def build_export(self, e: Execution) -> None:
        """Build the package from the data store as it is at the export's finish time and upload it."""
        entities = []
        limit = e.preview_count
        for i, (cat, fmt_name) in enumerate(e.export_entities):
            fmt = self.config.source_format(fmt_name)
            assert fmt is not None
            rows = self.store.rows(e.legal_entity, cat.label)
            if limit is not None:
                rows = rows[:limit]
            entities.append(ExportEntity(cat, fmt, rows, sequence=i + 1))
            e.results[i].total = len(rows)
        data = build_package(e.definition_group, e.package_name, entities)
        name = f"{uuid.uuid4()}/{e.package_name}.zip"
        self.blobs.upload(name, data)
        e.package_blob = name

    def exported_package_url(self, execution_id: str, action: str) -> str:
        e = self.get(execution_id, action)
        now = self.clock.now()
        if e.kind != "export" or e.status(now) not in TERMINAL or e.package_blob is None:
            return ""
        if e.end_at and now < e.end_at + timedelta(seconds=self.config.timings.exported_url_delay_seconds):
            return ""
        return self.blobs.read_url(e.package_blob, self.config.timings.sas_ttl_seconds)

    # -- settling ---------------------------------------------------------------------------------
    def settle(self) -> None:
        self.blobs.purge_due()  # retention: files older than the retention period are deleted
        now = self.clock.now()
        if self._next_due is None or now < self._next_due:
            return
        to_build: list[Execution] = []
        with self.lock:
            due = sorted((e for e in self._pending if e.end_at is not None and e.end_at <= now), key=_end)
            for e in due:
                self._pending.remove(e)
                e.committed = True
                if e.kind == "import":
                    self.commit(e)
                else:
                    to_build.append(e)
            rest = [e.end_at for e in self._pending if e.end_at is not None]
            self._next_due = min(rest) if rest else None
            # Exports read the store in finish order, after the imports that finished before them.
            for e in to_build:
                self.build_export(e)

    # -- errors -----------------------------------------------------------------------------------
    def execution_errors(self, execution_id: str, action: str) -> str:
        e = self.get(execution_id, action)
        if e.status(self.clock.now()) not in TERMINAL:
            return "[]"
        return json.dumps(e.all_errors())

    def _entity_result(self, e: Execution, entity_name: str, action: str) -> EntityResult:
        for r in e.results:
            if r.matches(entity_name):
                return r
        raise ODataError(400, f"Entity {entity_name} is not part of execution {e.execution_id}.", action)

    def generate_error_keys(self, execution_id: str, entity_name: str, action: str) -> bool:
        e = self.get(execution_id, action)
        now = self.clock.now()
        if e.status(now) not in TERMINAL:
            return False
        r = self._entity_result(e, entity_name, action)
        if not any(x.stage == "target" for x in r.errors):
            return False
        with self.lock:
            e.error_keys_ready.setdefault(
                r.label, now + timedelta(seconds=self.config.timings.error_keys_file_seconds)
            )
        return True

    def error_keys_url(self, execution_id: str, entity_name: str, action: str) -> str:
        e = self.get(execution_id, action)
        r = self._entity_result(e, entity_name, action)
        ready = e.error_keys_ready.get(r.label)
        if ready is None or self.clock.now() < ready:
            return ""
        cat = self.config.entity(r.label)
        keys = cat.keys if cat else []
        rows = [
            [err.values.get(k, "") for k in keys] + [str(err.record_id), err.message]
            for err in r.errors
            if err.stage == "target"
        ]
        return self._error_file(e, f"keys:{r.label}", [*keys, "RECORDID", "ERRORMESSAGE"], rows)

    def staging_error_url(self, execution_id: str, entity_name: str, action: str) -> str:
        e = self.get(execution_id, action)
        if e.status(self.clock.now()) not in TERMINAL:
            return ""
        r = self._entity_result(e, entity_name, action)
        staging = [err for err in r.errors if err.stage == "staging"]
        if not staging:
            return ""
        fields = r.fields or sorted({k for err in staging for k in err.values})
        rows = [
            [err.values.get(f, "") for f in fields] + [str(err.record_id), err.message] for err in staging
        ]
        return self._error_file(e, f"staging:{r.label}", [*fields, "RECORDID", "ERRORMESSAGE"], rows)

    def _error_file(self, e: Execution, kind: str, header: list[str], rows: list[list[str]]) -> str:
        with self.lock:
            name = e.error_blobs.get(kind)
        if name is None:
            buf = io.StringIO(newline="")
            writer = csv.writer(buf, lineterminator="\r\n")
            writer.writerow(header)
            writer.writerows(rows)
            name = f"errors/{e.execution_id}/{kind.replace(':', '-')}.csv".replace(" ", "_")
            self.blobs.upload(name, b"\xff\xfe" + buf.getvalue().encode("utf-16-le"))
            with self.lock:
                e.error_blobs[kind] = name
        return self.blobs.read_url(name, self.config.timings.sas_ttl_seconds)

    def cancel(self, execution_id: str) -> None:
        """Stop an execution as a user would in F&O: it ends now, Canceled, and writes nothing."""
        now = self.clock.now()
        with self.lock:
            e = self.executions[execution_id]
            if e in self._pending:
                self._pending.remove(e)
            e.status_override = "Canceled"
            e.end_at = min(e.end_at or now, max(now, e.created_at))
            e.committed = True

    def override_status(self, execution_id: str, status: str | None) -> None:
        with self.lock:
            self.executions[execution_id].status_override = status

    # -- inspection -------------------------------------------------------------------------------
    def peak_concurrent_imports(self) -> int:
        """Most ImportFromPackage executions running at once (from their call to their finish)."""
        return self._peak(lambda e: e.counts_for_concurrency, lambda e: e.created_at)

    def peak_concurrent_executions(self) -> int:
        """Most executions of any kind (API imports, exports, recurring) in NotRun/Executing at once."""
        return self._peak(lambda e: True, lambda e: e.visible_at)

    def _peak(self, include, start_of) -> int:
        now = self.clock.now()
        events: list[tuple[datetime, int]] = []
        with self.lock:
            for e in self.executions.values():
                if include(e):
                    events.append((start_of(e), 1))
                    events.append((e.end_at or now, -1))
        peak = cur = 0
        for _, delta in sorted(events, key=lambda x: (x[0], x[1])):  # ends before starts at equal times
            cur += delta
            peak = max(peak, cur)
        return peak


def _end(e: Execution) -> datetime:
    assert e.end_at is not None
    return e.end_at
