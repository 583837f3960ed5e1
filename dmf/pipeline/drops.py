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
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from dmf.package.batch import extract_batch_zip, parse_batch_manifest
from dmf.package.build import build_packages_from_raw
from dmf.package.catalogue import EntityInfo
from dmf.package.inspect import inspect_package
from dmf.package.zipsafe import precheck
from dmf.pipeline import preflight_step
from dmf.pipeline.blobio import downloaded, sha256_blob, upload_file
from dmf.pipeline.services import Services
from dmf.redact import redact
from dmf.routing import RAW_EXTENSIONS, ResolvedRoute, RoutingError, resolve
from dmf.settings import Deployment
from dmf.storage.transfer import copy_blob

log = logging.getLogger(__name__)

MAX_BATCH_MANIFEST_BYTES = 1 * 2**20
OK_STATUSES = {"Succeeded", "PartiallySucceeded"}
FINAL_DROP_STATUSES = {"Succeeded", "PartiallySucceeded", "Failed", "Rejected", "Duplicate", "Gone"}
# Outcomes that leave F&O's side unknown: the content claim stays, so a re-drop cannot import twice.
UNSETTLED = {"TimedOut", "Unknown"}


def _now() -> datetime:
    return datetime.now(UTC)


def _rejected(reason: str, **extra: Any) -> dict[str, Any]:
    return {"action": "reject", "reason": reason, "items": [], **extra}


# -- plan ----------------------------------------------------------------------------------------------
def plan_drop(svc: Services, req: dict[str, Any]) -> dict[str, Any]:
    """Route the blob, detect duplicates and list the items to prepare."""
    drop_id, day, container, name = req["instance_id"], req["day"], req["container"], req["name"]
    source = f"{container}/{name}"
    previous = svc.outcomes.get(day, drop_id) or {}
    if previous.get("Status") in FINAL_DROP_STATUSES:
        # This blob version was handled already (its orchestration was started again): touch nothing.
        return {
            "action": "already-done",
            "reason": f"drop {drop_id} already ended {previous['Status']}",
            "items": [],
        }
    svc.outcomes.upsert(
        day,
        drop_id,
        {
            "Kind": "drop",
            "Status": "Planning",
            "SourceBlob": source,
            "InstanceId": drop_id,
            "ReceivedAt": req.get("received_at"),
            "StartedAt": _now(),
        },
    )
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
    etag = req.get("etag")
    try:
        sha, size = sha256_blob(blob, etag)
    except ResourceModifiedError:
        reason = f"{source} was replaced by a newer upload before it was read; that version is its own drop"
        svc.outcomes.upsert(day, drop_id, {"Status": "Gone", "Reason": reason, "FinishedAt": _now()})
        return {"action": "gone", "reason": reason, "items": []}
    except ResourceNotFoundError:
        reason = f"{source} no longer exists (deleted or replaced before it was read)"
        svc.outcomes.upsert(day, drop_id, {"Status": "Gone", "Reason": reason, "FinishedAt": _now()})
        return {"action": "gone", "reason": reason, "items": []}
    if size == 0:
        return _rejected(f"{source} is empty", route=route.model_dump())
    svc.outcomes.upsert(day, drop_id, {"ContentSha256": sha, "SizeBytes": size})
    claim = svc.ledger.claim_content(sha, drop_id, source)
    if not claim.mine and not route.allow_duplicate_content:
        return {
            "action": "duplicate",
            "reason": f"same content as {claim.source_blob} (drop {claim.owner}); not imported again",
            "duplicate_of": claim.owner,
            "route": route.model_dump(),
            "sha256": sha,
            "items": [],
        }
    base = {"route": route.model_dump(), "sha256": sha}
    if route.mode == "enqueue":
        return {**base, "action": "enqueue", "items": [{"seq": 1, "kind": route.kind, "source": source}]}
    if route.kind == "batch":
        return {**base, **_plan_batch_manifest(svc, drop_id, container, name, route)}
    if route.kind == "package" and _is_batch_zip(blob, etag, svc.limits(route.max_rows_per_package)):
        return {**base, **_plan_batch_zip(svc, drop_id, container, name, route)}
    item = {"seq": 1, "kind": route.kind, "source": source, "entity": route.entity, "etag": etag}
    return {**base, "action": "import", "items": [item]}


