"""Offline commands: ``check`` (the pipeline's own validation of a local file) and ``build`` (a DMF
package from a raw file with the pipeline's own builder). Both go through ``dmf.pipeline.drops.prepare_file``,
the function the inbound ``prepare_item`` activity runs, with the limits and entity catalogue the app's
settings give (``PACKAGE_MAX_ROWS``, ``ROUTES_JSON``/``ROUTES_FILE`` …, read from the environment).

No storage and no F&O are needed: a route's environment only supplies its default legal entity
(``FNO_<ENV>_LEGAL_ENTITY``, else USMF).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from dmf.cli.output import Progress, emit_json, table
from dmf.package.batch import extract_batch_zip
from dmf.package.problems import Code, Problem
from dmf.pipeline.drops import Prepared, is_batch_zip, item_source_format, prepare_file
from dmf.pipeline.services import Services
from dmf.routing import (
    RAW_EXTENSIONS,
    ResolvedRoute,
    RoutingError,
    entity_from_file_name,
    kind_of,
    resolve,
    resolve_named,
)
from dmf.settings import FnoEnvironment, Settings, SettingsError, load_settings

OK, FAILED, USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    common.add_argument(
        "--progress", action="store_true", help="show progress on stderr even when it is not a terminal"
    )

    p = sub.add_parser(
        "check",
        parents=[common],
        help="offline: validate a local file exactly as a drop is (exit 1 when it has errors)",
        description="Run the pipeline's own build-and-validate step (the inbound prepare_item activity's) on a "
        "local package (.zip, also a batch zip) or raw file (.csv, .txt, .xml, .xlsx). Lists every problem "
        "with its row. Routing: --route NAME (a route of ROUTES_JSON/ROUTES_FILE), or --as PATH (the blob "
        "path it would be dropped under, routed like a drop), or --entity/--legal-entity/--project.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--route", help="a route's name from the routing table")
    p.add_argument("--as", dest="as_path", metavar="PATH",
                   help="the blob path inside the inbound container (routes like a drop; default: the file name)")  # fmt: skip
    _entity_args(p)
    p.set_defaults(cli_handler=check)

    p = sub.add_parser(
        "build",
        parents=[common],
        help="offline: build a DMF package from a raw file with the pipeline's builder",
        description="Wrap a raw data file (CSV/TXT/XML/XLSX) into a DMF data package (Manifest.xml, "
        "PackageHeader.xml) with the pipeline's own builder and validate it as a drop would be. Over "
        "PACKAGE_MAX_ROWS rows, parts are written beside -o as NAME-part001.zip ….",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    _entity_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PKG.zip")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(cli_handler=build)


def _entity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--entity", help='the DMF entity label, e.g. "Customer groups" (raw files)')
    p.add_argument(
        "--legal-entity", help="the legal entity it is imported into (reported; not in the package)"
    )
    p.add_argument("--project", help="the DMF data project (its name goes into the manifest)")
    p.add_argument(
        "--format", dest="source_format", help="DMF source format (default by extension: CSV-Unicode …)"
    )
    p.add_argument("--template", type=Path, help="a template package (mapping and format), as a route's")  # fmt: skip


# -- settings and routing -----------------------------------------------------------------------------------
def offline_settings() -> Settings:
    """The app's settings from the environment, without what offline work does not need (storage, F&O)."""
    try:
        return load_settings()
    except SettingsError:
        pass
    env = {k.lower(): v for k, v in os.environ.items() if v}
    init = {}
    for name, f in Settings.model_fields.items():
        alias = getattr(f.validation_alias, "choices", [name.upper()])[0]
        if name != "environments" and str(alias).lower() in env:
            init[str(alias)] = env[str(alias).lower()]
    settings = Settings.model_validate(init)
    for n in [x.strip().lower() for x in settings.fno_environments.split(",") if x.strip()] or ["main"]:
        le = env.get(f"fno_{n}_legal_entity", "USMF")
        settings.environments[n] = FnoEnvironment(name=n, base_url="https://offline.invalid", legal_entity=le)
    return settings


