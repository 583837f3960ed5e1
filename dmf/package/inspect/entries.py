"""The manifest's entities against the zip and the route's catalogue: each entity's data file, mapping,
source format and composite rules, and the files no entity names."""

from __future__ import annotations

import zipfile
from typing import NamedTuple

from dmf.package.catalogue import Catalogue, EntityInfo
from dmf.package.formats import FormatRules, UnknownFormatError, format_rules
from dmf.package.inspect.report import HEADER, MANIFEST
from dmf.package.manifest import EntityData, Manifest
from dmf.package.problems import Code, Problem, Severity


class DataFile(NamedTuple):
    """One entity's data file whose content is to be checked."""

    ent: EntityData
    data: zipfile.ZipInfo
    rules: FormatRules
    info: EntityInfo | None


def entity_checks(
    man: Manifest,
    root: dict[str, zipfile.ZipInfo],
    catalogue: Catalogue | None,
    overwrite: bool,
    p: list[Problem],
) -> list[DataFile] | None:
    """Check the manifest's entities; the data files to check next (None: the manifest lists none)."""
    if "'" in man.definition_group_name:
        p.append(
            Problem(
                Code.APOSTROPHE_IN_PROJECT,
                f"DefinitionGroupName {man.definition_group_name!r} contains "
                "an apostrophe, which DMF import rejects",
                file=MANIFEST,
            )
        )
    if not man.entities:
        p.append(Problem(Code.EMPTY_PACKAGE, "the manifest lists no entities", file=MANIFEST))
        return None
    referenced = {MANIFEST.casefold(), HEADER.casefold()}
    checks: list[DataFile] = []
    for ent in man.entities:
        info = _catalogue_entry(ent, catalogue, p)
        if info is not None and info.composite:
            _composite_problems(ent.entity_name, len(man.entities), overwrite, p)
        if not ent.entity_map_list:
            p.append(
                Problem(
                    Code.NO_ENTITY_MAP,
                    f"entity {ent.entity_name!r} has no EntityMapList; F&O would import 0 rows",
                    file=MANIFEST,
                    entity=ent.entity_name,
                )
            )
        data = _data_entry(ent, root, p)
        if data is not None:
            referenced.add(data.filename.casefold())
        rules = _rules(ent, p)
        if rules is not None and data is not None and data.file_size > 0:
            checks.append(DataFile(ent, data, rules, info))
    _unreferenced(root, referenced, p)
    return checks


def _catalogue_entry(ent: EntityData, catalogue: Catalogue | None, p: list[Problem]) -> EntityInfo | None:
    if catalogue is None:
        return None
    info = catalogue.get(ent.entity_name)
    if info is None and ent.target_entity:
        info = catalogue.get(ent.target_entity)
    if info is None:
        p.append(
            Problem(
                Code.UNKNOWN_ENTITY,
                f"entity {ent.entity_name!r} is not in the route's catalogue",
                Severity.WARNING,
                entity=ent.entity_name,
            )
        )
    return info


def _composite_problems(label: str, entities: int, overwrite: bool, p: list[Problem]) -> None:
    if entities > 1:
        p.append(
            Problem(
                Code.COMPOSITE_NOT_ALONE,
                f"composite entity {label!r} must be the only entity in its package (this one has {entities})",
                entity=label,
            )
        )
    if overwrite:
        p.append(
            Problem(
                Code.COMPOSITE_OVERWRITE,
                f"composite entity {label!r} must be imported with overwrite off",
                entity=label,
            )
        )


def _data_entry(
    ent: EntityData, root: dict[str, zipfile.ZipInfo], p: list[Problem]
) -> zipfile.ZipInfo | None:
    data = root.get(ent.input_file_path.casefold()) if ent.input_file_path else None
    if data is None:
        p.append(
            Problem(
                Code.INPUT_FILE_MISSING,
                f"entity {ent.entity_name!r} names InputFilePath "
                f"{ent.input_file_path!r}, which is not at the zip root",
                file=ent.input_file_path or None,
                entity=ent.entity_name,
            )
        )
    return data


def _rules(ent: EntityData, p: list[Problem]) -> FormatRules | None:
    try:
        return format_rules(ent.source_format)
    except UnknownFormatError:
        p.append(
            Problem(
                Code.UNKNOWN_SOURCE_FORMAT,
                f"entity {ent.entity_name!r} uses source format "
                f"{ent.source_format!r}; its file content is not checked",
                Severity.WARNING,
                entity=ent.entity_name,
            )
        )
        return None


def _unreferenced(root: dict[str, zipfile.ZipInfo], referenced: set[str], p: list[Problem]) -> None:
    for key, i in root.items():
        if key not in referenced:
            p.append(
                Problem(
                    Code.UNREFERENCED_FILE,
                    f"{i.filename!r} is not named by any entity in the manifest",
                    Severity.WARNING,
                    file=i.filename,
                )
            )
