"""Pre-flight inside ``prepare_item``: raw files before their package is built, dropped packages after their
validation, and XLSX drops converted to CSV-Unicode when the route says ``xlsx_as: csv``. Nothing here calls
F&O's import API; the metadata service is asked only for a label the cached snapshot does not know yet."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from dmf.fno.errors import FnoError
from dmf.fno.metadata import MetadataError, Snapshot
from dmf.package.formats import FileKind, UnknownFormatError, format_rules
from dmf.package.limits import Limits
from dmf.package.preflight import (
    PreflightOptions,
    PreflightResult,
    as_outcome,
    package_data_files,
    preflight_member,
    preflight_raw,
    skipped,
)
from dmf.package.zipsafe import Budget, header_problems, precheck, workbook_has_dtd
from dmf.pipeline import metadata as pm
from dmf.pipeline.services import Services
from dmf.routing import ResolvedRoute

log = logging.getLogger(__name__)


@dataclass
class Checked:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None  # the file to build from (a converted CSV for an XLSX drop)
    file_name: str | None = None
    source_format: str | None = None

    def add(self, result: PreflightResult, mode: str) -> None:
        errs, warns = as_outcome(result, mode)
        self.errors += errs
        self.warnings += warns


def snapshot_for(svc: Services, route: ResolvedRoute, label: str, opts: PreflightOptions) -> Snapshot | str:
    """The environment's snapshot knowing ``label``, or why pre-flight cannot run."""
    info = svc.catalogue.get(label)
    if info is not None and info.composite:
        return "composite entities are checked by F&O only"
    try:
        return pm.entity_for(svc.settings, route.environment, label, svc.catalogue)
    except (FnoError, MetadataError) as exc:
        log.warning("pre-flight: no metadata for %r in %s: %s", label, route.environment, type(exc).__name__)
        return f"the metadata of {route.environment} could not be read ({type(exc).__name__})"


def workbook_problem(path: Path, limits: Limits, name: str) -> str | None:
    """The build's own workbook checks (zip bomb, entry count, DTD), run before openpyxl opens it."""
    early = precheck(str(path), limits)
    if early is not None:
        return f"{early.code}: {name}: {early.message}"
    try:
        with zipfile.ZipFile(path) as z:
            errors = header_problems(z, limits)
            if errors:
                return f"{errors[0].code}: {name}: {errors[0].message}"
            if workbook_has_dtd(z, Budget(limits.max_uncompressed_bytes)):
                return f"BAD_EXCEL: {name}: the workbook's XML has a document type declaration (DTD), which is not allowed"
    except zipfile.BadZipFile:
        return f"BAD_EXCEL: {name} is not a readable .xlsx workbook"
    return None


@contextlib.contextmanager
def check_raw(
    svc: Services,
    route: ResolvedRoute,
    path: Path,
    file_name: str,
    label: str,
    source_format: str,
    limits: Limits,
) -> Iterator[Checked]:
    """Pre-flight of a raw file (and the XLSX → CSV conversion); the converted file lives for the block."""
    opts = pm.options_for(svc.settings, route)
    out = Checked(path=path, file_name=file_name, source_format=source_format)
    try:
        rules = format_rules(source_format)
    except UnknownFormatError:
        yield out  # the build reports it
        return
    convert = rules.kind is FileKind.EXCEL and route.xlsx_as == "csv" and not route.template_package
    if opts.mode == "off" and not convert:
        yield out
        return
    snap: Snapshot | str | None = snapshot_for(svc, route, label, opts) if opts.mode != "off" else None
    if isinstance(snap, str):
        out.add(skipped(snap, file_name, label), "warn")
        snap = None
    if rules.kind is FileKind.DELIMITED and snap is not None and route.template_package:
        # The template's EntityMapList may rename columns; its mapping is not applied here (yet).
        out.add(skipped("the route's template package maps the columns", file_name, label), "warn")
        yield out
        return
    named = (file_name, label)
    if rules.kind is FileKind.DELIMITED and snap is not None:
        out.add(preflight_raw(path, rules, snap, opts, named, limits.max_record_chars), opts.mode)
        yield out
        return
    if rules.kind is FileKind.EXCEL:
        bad = workbook_problem(path, limits, file_name)
        if bad is not None:
            yield out  # the build rejects it with the same words
            return
        with tempfile.TemporaryDirectory() as tmp:
            csv_path = Path(tmp) / "converted.csv"
            try:
                with csv_path.open("wb") as dest:
                    csv_out = dest if convert else None
                    result = preflight_raw(path, rules, snap, opts, named, limits.max_record_chars, csv_out)
            except Exception as exc:  # openpyxl raises many types for a broken workbook: the build says so
                log.info("pre-flight: workbook unreadable (%s)", type(exc).__name__)
                yield out
                return
            out.add(result, opts.mode if snap is not None else "warn")
            if convert:
                out.path = csv_path
                out.file_name = str(PurePosixPath(file_name).with_suffix(".csv"))
                out.source_format = "CSV-Unicode"
            yield out
        return
    yield out  # XML raw files: checked by F&O only


def check_package(svc: Services, route: ResolvedRoute, path: Path, report: Any, limits: Limits) -> Checked:
    """Pre-flight of a validated package's delimited and Excel data files, through their EntityMapList."""
    opts = pm.options_for(svc.settings, route)
    out = Checked(path=path)
    if opts.mode == "off" or report.manifest is None:
        return out
    with zipfile.ZipFile(path) as z:
        for ent, member, rules in package_data_files(z, report.manifest.entities):
            if member is None:
                continue
            snap = snapshot_for(svc, route, ent.entity_name, opts)
            if isinstance(snap, str):
                out.add(skipped(snap, member, ent.entity_name), "warn")
                continue
            result = preflight_member(
                z, member, ent, rules, snapshot=snap, opts=opts, max_record_chars=limits.max_record_chars
            )
            out.add(result, opts.mode)
    return out


def record_warnings(
    svc: Services, day: str | None, drop_id: str, seq: int, source: str, warnings: list[str]
) -> None:
    """Pre-flight warnings of one item, appended to the drop's outcome row (column ``PreflightWarnings``, one
    ``item <seq>: …`` line per item; items of a batch write concurrently, hence the etag loop)."""
    if not warnings or not day:
        return
    from dmf.storage.etag import ContentionError, Write, update_row
    from dmf.storage.outcomes import safe_key

    line = f"item {int(seq)}: " + "; ".join(warnings)

    def append(row: Any) -> Write:
        text = "\n".join(x for x in ((row or {}).get("PreflightWarnings"), line) if x)[:30000]
        return Write({"PreflightWarnings": text})

    try:
        update_row(svc.outcomes.table, safe_key(day), safe_key(drop_id), append, what="", attempts=8)
    except ContentionError:
        log.warning("pre-flight warnings of item %s not recorded: the outcome row kept changing", seq)
