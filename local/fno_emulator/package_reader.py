"""Read a DMF data package the way F&O does: zip root, PackageHeader.xml, Manifest.xml (DataContract,
usually UTF-16 LE with BOM), then each entity's data file by ``InputFilePath`` in its source format.

Structural problems raise ``PackageError`` (F&O answers the API call with HTTP 400); problems inside a
data file are returned per entity (the execution fails with that message).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
import openpyxl

from .config import CatalogueEntity, EmulatorConfig, SourceFormat

NS = "http://schemas.microsoft.com/dynamics/2015/01/DataManagement"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_N = "{" + NS + "}"


class PackageError(Exception):
    """The package cannot be read at all; F&O fails the ImportFromPackage call itself."""


@dataclass
class EntityMap:
    xml_field: str
    entity_field: str


@dataclass
class ManifestEntity:
    entity_name: str  # label
    input_file_path: str
    source_format: str
    execution_unit: int = 1
    level: int = 1
    sequence: int = 1
    maps: list[EntityMap] = field(default_factory=list)
    target_entity: str | None = None
    excel_sheet_name: str = ""
    has_map_list: bool = True
    fail_level_on_error: bool = False
    fail_execution_unit_on_error: bool = False
    auto_map: bool = False  # recurring "File" jobs: columns map to the entity fields of the same name

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.execution_unit, self.level, self.sequence)


@dataclass
class Manifest:
    definition_group: str
    description: str
    entities: list[ManifestEntity]


@dataclass
class PackageHeader:
    description: str
    manifest_type: str
    package_type: str
    package_version: str


@dataclass
class Record:
    """One record read from a data file: its position (RecordId) and values by entity field."""

    record_id: int
    values: dict[str, object]
    entity_label: str


def _text(el: Element | None, tag: str, default: str = "") -> str:
    if el is None:
        return default
    child = el.find(_N + tag)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def _int(el: Element, tag: str, default: int = 1) -> int:
    try:
        return int(_text(el, tag, str(default)))
    except ValueError:
        return default


def _parse_xml(data: bytes, file_name: str) -> Element:
    try:
        return SafeET.fromstring(data)
    except SafeET.ParseError as exc:
        raise PackageError(f"There is an error in XML document ({file_name}): {exc}") from exc


def _parse_root(data: bytes, file_name: str, element: str) -> Element:
    """The file's root element, which must be ``element`` in the DMF namespace (F&O's words if not)."""
    root = _parse_xml(data, file_name)
    if root.tag != _N + element:
        raise PackageError(
            f"Error in line 1 position 2. Expecting element '{element}' from namespace "
            f"'{NS}'.. Encountered 'Element' with name '{root.tag.split('}')[-1]}'."
        )
    return root


def parse_header(data: bytes) -> PackageHeader:
    root = _parse_root(data, "PackageHeader.xml", "DataManagementPackageHeader")
    return PackageHeader(
        description=_text(root, "Description"),
        manifest_type=_text(root, "ManifestType"),
        package_type=_text(root, "PackageType"),
        package_version=_text(root, "PackageVersion"),
    )


def parse_manifest(data: bytes) -> Manifest:
    root = _parse_root(data, "Manifest.xml", "DataManagementPackageManifest")
    entities: list[ManifestEntity] = []
    entity_list = root.find(_N + "PackageEntityList")
    for item in (
        entity_list.findall(_N + "DataManagementPackageEntityData") if entity_list is not None else []
    ):
        map_list = item.find(_N + "EntityMapList")
        maps = []
        if map_list is not None:
            for m in map_list.findall(_N + "EntityMap"):
                entity_field = _text(m, "EntityField")
                if entity_field:
                    maps.append(
                        EntityMap(xml_field=_text(m, "XMLField") or entity_field, entity_field=entity_field)
                    )
        entities.append(
            ManifestEntity(
                entity_name=_text(item, "EntityName"),
                input_file_path=_text(item, "InputFilePath"),
                source_format=_text(item, "SourceFormat"),
                execution_unit=_int(item, "ExecutionUnit"),
                level=_int(item, "LevelInExecutionUnit"),
                sequence=_int(item, "SequenceInLevel"),
                maps=maps,
                target_entity=_text(item, "TargetEntity") or None,
                excel_sheet_name=_text(item, "ExcelSheetName"),
                has_map_list=map_list is not None and len(maps) > 0,
                fail_level_on_error=_text(item, "FailLevelOnError").lower() == "true",
                fail_execution_unit_on_error=_text(item, "FailExecutionUnitOnError").lower() == "true",
            )
        )
    return Manifest(
        definition_group=_text(root, "DefinitionGroupName"),
        description=_text(root, "Description"),
        entities=entities,
    )


@dataclass
class OpenedPackage:
    header: PackageHeader
    manifest: Manifest
    zip: zipfile.ZipFile

    def member(self, path: str) -> str | None:
        """Resolve InputFilePath to a zip member: exact, then case-insensitive, then by base name."""
        names = [n for n in self.zip.namelist() if not n.endswith("/")]
        if path in names:
            return path
        low = path.lower().replace("\\", "/")
        for n in names:
            if n.lower() == low:
                return n
        base = low.rsplit("/", 1)[-1]
        return next((n for n in names if n.lower() == base), None)


def open_package(data: bytes) -> OpenedPackage:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise PackageError("End of Central Directory record could not be found.") from exc
    names = {n.lower(): n for n in zf.namelist()}
    # Files must sit at the zip root; a folder inside the zip means F&O cannot find them.
    for required in ("PackageHeader.xml", "Manifest.xml"):
        if required.lower() not in names:
            raise PackageError(f"Could not find file 'C:\\Temp\\DMF\\{required}'.")
    header = parse_header(zf.read(names["packageheader.xml"]))
    manifest = parse_manifest(zf.read(names["manifest.xml"]))
    return OpenedPackage(header=header, manifest=manifest, zip=zf)


class DataFileError(Exception):
    """The data file of one entity cannot be read; that entity (and so the execution) fails."""


def _mapping_error(entity: str, field_name: str) -> DataFileError:
    return DataFileError(f"The mapping is incorrect for entity {entity} and field {field_name}.")


def _excel_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.date() if value.time() == datetime.min.time() else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_FORMULA = re.compile(rb"<(?:\w+:)?f[ >/]")


def _refuse_formulas(data: bytes) -> None:
    """F&O's Excel reader does not take data from formulas (dmf-capabilities: "Data from Excel formulas
    generates errors. Copy-paste as values first"): the entity fails, naming the first formula cell."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return  # openpyxl reports it
    for name in zf.namelist():
        if name.startswith("xl/worksheets/") and name.endswith(".xml"):
            text = zf.read(name)
            m = _FORMULA.search(text)
            if m:
                cell = re.findall(rb'<(?:\w+:)?c [^>]*r="([A-Z]+[0-9]+)"', text[: m.start()])
                where = cell[-1].decode() if cell else "?"
                raise DataFileError(
                    f"Cell {where} holds a formula: data from Excel formulas cannot be imported."
                )