def _is_batch_zip(blob: Any, etag: str | None, limits: Any) -> bool:
    """A zip with no Manifest.xml at its root that holds packages (or a batch manifest) is a batch."""
    import zipfile

    with downloaded(blob, ".zip", etag) as path:
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


def _plan_batch_zip(
    svc: Services, drop_id: str, container: str, name: str, route: ResolvedRoute
) -> dict[str, Any]:
    with downloaded(svc.blob(container, name), ".zip") as path, tempfile.TemporaryDirectory() as out:
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
    return {"action": "import", "items": items}


def _plan_batch_manifest(
    svc: Services, drop_id: str, container: str, name: str, route: ResolvedRoute
) -> dict[str, Any]:
    blob = svc.blob(container, name)
    if blob.get_blob_properties().size > MAX_BATCH_MANIFEST_BYTES:
        return _rejected("batch manifest is larger than 1 MiB")
    try:
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
    return {"action": "import", "items": items, "members": [i["source"] for i in items]}


# -- prepare -------------------------------------------------------------------------------------------
def prepare_item(svc: Services, req: dict[str, Any]) -> dict[str, Any]:
    """Build (raw) or validate (package) one item and stage the result in our staging container."""
    drop_id, item = req["drop_id"], req["item"]
    route = ResolvedRoute.model_validate(req["route"])
    seq = item["seq"]
    limits = svc.limits(route.max_rows_per_package)
    src = svc.blob_at(item["source"])
    packages: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        # The temp file is never named after the blob (a blob name may be 1,024 characters long).
        with downloaded(src, _temp_suffix(item["source"]), item.get("etag")) as path:
            if item["kind"] == "raw":
                entity = svc.catalogue.get(item["entity"]) if item.get("entity") else None
                if entity is None:
                    entity = EntityInfo(
                        label=item["entity"] or "Unknown", target_entity=item["entity"] or "Unknown"
                    )
                with contextlib.ExitStack() as stack:
                    out = stack.enter_context(tempfile.TemporaryDirectory())
                    # Pre-flight against the environment's metadata; an XLSX drop may become CSV-Unicode here.
                    pf = stack.enter_context(
                        preflight_step.check_raw(
                            svc,
                            route,
                            path,
                            item.get("name") or PurePosixPath(item["source"]).name,
                            entity.label,
                            _source_format(item, route),
                            limits,
                        )
                    )
                    if pf.errors:
                        return {"ok": False, "seq": seq, "problems": pf.errors, "packages": []}
                    warnings += pf.warnings
                    f = stack.enter_context((pf.path or path).open("rb"))
                    # A route's template package (a blob, "<container>/<name>") supplies mapping and format.
                    template = (
                        stack.enter_context(downloaded(svc.blob_at(route.template_package), ".zip"))
                        if route.template_package
                        else None
                    )
                    built = build_packages_from_raw(
                        f,
                        file_name=pf.file_name or item.get("name") or PurePosixPath(item["source"]).name,
                        entity=entity,
                        source_format=pf.source_format or _source_format(item, route),
                        data_project=route.data_project or "",
                        limits=limits,
                        out_dir=Path(out),
                        template=template,
                        template_name=route.template_package,
                    )
                    problems = [str(p) for p in built.problems if _is_error(p)]
                    if problems:
                        return {"ok": False, "seq": seq, "problems": problems, "packages": []}
                    for k, bp in enumerate(built.packages, start=1):
                        # Built here from checked input: the zip bomb checks are for input from outside.
                        report, rejection = _validate(svc, bp.path, route, limits, seq, outside=False)
                        if rejection:
                            return rejection
                        staged = f"{svc.settings.staging_container}/{drop_id}/{seq:03d}-{k:02d}.zip"
                        upload_file(bp.path, svc.blob_at(staged), {"source": _ascii(item["source"])})
                        packages.append(_staged(staged, report, bp.rows))
            else:
                report, rejection = _validate(svc, path, route, limits, seq)
                if rejection:
                    return rejection
                pf = preflight_step.check_package(svc, route, path, report, limits)
                if pf.errors:
                    return {"ok": False, "seq": seq, "problems": pf.errors, "packages": []}
                warnings += pf.warnings
                staged = f"{svc.settings.staging_container}/{drop_id}/{seq:03d}-01.zip"
                if item["source"].startswith(f"{svc.settings.staging_container}/"):
                    staged = item["source"]  # batch members were staged when the batch was unpacked
                else:
                    # Stage the very bytes just validated (not a copy of whatever the blob holds now).
                    upload_file(path, svc.blob_at(staged), {"source": _ascii(item["source"])})
                packages.append(_staged(staged, report, None))
    except ResourceNotFoundError:
        return {"ok": False, "seq": seq, "problems": [f"{item['source']} no longer exists"], "packages": []}
    except ResourceModifiedError:
        problem = f"{item['source']} was replaced by a newer upload while being prepared; that version is its own drop"
        return {"ok": False, "seq": seq, "problems": [problem], "packages": []}
    preflight_step.record_warnings(svc, req.get("day"), drop_id, seq, item["source"], warnings)
    return {"ok": True, "seq": seq, "problems": [], "packages": packages, "warnings": warnings}


