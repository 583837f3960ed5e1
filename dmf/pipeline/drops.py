"""Inbound drop steps: plan a drop, prepare (build or validate, then stage) each item, finalise the drop.

Each function takes and returns small JSON-friendly dicts (they are activity payloads) and returns a
result object for every expected failure instead of raising, so one bad item never sinks the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from dmf.logs import ops_event
from dmf.package.catalogue import EntityInfo
from dmf.package.problems import Problem
from dmf.package.zipsafe import precheck
from dmf.pipeline import preflight_step
from dmf.pipeline.blobio import downloaded, sha256_blob, upload_file
from dmf.pipeline.payloads import ABSENT, Drop, FinalizeDrop, PrepareItem, to_wire
from dmf.pipeline.results import Plan, PreparedItem
from dmf.pipeline.services import Services
from dmf.redact import redact
from dmf.routing import RAW_EXTENSIONS, ResolvedRoute, RoutingError, resolve
from dmf.settings import Deployment
from dmf.storage.transfer import copy_blob

if TYPE_CHECKING:  # the builders and validators load on first use (cold start: bench/cold_start.py)
    from dmf.package.inspect import PackageReport

log = logging.getLogger(__name__)

MAX_BATCH_MANIFEST_BYTES = 1 * 2**20
OK_STATUSES = {"Succeeded", "PartiallySucceeded"}
FINAL_DROP_STATUSES = {
    "Succeeded", "PartiallySucceeded", "Failed", "Rejected", "Duplicate", "Gone", "Canceled",
}  # fmt: skip
# Outcomes that leave F&O's side unknown: the content claim stays, so a re-drop cannot import twice.
UNSETTLED = {"TimedOut", "Unknown"}


def _now() -> datetime:
    return datetime.now(UTC)


def _rejected(reason: str, route: dict | None = ABSENT) -> Plan:
    return Plan(action="reject", reason=reason, route=route)


# -- plan ----------------------------------------------------------------------------------------------
def plan_drop(svc: Services, req: Drop | dict[str, Any]) -> dict[str, Any]:
    """Route the blob, detect duplicates and list the items to prepare."""
    return to_wire(_plan(svc, Drop.of(req)))


def _plan(svc: Services, req: Drop) -> Plan:
    drop_id, day, container, name = req.instance_id, req.day, req.container, req.name
    source = f"{container}/{name}"
    previous = svc.outcomes.get(day, drop_id) or {}
    if previous.get("Status") in FINAL_DROP_STATUSES:
        # This blob version was handled already (its orchestration was started again): touch nothing.
        return Plan(action="already-done", reason=f"drop {drop_id} already ended {previous['Status']}")
    svc.outcomes.upsert(
        day,
        drop_id,
        {
            "Kind": "drop",
            "Status": "Planning",
            "SourceBlob": source,
            "InstanceId": drop_id,
            "ReceivedAt": req.received_at,
            "StartedAt": _now(),
        },
    )
    received = req.received_at
    svc.ledger.index_drop(source, drop_id, day, datetime.fromisoformat(received) if received else _now())
    try:
        route = resolve(name, svc.settings)
    except RoutingError as exc:
        return _rejected(str(exc))
    svc.outcomes.upsert(
        day,
        drop_id,
        {
            "Route": route.route,
            "Environment": route.environment,
            "LegalEntity": route.legal_entity,
            "DataProject": route.data_project,
            "Entity": route.entity,
            "DropKind": route.kind,
        },
    )
    if route.kind == "unknown":
        return _rejected(
            f"{PurePosixPath(name).name!r}: unsupported file type; drop a data package (.zip), a raw data "
            "file (.csv, .txt, .xml, .xlsx) or a batch manifest (*.batch.json)",
            route=route.model_dump(),
        )
    if route.data_project and "'" in route.data_project:
        return _rejected(
            f"data project {route.data_project!r} contains an apostrophe, which DMF's package API cannot handle",
            route=route.model_dump(),
        )
    if route.mode == "enqueue":
        env = svc.settings.environment(route.environment)
        if env.deployment is Deployment.ONPREM:
            return _rejected(
                f"route {route.route!r} enqueues to {env.name!r}, an on-premises environment: the Recurring "
                "Integration API does not exist there; use a package-import route",
                route=route.model_dump(),
            )
    blob = svc.blob(container, name)
    etag = req.etag
    try:
        sha, size = sha256_blob(blob, etag)
    except ResourceModifiedError:
        reason = f"{source} was replaced by a newer upload before it was read; that version is its own drop"
        svc.outcomes.upsert(day, drop_id, {"Status": "Gone", "Reason": reason, "FinishedAt": _now()})
        return Plan(action="gone", reason=reason)
    except ResourceNotFoundError:
        reason = f"{source} no longer exists (deleted or replaced before it was read)"
        svc.outcomes.upsert(day, drop_id, {"Status": "Gone", "Reason": reason, "FinishedAt": _now()})
        return Plan(action="gone", reason=reason)
    if size == 0:
        return _rejected(f"{source} is empty", route=route.model_dump())
    svc.outcomes.upsert(day, drop_id, {"ContentSha256": sha, "SizeBytes": size})
    claim = svc.ledger.claim_content(sha, drop_id, source)
    if not claim.mine and not route.allow_duplicate_content:
        return Plan(
            action="duplicate",
            reason=f"same content as {claim.source_blob} (drop {claim.owner}); not imported again",
            duplicate_of=claim.owner,
            route=route.model_dump(),
            sha256=sha,
        )
    base = {"route": route.model_dump(), "sha256": sha}
    if route.mode == "enqueue":
        return Plan(**base, action="enqueue", items=[{"seq": 1, "kind": route.kind, "source": source}])
    if route.kind == "batch":
        return replace(_plan_batch_manifest(svc, drop_id, container, name, route), **base)
    if route.kind == "package" and _is_batch_zip(blob, etag, svc.limits(route.max_rows_per_package)):
        return replace(_plan_batch_zip(svc, drop_id, container, name, route), **base)
    item = {"seq": 1, "kind": route.kind, "source": source, "entity": route.entity, "etag": etag}
    return Plan(**base, action="import", items=[item])


def _is_batch_zip(blob: Any, etag: str | None, limits: Any) -> bool:
    with downloaded(blob, ".zip", etag) as path:
        return is_batch_zip(path, limits)


def is_batch_zip(path: Path, limits: Any) -> bool:
    """A zip with no Manifest.xml at its root that holds packages (or a batch manifest) is a batch."""
    import zipfile

    if precheck(path, limits) is not None:
        return False  # too many entries to even list: inspect rejects it as a package
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile:
        return False
    lower = [n.lower() for n in names]
    if "manifest.xml" in lower:
        return False
    return any(n.endswith(".zip") or n.endswith(".batch.json") for n in lower)


def _plan_batch_zip(svc: Services, drop_id: str, container: str, name: str, route: ResolvedRoute) -> Plan:
    with downloaded(svc.blob(container, name), ".zip") as path, tempfile.TemporaryDirectory() as out:
        from dmf.package.batch import extract_batch_zip

        result = extract_batch_zip(
            path, Path(out), svc.limits(route.max_rows_per_package), name=PurePosixPath(name).name
        )
        errors = [str(p) for p in result.problems if _is_error(p)]
        if errors:
            return _rejected("batch zip rejected: " + "; ".join(errors))
        items = []
        for seq, entry in enumerate(result.entries, start=1):
            # entry.name passed the name-length limit, so the blob name stays far below Azure's 1,024.
            staged = f"{svc.settings.staging_container}/{drop_id}/batch/{seq:03d}-{entry.name}"
            upload_file(entry.path, svc.blob_at(staged))
            item = {
                "seq": seq,
                "kind": entry.kind,
                "source": staged,
                "entity": entry.entity,
                "name": entry.name,
            }
            if entry.source_format:
                item["source_format"] = entry.source_format
            items.append(item)
    if not items:
        return _rejected("batch zip holds no packages")
    return Plan(action="import", items=items)


def _plan_batch_manifest(
    svc: Services, drop_id: str, container: str, name: str, route: ResolvedRoute
) -> Plan:
    blob = svc.blob(container, name)
    if blob.get_blob_properties().size > MAX_BATCH_MANIFEST_BYTES:
        return _rejected("batch manifest is larger than 1 MiB")
    try:
        from dmf.package.batch import parse_batch_manifest

        manifest = parse_batch_manifest(blob.download_blob().readall())
    except ValueError as exc:
        return _rejected(f"batch manifest is invalid: {exc}")
    # Members wait in "_<manifest stem>/" beside the manifest: "_" folders never start a drop of their own,
    # so the parts can be uploaded first and the manifest last.
    manifest_path = PurePosixPath(name)
    parts_folder = manifest_path.parent / ("_" + manifest_path.name[: -len(".batch.json")])
    items, missing = [], []
    for seq, entry in enumerate(manifest.items, start=1):
        member = str(parts_folder / entry.file)
        if len(member) > MAX_BLOB_NAME:
            return _rejected(
                f"batch manifest item {seq} ({entry.file[:60]!r}…) would be the blob {len(member)} characters "
                f"long, over Azure's limit of {MAX_BLOB_NAME}: shorten the manifest's or the file's name"
            )
        if not svc.blob(container, member).exists():
            missing.append(member)
            continue
        kind = "package" if entry.is_package else "raw"
        items.append({"seq": seq, "kind": kind, "source": f"{container}/{member}", "entity": entry.entity})
    if missing:
        return _rejected("batch manifest names files that do not exist: " + ", ".join(missing))
    if not items:
        return _rejected("batch manifest names no files")
    return Plan(action="import", items=items, members=[i["source"] for i in items])


# -- prepare ---------------------------------------------------------------------------------------------
@dataclass
class PreparedPackage:
    path: Path  # a package zip ready to stage (the input itself, or one that build wrote in out_dir)
    report: PackageReport
    rows: int | None  # data rows when built here; None for a dropped package (its report counts them)


@dataclass
class Prepared:
    """What building (raw) or validating (package) one local file gave.

    ``problems`` holds errors and warnings (each with its file, entity and row where known); ``packages``
    is empty when any is an error. The pipeline's ``prepare_item`` and the CLI's ``check``/``build`` both
    come through here, so a file checked locally meets exactly the rules a drop meets.
    """

    problems: list[Problem] = field(default_factory=list)
    packages: list[PreparedPackage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(_is_error(p) for p in self.problems)


def prepare_file(
    path: Path,
    *,
    kind: str,
    file_name: str,
    route: ResolvedRoute,
    limits: Any,
    catalogue: Any,
    out_dir: Path,
    entity: str | None = None,
    source_format: str | None = None,
    template: Path | None = None,
    template_name: str | None = None,
    wrap: Callable[[BinaryIO], BinaryIO] | None = None,
    step: Callable[[str], None] | None = None,
) -> Prepared:
    """Build packages from a raw file (``kind == "raw"``) and validate each, or validate a package.

    ``wrap`` may wrap the raw file's stream and ``step`` is told of each validation (the CLI's progress line).
    """
    if kind != "raw":
        report = _inspect(path, route, limits, catalogue, outside=True)
        return Prepared(list(report.problems), [PreparedPackage(path, report, None)] if report.ok else [])
    info = catalogue.get(entity) if entity else None
    if info is None:
        info = EntityInfo(label=entity or "Unknown", target_entity=entity or "Unknown")
    with path.open("rb") as f:
        from dmf.package.build import build_packages_from_raw

        built = build_packages_from_raw(
            wrap(f) if wrap else f,
            file_name=file_name,
            entity=info,
            source_format=source_format or "CSV-Unicode",
            data_project=route.data_project or "",
            limits=limits,
            out_dir=out_dir,
            template=template,
            template_name=template_name,
        )
    problems = list(built.problems)
    if any(_is_error(p) for p in problems):
        return Prepared(problems)
    packages = []
    for k, bp in enumerate(built.packages, start=1):
        if step:
            step(f"checking package {k}/{len(built.packages)}")
        # Built here from checked input: the zip bomb checks are for input from outside.
        report = _inspect(bp.path, route, limits, catalogue, outside=False)
        if not report.ok:
            return Prepared(problems + list(report.problems))
        packages.append(PreparedPackage(bp.path, report, bp.rows))
    return Prepared(problems, packages)


def prepare_item(svc: Services, req: PrepareItem | dict[str, Any]) -> dict[str, Any]:
    """Build (raw) or validate (package) one item and stage the result in our staging container."""
    req = PrepareItem.of(req)
    drop_id, item = req.drop_id, req.item
    route = ResolvedRoute.model_validate(req.route)
    seq = item["seq"]
    limits = svc.limits(route.max_rows_per_package)
    src = svc.blob_at(item["source"])
    packages: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        # The temp file is never named after the blob (a blob name may be 1,024 characters long).
        with (
            downloaded(src, _temp_suffix(item["source"]), item.get("etag")) as path,
            contextlib.ExitStack() as stack,
        ):
            raw = item["kind"] == "raw"
            out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            # A route's template package (a blob, "<container>/<name>") supplies mapping and format.
            template = (
                stack.enter_context(downloaded(svc.blob_at(route.template_package), ".zip"))
                if raw and route.template_package
                else None
            )
            file_name = item.get("name") or PurePosixPath(item["source"]).name
            source_format = item_source_format(item, route) if raw else None
            if raw:
                # Pre-flight against the environment's metadata; an XLSX drop may become CSV-Unicode here.
                known = svc.catalogue.get(item["entity"]) if item.get("entity") else None
                label = known.label if known else (item.get("entity") or "Unknown")
                pf = stack.enter_context(
                    preflight_step.check_raw(svc, route, path, file_name, label, source_format, limits)
                )
                if pf.errors:
                    return _not_prepared(seq, pf.errors)
                warnings += pf.warnings
                path = pf.path or path
                file_name = pf.file_name or file_name
                source_format = pf.source_format or source_format
            prepared = prepare_file(
                path,
                kind=item["kind"],
                file_name=file_name,
                route=route,
                limits=limits,
                catalogue=svc.catalogue,
                out_dir=out,
                entity=item.get("entity"),
                source_format=source_format,
                template=template,
                template_name=route.template_package,
            )
            if not prepared.ok:
                problems = [str(p) for p in prepared.problems if _is_error(p)]
                return _not_prepared(seq, problems)
            if not raw:
                pf = preflight_step.check_package(svc, route, path, prepared.packages[0].report, limits)
                if pf.errors:
                    return _not_prepared(seq, pf.errors)
                warnings += pf.warnings
            for k, pp in enumerate(prepared.packages, start=1):
                staged = f"{svc.settings.staging_container}/{drop_id}/{seq:03d}-{k:02d}.zip"
                if not raw and item["source"].startswith(f"{svc.settings.staging_container}/"):
                    staged = item["source"]  # batch members were staged when the batch was unpacked
                else:
                    # Stage the very bytes just validated (not a copy of whatever the blob holds now).
                    upload_file(pp.path, svc.blob_at(staged), {"source": _ascii(item["source"])})
                packages.append(_staged(staged, pp.report, pp.rows))
    except ResourceNotFoundError:
        return _not_prepared(seq, [f"{item['source']} no longer exists"])
    except ResourceModifiedError:
        problem = f"{item['source']} was replaced by a newer upload while being prepared; that version is its own drop"
        return _not_prepared(seq, [problem])
    preflight_step.record_warnings(svc, req.day, drop_id, seq, item["source"], warnings)
    return to_wire(PreparedItem(ok=True, seq=seq, problems=[], packages=packages, warnings=warnings))


def _not_prepared(seq: int, problems: list[str]) -> dict[str, Any]:
    return to_wire(PreparedItem(ok=False, seq=seq, problems=problems, packages=[]))


def item_source_format(item: dict[str, Any], route: ResolvedRoute) -> str:
    """The DMF source format of a raw item: its own (a batch manifest says), its route's, else by extension."""
    suffix = PurePosixPath(item["source"].lower()).suffix
    return item.get("source_format") or route.source_format or RAW_EXTENSIONS.get(suffix, "CSV-Unicode")