def _table_rows(data: bytes, fmt: SourceFormat, entity: ManifestEntity, require_crlf: bool) -> list[list]:
    if fmt.kind == "excel":
        _refuse_formulas(data)
        try:
            wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types for a file that is not a workbook
            raise DataFileError(f"File is not a valid Excel workbook: {type(exc).__name__}") from exc
        try:
            sheet_name = entity.excel_sheet_name.rstrip("$")
            ws = wb[sheet_name] if sheet_name and sheet_name in wb.sheetnames else wb.worksheets[0]
            return [
                [_excel_value(v) for v in row]
                for row in ws.iter_rows(values_only=True)
                if any(v is not None for v in row)
            ]
        finally:
            wb.close()
    if fmt.unicode:
        if not data.startswith(b"\xff\xfe"):
            raise DataFileError(
                "Selected file is not Unicode. Please select a Unicode file or change the format."
            )
        text = data[2:].decode("utf-16-le", errors="replace")
    else:
        text = data.decode("utf-8-sig" if fmt.encoding.lower().replace("-", "") == "utf8" else fmt.encoding)
    if require_crlf and "\n" in text and "\r\n" not in text:
        # F&O reads LF-only files as one line; the error it gives names the first mapped field.
        first = entity.maps[0].entity_field if entity.maps else "{00000000-0000-0000-0000-000000000000}"
        raise _mapping_error(entity.entity_name, first)
    return [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=fmt.delimiter) if row]


def _xml_records(data: bytes, fmt: SourceFormat) -> list[tuple[str, dict[str, str], list[Element]]]:
    try:
        root = SafeET.fromstring(data)
    except SafeET.ParseError as exc:
        raise DataFileError(f"There is an error in XML document: {exc}") from exc
    out = []
    for el in root:
        if fmt.kind == "xml-attribute":
            values = dict(el.attrib)
            children = list(el)
        else:
            values = {c.tag: (c.text or "") for c in el if len(c) == 0}
            children = [c for c in el if len(c) > 0]
        out.append((el.tag.upper(), values, children))
    return out


