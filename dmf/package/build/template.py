"""A route's template package: its Manifest/PackageHeader are reused for every part, mapping included."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

from dmf.package.catalogue import EntityInfo
from dmf.package.formats import FormatRules, UnknownFormatError, format_rules
from dmf.package.manifest import (
    EntityData,
    Manifest,
    ManifestError,
    PackageHeader,
    parse_manifest,
    parse_package_header,
)


class TemplateError(ValueError):
    """The template cannot be used; the message says why (never with the template's temp path)."""


class Template(NamedTuple):
    manifest: Manifest
    header: PackageHeader
    entity: EntityData
    rules: FormatRules  # the template's source format wins over the route's
    warning: str | None  # set when the two differ


def open_template(path: Path, name: str | None, entity: EntityInfo, rules: FormatRules) -> Template:
    """Read the template at ``path`` (``name`` names it in messages) for ``entity``."""
    try:
        man, hdr, ent = _load_template(path, entity)
    except (ManifestError, zipfile.BadZipFile, KeyError, OSError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else e  # never the (temp) path
        raise TemplateError(f"template {name or path.name}: {why}") from None
    if ent.source_format.casefold() == rules.name.casefold():
        return Template(man, hdr, ent, rules, None)
    try:
        template_rules = format_rules(ent.source_format)
    except UnknownFormatError as e:
        raise TemplateError(str(e)) from None
    warning = f"template uses source format {ent.source_format}, not {rules.name}; following the template"
    return Template(man, hdr, ent, template_rules, warning)


def _load_template(path: Path, entity: EntityInfo) -> tuple[Manifest, PackageHeader, EntityData]:
    with zipfile.ZipFile(path) as zf:
        names = {n.casefold(): n for n in zf.namelist()}
        man = parse_manifest(zf.read(names["manifest.xml"]))
        hdr = parse_package_header(zf.read(names["packageheader.xml"]))
    wanted = {entity.label.casefold(), entity.target_entity.casefold()}
    match = [
        e
        for e in man.entities
        if e.entity_name.casefold() in wanted or (e.target_entity or "").casefold() in wanted
    ]
    if len(match) != 1:
        if len(man.entities) == 1:
            match = man.entities
        else:
            raise ManifestError(f"no single entity {entity.label!r} among {len(man.entities)} entities")
    if not match[0].entity_map_list:
        raise ManifestError(f"entity {match[0].entity_name!r} has no EntityMapList")
    return man, hdr, match[0]
