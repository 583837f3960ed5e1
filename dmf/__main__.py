"""Command line: ``python -m dmf <command> …``.

- ``validate <file> [--route NAME] [--entity LABEL] [--snapshot snap.json]``: the pipeline's pre-flight of a
  raw file (CSV/TXT/XLSX) or a package (.zip), offline against a saved snapshot. Exit 0 when it would pass,
  1 when it has errors (listed by row and column), 2 on a usage problem.
- ``metadata-snapshot --environment NAME -o snap.json [--entity LABEL …]``: fetch a snapshot from F&O (the
  app's settings from the environment: ``FNO_<NAME>_…``) for the routes' entities and any named here.

The operators' commands of ``dmf.cli`` (``status``, ``show``, ``retry``, ``cancel``, ``pause``, ``resume``,
``drain-now``, ``export-now``, ``check``, ``build``) are registered here too. New commands: add a
``_cmd_<name>`` function and a subparser in ``_parser``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import zipfile
from pathlib import Path

from dmf.fno.metadata import MetadataError, Snapshot
from dmf.package.formats import FileKind, format_rules
from dmf.package.limits import Limits
from dmf.package.preflight import (
    PreflightOptions,
    PreflightResult,
    package_data_files,
    preflight_member,
    preflight_raw,
)
from dmf.package.problems import Severity
from dmf.routing import RAW_EXTENSIONS, Route, RoutesFile, entity_from_file_name

APP_ROOT = Path(__file__).resolve().parents[1]


def _routes(path: str | None) -> RoutesFile:
    text = os.environ.get("ROUTES_JSON") if path is None else None
    if text is None:
        p = Path(path) if path else APP_ROOT / "routes.json"
        text = p.read_text(encoding="utf-8") if p.exists() else '{"routes": []}'
    return RoutesFile.model_validate(json.loads(text))


def _route(routes: RoutesFile, name: str | None) -> Route | None:
    if name is None:
        return None
    for r in routes.routes:
        if r.name == name:
            return r
    raise SystemExit(f"error: no route named {name!r} (routes: {', '.join(r.name for r in routes.routes)})")


def _print(result: PreflightResult, out) -> int:
    errors = 0
    for p in result.problems:
        errors += p.severity is Severity.ERROR
        print(f"{p.severity.value.upper():7} {p.code}: {p.message}", file=out)
    if result.total > len(result.problems):
        print(f"… {result.total - len(result.problems)} more ({result.summary()})", file=out)
    return errors


def _cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    try:
        snap = Snapshot.loads(Path(args.snapshot).read_bytes())
    except (OSError, ValueError, MetadataError, KeyError) as exc:
        print(f"error: snapshot {args.snapshot}: {exc}", file=sys.stderr)
        return 2
    routes = _routes(args.routes)
    route = _route(routes, args.route)
    opts = PreflightOptions(
        mode="enforce",
        date_format=route.date_format if route else "iso",
        datetime_format=route.datetime_format if route else "iso",
        xlsx_formulas=(args.xlsx_formulas or (route.xlsx_formulas if route else "value")),
        max_listed=args.max_problems,
    )
    limits = Limits()
    results: list[PreflightResult] = []
    name = path.name
    if path.suffix.lower() == ".zip":
        from dmf.package.manifest import parse_manifest

        with zipfile.ZipFile(path) as z:
            names = {n.casefold(): n for n in z.namelist()}
            if "manifest.xml" not in names:
                print(f"error: {name} has no Manifest.xml", file=sys.stderr)
                return 1
            manifest = parse_manifest(z.read(names["manifest.xml"]))
            for ent, member, rules in package_data_files(z, manifest.entities):
                if member is None:
                    print(f"SKIPPED {ent.entity_name}: {ent.input_file_path} (XML or missing) is not checked")
                    continue
                results.append(
                    preflight_member(
                        z,
                        member,
                        ent,
                        rules,
                        snapshot=snap,
                        opts=opts,
                        max_record_chars=limits.max_record_chars,
                    )
                )
    else:
        label = args.entity or (route.entity if route and route.entity else entity_from_file_name(name))
        fmt = (route.source_format if route else None) or RAW_EXTENSIONS.get(
            path.suffix.lower(), "CSV-Unicode"
        )
        rules = format_rules(fmt)
        xlsx_as = (route.xlsx_as if route else None) or ("csv" if routes.version >= 2 else "excel")
        with contextlib.ExitStack() as stack:
            # A workbook dropped as CSV is converted: run the conversion too (into nothing).
            convert = rules.kind is FileKind.EXCEL and xlsx_as == "csv"
            dest = stack.enter_context(open(os.devnull, "wb")) if convert else None
            result = preflight_raw(path, rules, snap, opts, (name, label), limits.max_record_chars, dest)
        if result is None:
            print(f"{name}: {fmt} files are checked by F&O only")
            return 0
        results.append(result)
    errors = sum(_print(r, sys.stdout) for r in results)
    rows = sum(r.rows for r in results)
    verdict = "FAILED" if errors else "OK"
    print(f"{verdict}: {name}: {rows} rows checked against {snap.environment} (snapshot {snap.fetched_at})")
    return 1 if errors else 0


def _cmd_metadata_snapshot(args: argparse.Namespace) -> int:
    from dmf.package.catalogue import EntityInfo, default_catalogue
    from dmf.pipeline.metadata import metadata_api, route_labels
    from dmf.settings import SettingsError, get_settings

    try:
        settings = get_settings()
        env = settings.environment(args.environment)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    routes = _routes(args.routes)
    catalogue = default_catalogue().extended(EntityInfo(**e) for e in routes.entities)
    labels = route_labels(settings, env.name, catalogue, routes)
    for extra in args.entity or []:
        info = catalogue.get(extra)
        labels.append((extra, info.target_entity if info else None))
    from dmf.fno.errors import FnoError
    from dmf.fno.metadata import build_snapshot

    failed: list[str] = []
    try:
        snap = build_snapshot(
            metadata_api(settings, env.name),
            env.name,
            labels,
            settings.metadata_language,
            on_error=lambda label, exc: failed.append(f"{label}: {type(exc).__name__}"),
        )
    except (FnoError, MetadataError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    Path(args.output).write_bytes(snap.dumps())
    print(
        f"{args.output}: {len(snap.entities)} entities ({', '.join(sorted(e.label for e in snap.entities.values()))}), "
        f"{len(snap.names)} entity names, unknown: {snap.unknown or 'none'}"
    )
    for f in failed:
        print(f"failed: {f}", file=sys.stderr)
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dmf", description="F&O DMF integration tools")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="pre-flight a file against a saved metadata snapshot")
    v.add_argument("file")
    v.add_argument("--snapshot", required=True, help="a snapshot saved by metadata-snapshot")
    v.add_argument("--route", help="route name in routes.json (formats, entity, XLSX handling)")
    v.add_argument("--routes", help="routes file (default: ROUTES_JSON or the app's routes.json)")
    v.add_argument("--entity", help="DMF entity label (default: the route's, else from the file name)")
    v.add_argument("--xlsx-formulas", choices=["value", "reject"])
    v.add_argument("--max-problems", type=int, default=50)
    v.set_defaults(func=_cmd_validate)
    m = sub.add_parser("metadata-snapshot", help="save an F&O environment's metadata snapshot")
    m.add_argument("--environment", default=None)
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--routes", help="routes file (default: ROUTES_JSON or the app's routes.json)")
    m.add_argument("--entity", action="append", help="also fetch this DMF entity label (repeatable)")
    m.set_defaults(func=_cmd_metadata_snapshot)
    # The operators' commands (status, show, retry, cancel, pause, resume, drain-now, export-now, check,
    # build): one command line, ``python -m dmf``; ``python -m dmf.cli`` is the same set without these two.
    from dmf.cli import register

    register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = getattr(args, "cli_handler", None) or args.func
    return int(handler(args))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["main"]