def read_entity_records(
    pkg: OpenedPackage,
    entity: ManifestEntity,
    fmt: SourceFormat,
    cat: CatalogueEntity,
    config: EmulatorConfig,
) -> list[Record]:
    """Records of one manifest entity, values keyed by entity field. Raises DataFileError."""
    member = pkg.member(entity.input_file_path) if entity.input_file_path else None
    if member is None:
        raise DataFileError(f"Could not find file '{entity.input_file_path}' in the package.")
    data = pkg.zip.read(member)
    if cat.composite:
        return _composite_records(data, fmt, cat, config)
    if entity.auto_map:
        entity.maps = [EntityMap(f.name, f.name) for f in cat.fields]
    elif not entity.has_map_list:
        return []  # F&O imports nothing (and reports no error) without EntityMapList
    for m in entity.maps:
        if cat.field(m.entity_field) is None and not cat.open_fields:
            raise _mapping_error(entity.entity_name, m.entity_field)
    if fmt.kind in ("xml-attribute", "xml-element"):
        return _xml_entity_records(data, fmt, entity, cat)
    return _table_entity_records(data, fmt, entity, cat, config)


def _xml_entity_records(
    data: bytes, fmt: SourceFormat, entity: ManifestEntity, cat: CatalogueEntity
) -> list[Record]:
    records: list[Record] = []
    for i, (_tag, values, _children) in enumerate(_xml_records(data, fmt), start=1):
        upper = {k.upper(): v for k, v in values.items()}
        maps = [m for m in entity.maps if m.xml_field.upper() in upper] if entity.auto_map else entity.maps
        mapped = {m.entity_field.upper(): upper.get(m.xml_field.upper()) for m in maps}
        records.append(Record(i, mapped, cat.label))
    return records


def _table_entity_records(
    data: bytes, fmt: SourceFormat, entity: ManifestEntity, cat: CatalogueEntity, config: EmulatorConfig
) -> list[Record]:
    """Records of a delimited file or a workbook: columns by header (or by map order without one)."""
    rows = _table_rows(data, fmt, entity, config.require_crlf)
    if not rows:
        return []
    if fmt.first_row_header:
        header = [str(h).strip().upper() if h is not None else "" for h in rows[0]]
        body = rows[1:]
    else:
        header = [m.xml_field.upper() for m in entity.maps]
        body = rows
    index = {h: i for i, h in enumerate(header)}
    if entity.auto_map:
        entity.maps = [m for m in entity.maps if m.xml_field.upper() in index]
    for m in entity.maps:
        if m.xml_field.upper() not in index:
            raise _mapping_error(entity.entity_name, m.xml_field)
    records: list[Record] = []
    for n, row in enumerate(body, start=1):
        values: dict[str, object] = {}
        for m in entity.maps:
            i = index[m.xml_field.upper()]
            v = row[i] if i < len(row) else None
            values[m.entity_field.upper()] = v
        records.append(Record(n, values, cat.label))
    return records


def _composite_records(
    data: bytes, fmt: SourceFormat, cat: CatalogueEntity, config: EmulatorConfig
) -> list[Record]:
    """Composite entities come as nested XML: root records for the first child entity, nested
    elements for the others, matched by element name = the child's target entity in upper case."""
    if fmt.kind not in ("xml-attribute", "xml-element"):
        raise DataFileError(f"Composite entity {cat.label} supports only XML source formats.")
    by_tag = {}
    for label in cat.children:
        child = config.entity(label)
        if child is not None:
            by_tag[child.target_entity.upper()] = child
    root_child = config.entity(cat.children[0]) if cat.children else None
    records: list[Record] = []
    counter = 0

    def walk(
        tag: str, values: dict[str, str], children: list[Element], default: CatalogueEntity | None
    ) -> None:
        nonlocal counter
        target = by_tag.get(tag, default)
        if target is None:
            raise DataFileError(f"Element {tag} does not belong to composite entity {cat.label}.")
        counter += 1
        records.append(Record(counter, {k.upper(): v for k, v in values.items()}, target.label))
        for c in children:
            if fmt.kind == "xml-attribute":
                walk(c.tag.upper(), dict(c.attrib), list(c), None)
            else:
                walk(
                    c.tag.upper(),
                    {g.tag: (g.text or "") for g in c if len(g) == 0},
                    [g for g in c if len(g) > 0],
                    None,
                )

    for tag, values, children in _xml_records(data, fmt):
        walk(tag, values, children, root_child)
    return records


def to_text(value: object) -> str:
    """Display text of a value read from a file (for error files)."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