def _route(args: argparse.Namespace, settings: Settings) -> ResolvedRoute:
    name = args.file.name
    path = getattr(args, "as_path", None) or name
    if getattr(args, "route", None):
        route = resolve_named(args.route, path, settings)
    elif getattr(args, "as_path", None):
        route = resolve(path, settings)
    else:
        kind = kind_of(name)
        env = settings.environment(None)
        route = ResolvedRoute(
            route="command line",
            environment=env.name,
            mode="package",
            kind=kind,
            data_project=args.project or "",
            legal_entity=(args.legal_entity or env.legal_entity).upper(),
            entity=args.entity or (entity_from_file_name(name) if kind == "raw" else None),
            source_format=args.source_format or RAW_EXTENSIONS.get(PurePosixPath(name.lower()).suffix),
            execute=True,
            overwrite=True,
            allow_duplicate_content=False,
        )
    # Explicit options win over what the route says.
    changes: dict[str, Any] = {}
    if args.entity:
        changes["entity"] = args.entity
    if args.legal_entity:
        changes["legal_entity"] = args.legal_entity.upper()
    if args.project:
        changes["data_project"] = args.project
    if args.source_format:
        changes["source_format"] = args.source_format
    return route.model_copy(update=changes)


def _problem(p: Problem, file: str) -> dict[str, Any]:
    return {
        "severity": str(p.severity),
        "code": str(p.code),
        "row": p.row,
        "entity": p.entity,
        "file": p.file or file,
        "message": p.message,
    }


# -- the work ---------------------------------------------------------------------------------------------
def _prepare(
    args: argparse.Namespace, route: ResolvedRoute, svc: Services, out: Path, progress: Progress
) -> list[tuple[str, Prepared]]:
    """(name, result) for the file, or for each item of a batch zip, through the pipeline's prepare_file."""
    path: Path = args.file
    limits = svc.limits(route.max_rows_per_package)
    kind = "raw" if route.kind == "raw" else "package"
    template = args.template or None
    if route.template_package and template is None and kind == "raw":
        sys.stderr.write(
            f"note: route {route.route} uses the template {route.template_package} (a blob); pass --template "
            "FILE to check with it\n"
        )
    if kind == "package" and is_batch_zip(path, limits):
        progress.stage(f"unpacking batch {path.name}")
        batch = extract_batch_zip(path, out / "batch", limits, name=path.name)
        if any(str(p.severity) == "error" for p in batch.problems) or not batch.entries:
            problems = list(batch.problems) or [Problem(Code.EMPTY_PACKAGE, "batch zip holds no packages")]
            return [(path.name, Prepared(problems))]
        results = []
        for i, e in enumerate(batch.entries, start=1):
            progress.stage(f"item {i}/{len(batch.entries)} {e.name}")
            results.append(
                (
                    e.name,
                    prepare_file(
                        e.path,
                        kind=e.kind,
                        file_name=e.name,
                        route=route,
                        limits=limits,
                        catalogue=svc.catalogue,
                        out_dir=out / f"{i:04d}",
                        entity=e.entity,  # as the pipeline: a batch item names its own entity
                        source_format=item_source_format(
                            {"source": e.name, "source_format": e.source_format}, route
                        ),
                        template=template,
                    ),
                )
            )
        return results
    progress.stage(
        ("building and checking " if kind == "raw" else "checking ") + path.name, counting=kind == "raw"
    )
    prepared = prepare_file(
        path,
        kind=kind,
        file_name=path.name,
        route=route,
        limits=limits,
        catalogue=svc.catalogue,
        out_dir=out,
        entity=route.entity,
        source_format=item_source_format({"source": path.name}, route),
        template=template,
        template_name=str(template) if template else None,
        wrap=progress.reader,
        step=progress.stage,
    )
    return [(path.name, prepared)]