def _source_format(item: dict[str, Any], route: ResolvedRoute) -> str:
    suffix = PurePosixPath(item["source"].lower()).suffix
    return item.get("source_format") or route.source_format or RAW_EXTENSIONS.get(suffix, "CSV-Unicode")


def _temp_suffix(source: str) -> str:
    """A known extension for a temp file holding ``source`` (openpyxl and zip readers like one)."""
    suffix = PurePosixPath(source.lower()).suffix
    return suffix if suffix in RAW_EXTENSIONS or suffix == ".zip" else ""


def _validate(
    svc: Services, path: Path, route: ResolvedRoute, limits: Any, seq: int, *, outside: bool = True
) -> tuple[Any, dict[str, Any] | None]:
    """The package's validation report, and a rejection result when it has errors."""
    report = inspect_package(
        path,
        limits=limits,
        catalogue=svc.catalogue,
        overwrite=route.overwrite,
        data_project=route.data_project,
        outside=outside,
    )
    if report.ok:
        return report, None
    problems = [str(p) for p in report.problems if _is_error(p)]
    return report, {"ok": False, "seq": seq, "problems": problems, "packages": []}


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
    return "Failed"


def finalize_drop(svc: Services, req: dict[str, Any]) -> dict[str, Any]:
    """Record the drop's summary and move its blob(s) to processed / failed / rejected (never lose one)."""
    drop_id, day, source = req["instance_id"], req["day"], req["source"]
    action = req.get("action")
    results: list[dict[str, Any]] = req.get("results", [])
    rejected: list[dict[str, Any]] = req.get("rejected", [])
    s = svc.settings
    if action == "duplicate":
        status = "Duplicate"
    elif action == "reject":
        status = "Rejected"
    else:
        status = drop_status(results, rejected)
    reason = req.get("reason") or "; ".join(f"item {r['seq']}: " + "; ".join(r["problems"]) for r in rejected)
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
        "DuplicateOf": req.get("duplicate_of"),
    }
    started = svc.outcomes.get(day, drop_id) or {}
    if started.get("StartedAt"):
        summary["DurationSeconds"] = round((finished - started["StartedAt"]).total_seconds(), 3)
    # The outcome row is written before the source blob is touched.
    svc.outcomes.upsert(day, drop_id, summary)
    _move(
        svc, source, archived, reason if status not in OK_STATUSES else None, drop_id, status, req.get("etag")
    )
    for member in req.get("members", []):
        if member != source:
            dest = _free_destination(svc, f"{target}/{member.partition('/')[2]}", drop_id)
            _move(svc, member, dest, None, drop_id, status)
    unsettled = any(r.get("status") in UNSETTLED for r in results)
    if status in {"Rejected", "Failed"} and req.get("sha256") and action != "duplicate" and not unsettled:
        svc.ledger.release_content(req["sha256"], drop_id)
    return {"status": status, "archived": archived}


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


_TEMP_PATH = re.compile(
    "(?:" + "|".join(re.escape(d) for d in {tempfile.gettempdir(), "/tmp"}) + r")[/\\][^\s'\"]*"  # noqa: S108
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