def _temp_suffix(source: str) -> str:
    """A known extension for a temp file holding ``source`` (openpyxl and zip readers like one)."""
    suffix = PurePosixPath(source.lower()).suffix
    return suffix if suffix in RAW_EXTENSIONS or suffix == ".zip" else ""


def _inspect(
    path: Path, route: ResolvedRoute, limits: Any, catalogue: Any, *, outside: bool
) -> PackageReport:
    from dmf.package.inspect import inspect_package

    return inspect_package(
        path,
        limits=limits,
        catalogue=catalogue,
        overwrite=route.overwrite,
        data_project=route.data_project,
        outside=outside,
    )


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode()


def _is_error(problem: Any) -> bool:
    sev = getattr(problem, "severity", "error")
    return str(getattr(sev, "value", sev)).lower() == "error"


def _staged(staged: str, report: Any, rows: int | None) -> dict[str, Any]:
    entities = [e.entity_name for e in report.manifest.entities] if report.manifest else []
    counts = getattr(report, "row_counts", None) or {}
    total = rows if rows is not None else (sum(counts.values()) if counts else None)
    return {"staged": staged, "entities": entities, "rows": total}


# -- finalise ------------------------------------------------------------------------------------------
def drop_status(results: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> str:
    statuses = [r["status"] for r in results]
    if not statuses and rejected:
        return "Rejected"
    if statuses and all(s == "Succeeded" for s in statuses) and not rejected:
        return "Succeeded"
    if any(s in OK_STATUSES for s in statuses):
        return "PartiallySucceeded"
    if statuses and all(s == "Canceled" for s in statuses) and not rejected:
        return "Canceled"  # an operator canceled it before anything reached F&O
    return "Failed"


def finalize_drop(svc: Services, req: FinalizeDrop | dict[str, Any]) -> dict[str, Any]:
    """Record the drop's summary and move its blob(s) to processed / failed / rejected (never lose one)."""
    req = FinalizeDrop.of(req)
    drop_id, day, source = req.instance_id, req.day, req.source
    action = req.action
    results: list[dict[str, Any]] = req.results or []
    rejected: list[dict[str, Any]] = req.rejected or []
    s = svc.settings
    if action == "duplicate":
        status = "Duplicate"
    elif action == "reject":
        status = "Rejected"
    else:
        status = drop_status(results, rejected)
    reason = req.reason or "; ".join(f"item {r['seq']}: " + "; ".join(r["problems"]) for r in rejected)
    reason = _without_temp_paths(reason)
    for r in rejected:
        svc.outcomes.upsert(
            day,
            f"{drop_id}~r{int(r['seq']):03d}",
            {
                "Kind": "package",
                "Status": "Rejected",
                "Reason": _without_temp_paths("; ".join(r["problems"])),
                "SourceBlob": r.get("source"),
            },
        )
    target = {
        "Succeeded": s.processed_container,
        "PartiallySucceeded": s.processed_container,
        "Failed": s.failed_container,
        "Canceled": s.failed_container,
    }.get(status, s.rejected_container)
    name = source.partition("/")[2]
    archived = _free_destination(svc, f"{target}/{name}", drop_id)
    records = sum(int(r.get("records") or 0) for r in results) if results else None
    errors = [
        f"package {r.get('seq')} {r.get('status')}: {r.get('error_summary') or r.get('reason')}"
        for r in results
        if r.get("error_summary") or r.get("reason")
    ]
    if status not in OK_STATUSES and not reason and errors:
        reason = " | ".join(errors)
    finished = _now()
    summary = {
        "Status": status,
        "Reason": reason or None,
        "PackageCount": len(results) + len(rejected),
        "Records": records,
        "ErrorCount": sum(int(r.get("error_count") or 0) for r in results) if results else None,
        "ErrorSummary": " | ".join(errors) if errors else None,
        "ArchivedBlob": archived,
        "FinishedAt": finished,
        "DuplicateOf": req.duplicate_of,
    }
    started = svc.outcomes.get(day, drop_id) or {}
    if started.get("StartedAt"):
        summary["DurationSeconds"] = round((finished - started["StartedAt"]).total_seconds(), 3)
    # The outcome row is written before the source blob is touched.
    svc.outcomes.upsert(day, drop_id, summary)
    _index_end(svc, source, drop_id, status, reason, finished)
    ops_event(
        log,
        "drop_finished",
        "drop %s ended %s",
        drop_id,
        status,
        level=logging.INFO if status in OK_STATUSES or status == "Duplicate" else logging.WARNING,
        status=status,
        environment=started.get("Environment"),
        legal_entity=started.get("LegalEntity"),
        data_project=started.get("DataProject"),
        drop_id=drop_id,
        packages=len(results) + len(rejected),
        duration_seconds=summary.get("DurationSeconds"),
    )
    _move(svc, source, archived, reason if status not in OK_STATUSES else None, drop_id, status, req.etag)
    for member in req.members or []:
        if member != source:
            dest = _free_destination(svc, f"{target}/{member.partition('/')[2]}", drop_id)
            _move(svc, member, dest, None, drop_id, status)
    unsettled = any(r.get("status") in UNSETTLED for r in results)
    if (
        status in {"Rejected", "Failed", "Canceled"}
        and req.sha256
        and action != "duplicate"
        and not unsettled
    ):
        svc.ledger.release_content(req.sha256, drop_id)
    return {"status": status, "archived": archived}


def _index_end(
    svc: Services, source: str, drop_id: str, status: str, reason: str | None, when: datetime
) -> None:
    """The operators' file index gets the drop's end too (a file's history is then one read)."""
    try:
        svc.ledger.update_index(
            source, drop_id, {"Status": status, "Reason": redact(reason or "")[:2000], "FinishedAt": when}
        )
    except Exception as exc:  # the index is secondary: the outcome row is the record
        log.warning("could not update the file index for %s: %s", drop_id, redact(str(exc)))


def _move(
    svc: Services,
    source: str,
    dest: str,
    reason: str | None,
    drop_id: str,
    status: str,
    etag: str | None = None,
) -> None:
    """Copy ``source`` to ``dest`` (beside any reason file), then delete the source. Returns where it went.

    The source is deleted only if it is still the version this drop handled (``etag``), so a file
    re-uploaded meanwhile under the same name is left for its own drop.
    """
    src = svc.blob_at(source)
    dst = svc.blob_at(dest)
    if not src.exists():
        if not dst.exists():
            log.warning("neither %s nor %s exists; nothing to move", source, dest)
        return
    copy_blob(src, dst, metadata={"drop": drop_id, "status": status})
    if reason:
        svc.blob_at(dest + ".reason.txt").upload_blob(
            _reason_text(source, drop_id, status, reason).encode("utf-8"), overwrite=True
        )
    try:
        if etag:
            src.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        else:
            src.delete_blob()
    except ResourceModifiedError:
        log.warning("%s changed since this drop read it; leaving the new version for its own drop", source)


def _free_destination(svc: Services, dest: str, drop_id: str) -> str:
    """``dest``, or a name with the drop id in it when an earlier drop's file already sits there; either
    shortened when it and its ``.reason.txt`` would pass Azure's 1,024-character blob name limit."""
    dest = _fit_blob_name(dest, drop_id)
    blob = svc.blob_at(dest)
    if blob.exists() and (blob.get_blob_properties().metadata or {}).get("drop") != drop_id:
        path = PurePosixPath(dest)
        return _fit_blob_name(str(path.with_name(f"{path.stem}.{drop_id[-12:]}{path.suffix}")), drop_id)
    return dest


MAX_BLOB_NAME = 1024
REASON_SUFFIX = ".reason.txt"


def _fit_blob_name(dest: str, drop_id: str) -> str:
    """``container/name`` unchanged if ``name`` + ``.reason.txt`` fits in a blob name, else with the file
    name's stem cut and tagged with the drop id (the outcome row keeps the full source name)."""
    container, _, name = dest.partition("/")
    if len(name) + len(REASON_SUFFIX) <= MAX_BLOB_NAME:
        return dest
    path = PurePosixPath(name)
    tag = f"~{drop_id[-12:]}"
    suffix = path.suffix if len(path.suffix) <= 16 else ""
    stem = path.name[: len(path.name) - len(suffix)]
    folder = "" if str(path.parent) == "." else f"{path.parent}/"
    room = MAX_BLOB_NAME - len(REASON_SUFFIX) - len(folder) - len(tag) - len(suffix)
    if room < 1:  # the folders alone are too long: keep the file at the container root
        folder, room = "", MAX_BLOB_NAME - len(REASON_SUFFIX) - len(tag) - len(suffix)
    return f"{container}/{folder}{stem[:room]}{tag}{suffix}"


_TEMP_PATH = re.compile(  # matches temp paths to strip them from reasons; nothing is written there
    "(?:" + "|".join(re.escape(d) for d in {tempfile.gettempdir(), "/tmp"}) + r")[/\\][^\s'\"]*"  # noqa: S108 # nosec B108
)


def _without_temp_paths(text: str) -> str:
    """Reasons are for users: a local temp path means nothing to them (and tells an attacker too much)."""
    return _TEMP_PATH.sub("<temp file>", text) if text else text


def _reason_text(source: str, drop_id: str, status: str, reason: str) -> str:
    return (
        json.dumps(
            {
                "source": source,
                "drop": drop_id,
                "status": status,
                "reason": redact(reason),
                "at": _now().isoformat(),
            },
            indent=2,
        )
        + "\n"
    )