def _setup(args: argparse.Namespace) -> tuple[ResolvedRoute, Services] | int:
    if not args.file.is_file():
        sys.stderr.write(f"error: {args.file} is not a file\n")
        return USAGE
    try:
        settings = offline_settings()
        route = _route(args, settings)
    except (RoutingError, SettingsError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return USAGE
    if route.kind in ("batch", "unknown"):
        what = "a batch manifest: check its member files" if route.kind == "batch" else "not a known type"
        sys.stderr.write(f"error: {args.file.name} is {what} (.zip, .csv, .txt, .xml, .xlsx)\n")
        return USAGE
    return route, Services(settings)


def _progress(args: argparse.Namespace) -> Progress:
    enabled = bool(args.progress or (sys.stderr.isatty() and not args.json))
    return Progress(args.file.name, args.file.stat().st_size, enabled)


def check(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if isinstance(setup, int):
        return setup
    route, svc = setup
    progress = _progress(args)
    with tempfile.TemporaryDirectory(prefix="dmf-check-") as tmp:
        try:
            results = _prepare(args, route, svc, Path(tmp), progress)
        finally:
            progress.close()
        ok = all(r.ok for _, r in results)
        body = {
            "file": str(args.file),
            "ok": ok,
            "route": route.model_dump(exclude_none=True),
            "items": [
                {
                    "name": name,
                    "ok": r.ok,
                    "packages": [
                        {
                            "rows": pp.rows if pp.rows is not None else sum(pp.report.row_counts.values()),
                            "entities": [e.entity_name for e in pp.report.entities],
                        }
                        for pp in r.packages
                    ],
                    "problems": [_problem(p, name) for p in r.problems],
                }
                for name, r in results
            ],
        }
    if args.json:
        emit_json(body)
        return OK if ok else FAILED
    print(
        f"{'OK' if ok else 'FAILED'}: {args.file.name} (route {route.route}; legal entity {route.legal_entity}"
        + (f"; data project {route.data_project}" if route.data_project else "")
        + (f"; entity {route.entity}" if route.entity else "")
        + ")"
    )
    for item in body["items"]:
        if len(body["items"]) > 1:
            print(f"\n{item['name']}: {'ok' if item['ok'] else 'FAILED'}")
        for n, pkg in enumerate(item["packages"], start=1):
            print(f"  package {n}: {pkg['rows']} rows, {', '.join(pkg['entities']) or 'no entity'}")
        if item["problems"]:
            table(
                item["problems"],
                [("severity", "SEVERITY"), ("code", "CODE"), ("row", "ROW"), ("entity", "ENTITY"),
                 ("message", "PROBLEM")],
                max_width=120,
            )  # fmt: skip
    return OK if ok else FAILED


def build(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        sys.stderr.write(f"error: {args.file} is not a file\n")
        return USAGE
    if kind_of(args.file.name) != "raw":
        sys.stderr.write(f"error: {args.file.name}: build takes a raw data file (.csv, .txt, .xml, .xlsx)\n")
        return USAGE
    if not args.entity:
        sys.stderr.write('error: build needs --entity "<DMF entity label>"\n')
        return USAGE
    setup = _setup(args)
    if isinstance(setup, int):
        return setup
    route, svc = setup
    progress = _progress(args)
    out: Path = args.output
    with tempfile.TemporaryDirectory(prefix="dmf-build-") as tmp:
        try:
            ((_, prepared),) = _prepare(args, route, svc, Path(tmp), progress)
        finally:
            progress.close()
        problems = [_problem(p, args.file.name) for p in prepared.problems]
        written: list[dict[str, Any]] = []
        if prepared.ok:
            many = len(prepared.packages) > 1
            targets = [
                out.with_name(f"{out.stem}-part{k:03d}{out.suffix or '.zip'}") if many else out
                for k in range(1, len(prepared.packages) + 1)
            ]
            existing = [t for t in targets if t.exists()]
            if existing and not args.force:
                sys.stderr.write(f"error: {existing[0]} exists (--force to overwrite)\n")
                return USAGE
            out.parent.mkdir(parents=True, exist_ok=True)
            for pp, target in zip(prepared.packages, targets, strict=True):
                shutil.copyfile(pp.path, target)
                written.append({"path": str(target), "rows": pp.rows, "bytes": target.stat().st_size})
    body = {"file": str(args.file), "ok": prepared.ok, "entity": route.entity, "packages": written,
            "problems": problems}  # fmt: skip
    if args.json:
        emit_json(body)
    else:
        if prepared.ok:
            for w in written:
                print(f"wrote {w['path']}: {w['rows']} rows, {w['bytes']} bytes ({route.entity})")
        else:
            print(f"FAILED: {args.file.name}: no package written")
        if problems:
            table(problems, [("severity", "SEVERITY"), ("code", "CODE"), ("row", "ROW"), ("message", "PROBLEM")],
                  max_width=120)  # fmt: skip
    return OK if prepared.ok else FAILED
