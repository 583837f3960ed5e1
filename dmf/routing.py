"""Routing: which F&O environment, data project, legal entity and mode a dropped blob goes to.

Routes come from a versioned JSON file (``ROUTES_FILE``, default ``routes.json`` at the app root) or, when
set, the ``ROUTES_JSON`` app setting (which wins, so operators can change routing without a deployment).
The first route whose ``pattern`` matches the blob path (inside the inbound container) applies.

With no matching route, a convention applies: ``<legal entity>/<data project>/<file>``. A raw data file's
entity label is its file name up to ``__`` or the extension: ``USMF/CustGroups-Import/Customer groups.csv``
or ``USMF/CustGroups-Import/Customer groups__2026-11-25.csv``.

Patterns are globs on the blob path: ``*`` matches within one path segment, ``**`` across segments,
``?`` one character; matching is case-insensitive.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

if TYPE_CHECKING:  # dmf.settings holds ROUTES_JSON as a RoutesFile, so it imports this module
    from dmf.settings import Settings

APP_ROOT = Path(__file__).resolve().parents[1]

RAW_EXTENSIONS = {".csv": "CSV-Unicode", ".txt": "CSV-Unicode", ".xml": "XML-Element", ".xlsx": "EXCEL"}
PACKAGE_EXTENSIONS = {".zip"}
BATCH_SUFFIX = ".batch.json"
IGNORED_SUFFIXES = (".reason.txt",)


class RoutingError(ValueError):
    """The blob matches no usable route; the message says what to change."""


class Route(BaseModel):
    name: str
    pattern: str
    environment: str | None = None
    mode: Literal["package", "enqueue"] = "package"
    data_project: str | None = None
    data_project_segment: int | None = None
    legal_entity: str | None = None
    legal_entity_segment: int | None = None
    legal_entity_token: str | None = Field(
        default=None, description="regex applied to the file name; the group named 'le' is the legal entity"
    )
    entity: str | None = None
    source_format: str | None = None
    execute: bool = True
    overwrite: bool = True
    allow_duplicate_content: bool = False
    # A template data package for raw files, as a blob path "<container>/<name>" in the data storage:
    # its Manifest.xml (mapping, source format) is reused for the generated packages.
    template_package: str | None = None
    activity_id: str | None = None
    max_rows_per_package: int | None = None
    # Pre-flight against the environment's metadata (docs/INBOUND.md "Pre-flight"); None: PREFLIGHT_DEFAULT.
    preflight: Literal["off", "warn", "enforce"] | None = None
    # XLSX drops: "csv" converts them to CSV-Unicode packages (default in a version 2 routes file), "excel"
    # keeps the workbook (default in version 1 files, as before).
    xlsx_as: Literal["csv", "excel"] | None = None
    xlsx_formulas: Literal["value", "reject"] = "value"
    date_format: str = "iso"  # strptime format of Date fields in the file, or "iso"
    datetime_format: str = "iso"

    @model_validator(mode="after")
    def _check(self) -> Route:
        if self.mode == "enqueue" and not self.activity_id:
            raise ValueError(f"route {self.name!r}: enqueue mode needs activity_id")
        if self.mode == "package" and not (self.data_project or self.data_project_segment is not None):
            raise ValueError(f"route {self.name!r}: package mode needs data_project or data_project_segment")
        if self.legal_entity_token:
            re.compile(self.legal_entity_token)
        return self


class RoutesFile(BaseModel):
    version: int = 1
    routes: list[Route] = Field(default_factory=list)
    # Extra entities for the catalogue (label, target_entity, key_fields, composite, fields): lets
    # validation check keys and composite rules for entities the built-in catalogue does not know.
    entities: list[dict] = Field(default_factory=list)


class ResolvedRoute(BaseModel):
    """Everything the pipeline needs to handle one blob; small and JSON-friendly for orchestration input."""

    route: str
    environment: str
    mode: Literal["package", "enqueue"]
    kind: Literal["package", "raw", "batch", "unknown"]
    data_project: str | None
    legal_entity: str
    entity: str | None
    source_format: str | None
    execute: bool
    overwrite: bool
    allow_duplicate_content: bool
    template_package: str | None = None
    activity_id: str | None = None
    max_rows_per_package: int | None = None
    preflight: str | None = None  # None: PREFLIGHT_DEFAULT
    xlsx_as: str = "excel"
    xlsx_formulas: str = "value"
    date_format: str = "iso"
    datetime_format: str = "iso"


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                out[-1] = "(?:.*/)?"
                i += 1
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c)))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE)


def kind_of(path: str) -> Literal["package", "raw", "batch", "unknown"]:
    lower = path.lower()
    if lower.endswith(BATCH_SUFFIX):
        return "batch"
    suffix = PurePosixPath(lower).suffix
    if suffix in PACKAGE_EXTENSIONS:
        return "package"
    if suffix in RAW_EXTENSIONS:
        return "raw"
    return "unknown"


def entity_from_file_name(name: str) -> str:
    stem = PurePosixPath(name).name
    stem = stem.split("__", 1)[0] if "__" in stem else PurePosixPath(stem).stem
    return stem.strip()


@lru_cache(maxsize=8)
def _parse_routes(text: str) -> RoutesFile:
    return RoutesFile.model_validate(json.loads(text))


def load_routes(settings: Settings) -> RoutesFile:
    """The routing table; an invalid table raises RoutingError naming the problem."""
    try:
        if settings.routes is not None:  # ROUTES_JSON, parsed and validated with the other settings
            return settings.routes
        path = Path(settings.routes_file)
        if not path.is_absolute():
            path = APP_ROOT / path
        if not path.exists():
            return RoutesFile()
        return _parse_routes(path.read_text(encoding="utf-8"))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise RoutingError(f"routing table is invalid: {exc}") from exc


def resolve(path: str, settings: Settings, routes: RoutesFile | None = None) -> ResolvedRoute:
    """Route for a blob path inside the inbound container."""
    routes = routes or load_routes(settings)
    parts = [p for p in path.split("/") if p]
    name = parts[-1] if parts else path
    kind = kind_of(path)
    for r in routes.routes:
        if _glob_to_regex(r.pattern).match(path):
            return _apply(r, path, settings, routes.version)
    if len(parts) < 3:
        raise RoutingError(
            f"{path!r} matches no route and does not follow the convention "
            "<legal entity>/<data project>/<file> (e.g. USMF/CustomerGroups-Import/Customer groups.csv)"
        )
    env = settings.environment(None)
    return ResolvedRoute(
        route="convention",
        environment=env.name,
        mode="package",
        kind=kind,
        data_project=parts[-2],
        legal_entity=parts[0].upper(),
        entity=entity_from_file_name(name) if kind == "raw" else None,
        source_format=RAW_EXTENSIONS.get(PurePosixPath(name.lower()).suffix),
        execute=True,
        overwrite=True,
        allow_duplicate_content=False,
        xlsx_as="csv" if routes.version >= 2 else "excel",
    )


def resolve_named(
    route_name: str, path: str, settings: Settings, routes: RoutesFile | None = None
) -> ResolvedRoute:
    """The named route applied to ``path`` whether or not its pattern matches (the CLI's ``check --route``)."""
    routes = routes or load_routes(settings)
    for r in routes.routes:
        if r.name.casefold() == route_name.casefold():
            return _apply(r, path, settings, routes.version)
    raise RoutingError(f"no route named {route_name!r}; the table has {[r.name for r in routes.routes]}")


def _apply(r: Route, path: str, settings: Settings, version: int) -> ResolvedRoute:
    parts = [p for p in path.split("/") if p]
    name = parts[-1] if parts else path
    kind = kind_of(path)
    le = r.legal_entity
    if r.legal_entity_segment is not None:
        le = _segment(parts, r.legal_entity_segment, r.name, "legal_entity_segment")
    if r.legal_entity_token:
        m = re.search(r.legal_entity_token, name)
        if not m or "le" not in m.groupdict():
            raise RoutingError(
                f"route {r.name!r}: file name {name!r} has no legal entity token matching {r.legal_entity_token!r}"
            )
        le = m.group("le")
    project = r.data_project
    if r.data_project_segment is not None:
        project = _segment(parts, r.data_project_segment, r.name, "data_project_segment")
    env = settings.environment(r.environment)
    entity = r.entity or (entity_from_file_name(name) if kind == "raw" else None)
    return ResolvedRoute(
        route=r.name,
        environment=env.name,
        mode=r.mode,
        kind=kind,
        data_project=project,
        legal_entity=(le or env.legal_entity).upper(),
        entity=entity,
        source_format=r.source_format or RAW_EXTENSIONS.get(PurePosixPath(name.lower()).suffix),
        execute=r.execute,
        overwrite=r.overwrite,
        allow_duplicate_content=r.allow_duplicate_content,
        template_package=r.template_package,
        activity_id=r.activity_id,
        max_rows_per_package=r.max_rows_per_package,
        preflight=r.preflight,
        xlsx_as=r.xlsx_as or ("csv" if version >= 2 else "excel"),
        xlsx_formulas=r.xlsx_formulas,
        date_format=r.date_format,
        datetime_format=r.datetime_format,
    )


def _segment(parts: list[str], index: int, route: str, what: str) -> str:
    try:
        return parts[index]
    except IndexError:
        raise RoutingError(
            f"route {route!r}: {what}={index} but the path has {len(parts)} segments"
        ) from None
