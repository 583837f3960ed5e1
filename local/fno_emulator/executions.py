"""What the engine keeps of an execution (import or export) and of each entity in it; its status follows
from the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .config import CatalogueEntity
from .validation import RowError


@dataclass
class EntityResult:
    label: str
    target_entity: str
    order: tuple[int, int, int]
    total: int = 0
    good: list[tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    file_error: str | None = None
    fields: list[str] = field(default_factory=list)
    skipped: bool = False  # not run because an earlier level failed with FailLevelOnError
    child_good: dict[str, list[tuple[tuple[str, ...], dict[str, str]]]] = field(default_factory=dict)
    exported: bool = False  # an export entity: nothing to validate
    released: int | None = None  # good-row count once the rows moved to the data store

    @property
    def good_count(self) -> int:
        return self.released if self.released is not None else len(self.good)

    def release_rows(self) -> None:
        """After commit the rows live in the data store; keep only their count."""
        self.released = self.good_count
        self.good = []
        self.child_good = {}

    @property
    def error_record_count(self) -> int:
        return len({e.record_id for e in self.errors})

    def matches(self, name: str) -> bool:
        low = name.strip().lower()
        return low in (self.label.lower(), self.target_entity.lower())

    @property
    def status(self) -> str:
        if self.exported:
            return "Succeeded"
        if self.skipped:
            return "NotRun"
        if self.file_error or (self.total and not self.good_count):
            return "Failed"
        return "PartiallySucceeded" if self.errors else "Succeeded"


@dataclass
class Execution:
    execution_id: str
    kind: str  # "import" | "export"
    definition_group: str
    legal_entity: str
    created_at: datetime
    visible_at: datetime
    start_at: datetime
    end_at: datetime | None  # None while the package is still being read
    execute: bool = True
    counts_for_concurrency: bool = False
    package_name: str = ""
    results: list[EntityResult] = field(default_factory=list)
    package_error: str | None = None
    committed: bool = False
    package_blob: str | None = None  # exports: the built package
    export_entities: list[tuple[CatalogueEntity, str]] = field(default_factory=list)
    error_keys_ready: dict[str, datetime] = field(default_factory=dict)
    error_blobs: dict[str, str] = field(default_factory=dict)  # "staging:<label>" / "keys:<label>" -> blob
    message_id: str | None = None
    preview_count: int | None = None  # ExportToPackagePreview: rows per entity
    status_override: str | None = None  # admin: "Canceled", or "Unknown" as some platform updates answered

    def status(self, now: datetime) -> str | None:
        """None while F&O would answer "Execution details were not found"."""
        if now < self.visible_at:
            return None
        if self.status_override is not None:
            return self.status_override
        if now < self.start_at:
            return "NotRun"
        if self.end_at is None or now < self.end_at:
            return "Executing"
        return self.outcome

    @property
    def outcome(self) -> str:
        if self.package_error:
            return "Failed"
        ran = [r for r in self.results if not r.skipped]
        if not ran and not self.results:
            return "Succeeded"
        statuses = {r.status for r in self.results}
        if statuses <= {"Succeeded"}:
            return "Succeeded"
        if any(r.good_count for r in self.results):
            return "PartiallySucceeded"
        return "Failed"

    def all_errors(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if self.package_error:
            out.append({"RecordId": "", "Field": "", "ErrorMessage": self.package_error})
        for r in self.results:
            if r.file_error:
                out.append({"RecordId": "", "Field": "", "ErrorMessage": f"{r.label}: {r.file_error}"})
            out.extend(e.as_api() for e in r.errors)
        return out

    def summary(self, now: datetime) -> dict:
        return {
            "executionId": self.execution_id,
            "kind": self.kind,
            "definitionGroupId": self.definition_group,
            "legalEntityId": self.legal_entity,
            "createdAt": self.created_at.isoformat(),
            "startAt": self.start_at.isoformat(),
            "endAt": self.end_at.isoformat() if self.end_at else None,
            "status": self.status(now),
            "messageId": self.message_id,
            "entities": [
                {
                    "entity": r.label,
                    "total": r.total,
                    "good": r.good_count,
                    "errors": len(r.errors),
                    "fileError": r.file_error,
                    "status": r.status,
                }
                for r in self.results
            ],
            "packageError": self.package_error,
        }


@dataclass
class Violation:
    at: datetime
    execution_id: str
    running: list[str]
    message: str
