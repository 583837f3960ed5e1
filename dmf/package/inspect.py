"""Validate a DMF package before F&O is called. Returns a report; never raises for bad input.

Checks, each with a problem code (``problems.Code``): the zip container (not a zip, encrypted, zip bomb
from headers and while reading, too many entries, path traversal, nested folders, duplicate and empty
entries), both XML files present and parsed with defusedxml, the manifest (entities, EntityMapList,
every InputFilePath present, source format known, apostrophes in the project name, a composite entity
alone and with overwrite off) and each data file's content against its source format: encoding
(CSV-Unicode must be UTF-16LE with BOM), CRLF line endings (LF-only lines are rejected here; ``build``
fixes them when it wraps raw files), header vs EntityMapList, row and size limits, and duplicate keys
for entities whose keys the catalogue knows (streamed, bounded memory).
"""

from __future__ import annotations

import codecs
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from dmf.package.catalogue import Catalogue, EntityInfo
from dmf.package.formats import FileKind, FormatRules, UnknownFormatError, format_rules
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.limits import Limits
from dmf.package.manifest import (
    EntityData,
    Manifest,
    ManifestError,
    PackageHeader,
    parse_manifest,
    parse_package_header,
)
from dmf.package.problems import Code, Problem, Severity, has_errors
from dmf.package.textstream import (
    RecordSplitter,
    RecordTooLongError,
    extract_keys,
    parse_fields,
    record_too_long_message,
)
from dmf.package.zipsafe import (
    Budget,
    ChunkReader,
    Tally,
    ZipBombError,
    copy_entry,
    header_problems,
    iter_entry,
    name_problem,
    precheck,
    read_entry,
    workbook_has_dtd,
)

MANIFEST = "Manifest.xml"
HEADER = "PackageHeader.xml"


@dataclass
class PackageReport:
    problems: list[Problem] = field(default_factory=list)
    manifest: Manifest | None = None
    header: PackageHeader | None = None
    files: list[str] = field(default_factory=list)
    uncompressed_bytes: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)  # entity label → data rows (header excluded)

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)

    @property
    def entities(self) -> list[EntityData]:
        return self.manifest.entities if self.manifest is not None else []

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    def codes(self) -> set[Code]:
        return {p.code for p in self.problems}


def inspect_package(
    path_or_file: str | os.PathLike[str] | BinaryIO,
    *,
    limits: Limits | None = None,
    catalogue: Catalogue | None = None,
    overwrite: bool = True,
    data_project: str | None = None,
    check_content: bool = True,
    outside: bool = True,
) -> PackageReport:
    """Validate a package zip: a path, a seekable binary file, or any readable stream (e.g. a blob
    download), which is first spooled to a temp file because zip needs seeking. See the module docstring.

    ``outside`` says the package came from outside (dropped, or unpacked from a dropped batch): the zip
    bomb checks (sizes, ratios, entry count, entry names and types) apply to it. A package ``build`` made
    itself from a raw file passes ``outside=False``: its input was checked, and its own compression ratio
    says nothing about an attack (a very repetitive CSV compresses well)."""
    limits = limits or Limits()
    if not isinstance(path_or_file, (str, os.PathLike)) and not _seekable(path_or_file):
        spooled = spool_to_file(path_or_file, max_bytes=limits.max_package_file_bytes)
        if spooled is None:
            return PackageReport(
                [Problem(Code.TOO_LARGE, f"the package is larger than {limits.max_package_file_bytes} bytes")]
            )
        try:
            return inspect_package(spooled, limits=limits, catalogue=catalogue, overwrite=overwrite,
                                   data_project=data_project, check_content=check_content,
                                   outside=outside)  # fmt: skip
        finally:
            spooled.unlink(missing_ok=True)
    report = PackageReport()
    p = report.problems
    if data_project is not None and "'" in data_project:
        p.append(
            Problem(
                Code.APOSTROPHE_IN_PROJECT,
                f"data project {data_project!r} contains an apostrophe, which DMF import rejects",
            )
        )
    size = _size(path_or_file)
    if size == 0:
        p.append(Problem(Code.NOT_A_ZIP, "the package file is empty"))
        return report
    if size > limits.max_package_file_bytes:
        p.append(
            Problem(Code.TOO_LARGE, f"the package is {size} bytes (limit {limits.max_package_file_bytes})")
        )
        return report
    early = precheck(path_or_file, limits) if outside else None
    if early is not None:
        p.append(early)
        return report
    try:
        zf = zipfile.ZipFile(path_or_file)  # type: ignore[arg-type]
    except zipfile.BadZipFile:
        p.append(Problem(Code.NOT_A_ZIP, "the file is not a zip archive; F&O needs a data package (.zip)"))
        return report
    except (OSError, ValueError) as e:
        p.append(Problem(Code.ZIP_CORRUPT, f"the zip cannot be read ({type(e).__name__})"))
        return report
    with zf:
        _inspect_zip(
            zf, report, limits, catalogue, overwrite, check_content, Tally(size) if outside else None
        )
    return report


def _size(path_or_file: str | os.PathLike[str] | BinaryIO) -> int:
    if isinstance(path_or_file, (str, os.PathLike)):
        return Path(path_or_file).stat().st_size
    pos = path_or_file.tell()
    end = path_or_file.seek(0, os.SEEK_END)
    path_or_file.seek(pos)
    return end


def _inspect_zip(
    zf: zipfile.ZipFile,
    report: PackageReport,
    limits: Limits,
    catalogue: Catalogue | None,
    overwrite: bool,
    check_content: bool,
    tally: Tally | None,
) -> None:
    """``tally`` is None for a package built here (no zip bomb checks), else what the input adds up to."""
    p = report.problems
    infos = zf.infolist()
    report.uncompressed_bytes = sum(i.file_size for i in infos)
    report.files = [i.filename for i in infos]
    if not infos:
        p.append(Problem(Code.EMPTY_PACKAGE, "the zip holds no files"))
        return
    if tally is not None:
        p.extend(header_problems(zf, limits, tally=tally))
    bomb = any(x.code in (Code.ZIP_BOMB, Code.ZIP_TOO_MANY_ENTRIES, Code.ZIP_ENCRYPTED) for x in p)
    root: dict[str, zipfile.ZipInfo] = {}
    for i in infos:
        bad = name_problem(i.filename)
        if bad is not None:
            p.append(bad)
            continue
        if i.file_size == 0:
            p.append(Problem(Code.EMPTY_FILE, f"{i.filename!r} is empty", file=i.filename))
        root.setdefault(i.filename.casefold(), i)
    if bomb:
        return  # reading anything further would mean decompressing a suspected bomb
    # Our own package: its data file was bounded when it was built, so reading it needs no budget.
    budget = Budget(limits.max_uncompressed_bytes if tally is not None else 2**62)
    try:
        report.header = _read_xml(
            zf,
            root,
            HEADER,
            parse_package_header,
            Code.MISSING_PACKAGE_HEADER,
            Code.BAD_PACKAGE_HEADER,
            budget,
            limits,
            p,
        )
        report.manifest = _read_xml(
            zf, root, MANIFEST, parse_manifest, Code.MISSING_MANIFEST, Code.BAD_MANIFEST, budget, limits, p
        )
    except ZipBombError as e:
        p.append(Problem(Code.ZIP_BOMB, str(e)))
        return
    man = report.manifest
    if man is None:
        return
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
        return
    referenced = {MANIFEST.casefold(), HEADER.casefold()}
    checks: list[tuple[EntityData, zipfile.ZipInfo, FormatRules, EntityInfo | None]] = []
    for ent in man.entities:
        label = ent.entity_name
        info = catalogue.get(label) if catalogue is not None else None
        if catalogue is not None and info is None and ent.target_entity:
            info = catalogue.get(ent.target_entity)
        if catalogue is not None and info is None:
            p.append(
                Problem(
                    Code.UNKNOWN_ENTITY,
                    f"entity {label!r} is not in the route's catalogue",
                    Severity.WARNING,
                    entity=label,
                )
            )
        if info is not None and info.composite:
            if len(man.entities) > 1:
                p.append(
                    Problem(
                        Code.COMPOSITE_NOT_ALONE,
                        f"composite entity {label!r} must be the only entity in "
                        f"its package (this one has {len(man.entities)})",
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
        if not ent.entity_map_list:
            p.append(
                Problem(
                    Code.NO_ENTITY_MAP,
                    f"entity {label!r} has no EntityMapList; F&O would import 0 rows",
                    file=MANIFEST,
                    entity=label,
                )
            )
        data = root.get(ent.input_file_path.casefold()) if ent.input_file_path else None
        if data is None:
            p.append(
                Problem(
                    Code.INPUT_FILE_MISSING,
                    f"entity {label!r} names InputFilePath "
                    f"{ent.input_file_path!r}, which is not at the zip root",
                    file=ent.input_file_path or None,
                    entity=label,
                )
            )
        else:
            referenced.add(data.filename.casefold())
        try:
            rules = format_rules(ent.source_format)
        except UnknownFormatError:
            p.append(
                Problem(
                    Code.UNKNOWN_SOURCE_FORMAT,
                    f"entity {label!r} uses source format "
                    f"{ent.source_format!r}; its file content is not checked",
                    Severity.WARNING,
                    entity=label,
                )
            )
            continue
        if data is not None and data.file_size > 0:
            checks.append((ent, data, rules, info))
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
    read = {MANIFEST.casefold(), HEADER.casefold()}
    for ent, data, rules, info in checks if check_content else []:
        if data.file_size > (limits.max_bytes_per_package or data.file_size):
            p.append(
                Problem(
                    Code.TOO_LARGE,
                    f"{data.filename!r} is {data.file_size} bytes uncompressed (limit "
                    f"{limits.max_bytes_per_package})",
                    file=data.filename,
                    entity=ent.entity_name,
                )
            )
        try:
            scan = _ContentScan(ent, data.filename, rules, info, limits, p, tally)
            if rules.kind is FileKind.DELIMITED:
                rows = scan.delimited(iter_entry(zf, data, budget))
            elif rules.kind is FileKind.XML:
                rows = scan.xml(iter_entry(zf, data, budget))
            else:
                rows = scan.excel(zf, data, budget)
        except ZipBombError as e:
            p.append(Problem(Code.ZIP_BOMB, str(e), file=data.filename))
            return
        except _CORRUPT as e:
            p.append(
                Problem(
                    Code.ZIP_CORRUPT, f"{data.filename!r} cannot be decompressed ({e})", file=data.filename
                )
            )
            return
        read.add(data.filename.casefold())
        if rows is not None:
            report.row_counts[ent.entity_name] = rows
            if limits.max_rows_per_package is not None and rows > limits.max_rows_per_package:
                p.append(
                    Problem(
                        Code.TOO_LARGE,
                        f"{data.filename!r} has {rows} rows (limit {limits.max_rows_per_package})",
                        file=data.filename,
                        entity=ent.entity_name,
                    )
                )
    if tally is not None and not has_errors(p):
        _read_the_rest(zf, infos, read, budget, p)


# A damaged deflate stream surfaces as zlib.error, a bad CRC as BadZipFile.
_CORRUPT = (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, RuntimeError, NotImplementedError, zlib.error)


def _read_the_rest(
    zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], read: set[str], budget: Budget, p: list[Problem]
) -> None:
    """Read through every entry nothing above read (unreferenced files, data files in formats not
    checked): F&O receives and expands them too, so what they really expand to counts against the
    budget (headers can lie), and their CRCs are checked."""
    for i in infos:
        if i.is_dir() or not i.file_size or i.filename.casefold() in read:
            continue
        try:
            for _ in iter_entry(zf, i, budget):
                pass
        except ZipBombError as e:
            p.append(Problem(Code.ZIP_BOMB, str(e), file=i.filename))
            return
        except _CORRUPT as e:
            p.append(
                Problem(Code.ZIP_CORRUPT, f"{i.filename!r} cannot be decompressed ({e})", file=i.filename)
            )
            return


def _read_xml(zf, root, name, parse, missing_code, bad_code, budget, limits, p):  # type: ignore[no-untyped-def]
    info = root.get(name.casefold())
    if info is None:
        p.append(Problem(missing_code, f"{name} is missing from the zip root", file=name))
        return None
    try:
        return parse(read_entry(zf, info, budget, limits.max_xml_bytes))
    except ManifestError as e:
        p.append(Problem(bad_code, f"{name}: {e}", file=name))
    except _CORRUPT as e:
        p.append(Problem(Code.ZIP_CORRUPT, f"{name} cannot be decompressed ({e})", file=name))
    return None


class _ContentScan:
    """Checks one data file; appends problems and returns the data row count (None if not countable)."""

    def __init__(
        self,
        ent: EntityData,
        name: str,
        rules: FormatRules,
        info: EntityInfo | None,
        limits: Limits,
        problems: list[Problem],
        tally: Tally | None = None,
    ) -> None:
        self.ent, self.name, self.rules, self.info, self.limits, self.p = (
            ent,
            name,
            rules,
            info,
            limits,
            problems,
        )
        self.tally = tally  # None: a package built here, whose workbook build checked already

    def add(
        self, code: Code, message: str, severity: Severity = Severity.ERROR, row: int | None = None
    ) -> None:
        self.p.append(
            Problem(
                code,
                f"{self.name}: {message}",
                severity,
                file=self.name,
                entity=self.ent.entity_name,
                row=row,
            )
        )

    def _mapped_key_columns(self, columns: list[str]) -> list[int] | None:
        """Check the header against the EntityMapList; return key column indexes (None = no key check)."""
        upper = [c.strip().upper() for c in columns]
        mapped = [m.xml_field.strip().upper() for m in self.ent.entity_map_list]
        missing = [m for m in mapped if m not in upper]
        if missing:
            self.add(
                Code.HEADER_MISMATCH,
                f"EntityMapList maps columns the file lacks: {', '.join(missing)}",
                row=1,
            )
        unmapped = [c for c in upper if c and c not in mapped]
        if unmapped and mapped:
            self.add(
                Code.HEADER_MISMATCH,
                f"columns not in the EntityMapList are ignored: {', '.join(unmapped)}",
                Severity.WARNING,
                row=1,
            )
        if self.info is None or not self.info.key_fields:
            return None
        # The key lives in entity fields; find the file column mapped to each key field.
        by_entity = {
            m.entity_field.strip().upper(): m.xml_field.strip().upper() for m in self.ent.entity_map_list
        }
        idx = []
        for k in self.info.key_fields:
            col = by_entity.get(k, k)
            if col not in upper:
                self.add(
                    Code.KEY_FIELD_MISSING,
                    f"key field {k} of {self.info.label} is not in the file",
                    Severity.WARNING,
                )
                return None
            idx.append(upper.index(col))
        return idx

    def _finder(self) -> DuplicateKeyFinder:
        return DuplicateKeyFinder(self.limits.key_spill_threshold, self.limits.max_row_problems)

    def _report_dups(self, finder: DuplicateKeyFinder) -> None:
        assert self.info is not None
        keys = ", ".join(self.info.key_fields)
        dups = finder.finish()
        for d in dups:
            shown = f" ({keys} = {', '.join(d.key)})" if d.key is not None else ""
            self.add(
                Code.DUPLICATE_KEY, f"row {d.row} repeats the key of row {d.first_row}{shown}", row=d.row
            )
        if finder.duplicate_count > len(dups):
            self.add(
                Code.DUPLICATE_KEY, f"{finder.duplicate_count - len(dups)} more rows repeat an earlier key"
            )

    # ------------------------------------------------------------------------------------- delimited

    def delimited(self, chunks) -> int | None:  # type: ignore[no-untyped-def]
        rules = self.rules
        assert rules.encoding is not None and rules.delimiter is not None
        first = next(chunks, b"")
        codec = rules.encoding
        if rules.bom == b"\xff\xfe" and not first.startswith(b"\xff\xfe"):
            self.add(
                Code.BAD_ENCODING, f"source format {rules.name} needs UTF-16LE with a byte order mark (FF FE)"
            )
            return None
        if rules.encoding == "utf-8" and first.startswith((b"\xff\xfe", b"\xfe\xff")):
            self.add(
                Code.BAD_ENCODING,
                f"the file is UTF-16 but source format {rules.name} expects 8-bit text (use CSV-Unicode)",
            )
            return None
        skip = len(rules.bom) if rules.bom and first.startswith(rules.bom) else 0
        if codec == "utf-8" and first.startswith(codecs.BOM_UTF8):
            skip = 3
        dec = codecs.getincrementaldecoder(codec)("strict")
        splitter = RecordSplitter(max_record_chars=self.limits.max_record_chars)
        lines_seen = 0  # newlines before the current chunk, for the first LF-only line number
        prev_cr = False
        first_lf_line: int | None = None
        bare_lfs = 0  # LF not preceded by CR, anywhere
        inner_breaks = 0  # line breaks inside quoted fields
        columns: list[str] | None = None
        key_idx: list[int] | None = None
        finder: DuplicateKeyFinder | None = None
        row = 1
        offset = 0
        data = first[skip:]
        offset = skip

        def handle(recs: list[str]) -> None:
            nonlocal columns, key_idx, finder, row, inner_breaks
            if not recs:
                return
            if not splitter.quote_free:
                inner_breaks += sum(r.count("\n") for r in recs)
            if columns is None:
                columns = parse_fields(recs[0].lstrip("\ufeff"), rules.delimiter or ",")
                key_idx = self._mapped_key_columns(columns)
                finder = self._finder() if key_idx else None
                recs = recs[1:]
            if finder is not None and key_idx:
                finder.add_batch(
                    extract_keys(recs, key_idx, rules.delimiter or ",", splitter.quote_free), row + 1
                )
            row += len(recs)

        try:
            while True:
                final = data is None
                try:
                    text = dec.decode(b"" if data is None else data, final=final)
                except UnicodeDecodeError as e:
                    self.add(
                        Code.BAD_ENCODING,
                        f"bytes at offset {offset + e.start} are not valid {codec} "
                        f"(source format {rules.name})",
                    )
                    return None
                if data is not None:
                    offset += len(data)
                if "\n" in text:
                    n_bare = text.count("\n") - text.count("\r\n") - (prev_cr and text.startswith("\n"))
                    if n_bare and first_lf_line is None:
                        pos = _first_bare_lf(text, prev_cr)
                        first_lf_line = lines_seen + text.count("\n", 0, pos) + 1
                    bare_lfs += n_bare
                lines_seen += text.count("\n")
                if prev_cr:
                    text = "\r" + text
                # A CR at the chunk end may pair with an LF at the next start: hold it back.
                prev_cr = not final and text.endswith("\r")
                if prev_cr:
                    text = text[:-1]
                if "\r" in text:
                    text = text.replace("\r\n", "\n").replace("\r", "\n")
                handle(splitter.feed(text))
                if final:
                    break
                data = next(chunks, None)
        except RecordTooLongError as e:
            long_row = (row if columns is not None else 0) + e.records_before + 1
            self.add(Code.RECORD_TOO_LONG, record_too_long_message(long_row, e), row=long_row)
            return None
        rest, unterminated = splitter.finish()
        if unterminated:
            self.add(Code.UNTERMINATED_QUOTE, f"row {row + 1} opens a quote that never closes", row=row + 1)
            return None
        handle(rest)
        if bare_lfs > inner_breaks:
            # Some record ends with LF only (an LF inside a quoted field alone is data, not a row end).
            self.add(Code.LF_LINE_ENDINGS, f"line {first_lf_line} ends with LF only; F&O needs CRLF (it reports a "
                     "misleading mapping error otherwise)", row=first_lf_line)  # fmt: skip
        if columns is None:
            self.add(Code.NO_HEADER, "the file holds no header row")
            return None
        if finder is not None:
            self._report_dups(finder)
        if row == 1:
            self.add(Code.NO_ROWS, "the file has a header but no data rows", Severity.WARNING)
        return row - 1

    # ------------------------------------------------------------------------------------------- XML

    def xml(self, chunks) -> int | None:  # type: ignore[no-untyped-def]
        attrs_mode = self.rules.xml_attributes
        keys = self.info.key_fields if self.info is not None else ()
        finder = self._finder() if keys else None
        mapped = {m.xml_field.strip().upper() for m in self.ent.entity_map_list}
        seen: set[str] = set()
        depth = 0
        rows = 0
        root = None
        try:
            for event, el in SafeET.iterparse(ChunkReader(chunks), events=("start", "end"), forbid_dtd=True):
                if event == "start":
                    depth += 1
                    if depth == 1:
                        root = el
                    continue
                depth -= 1
                if depth != 1:
                    continue
                rows += 1
                values = el.attrib if attrs_mode else {c.tag: (c.text or "") for c in el}
                upper = {k.rsplit("}", 1)[-1].upper(): v for k, v in values.items()}
                seen.update(upper)
                if finder is not None:
                    finder.add(tuple([upper.get(k, "").strip().upper() for k in keys]), rows)
                assert root is not None
                root.remove(el)
        except DefusedXmlException as e:
            self.add(Code.BAD_XML, f"forbidden XML construct ({type(e).__name__})")
            return None
        except SafeET.ParseError as e:
            self.add(Code.BAD_XML, f"not well-formed XML ({e})")
            return None
        unknown = sorted(seen - mapped)
        if unknown and mapped:
            self.add(
                Code.HEADER_MISMATCH,
                f"fields not in the EntityMapList are ignored: {', '.join(unknown)}",
                Severity.WARNING,
            )
        if finder is not None:
            self._report_dups(finder)
        if rows == 0:
            self.add(Code.NO_ROWS, "the file holds no records", Severity.WARNING)
        return rows

    # ----------------------------------------------------------------------------------------- Excel

    def excel(self, zf: zipfile.ZipFile, data: zipfile.ZipInfo, budget: Budget) -> int | None:
        import openpyxl  # deferred: only packages with Excel data pay for the import

        with tempfile.NamedTemporaryFile(suffix=".xlsx") as tmp:
            copy_entry(zf, data, tmp, budget)  # type: ignore[arg-type]
            tmp.flush()
            try:
                if self.tally is not None:
                    early = precheck(tmp.name, self.limits)
                    if early is not None:
                        self.add(early.code, f"the workbook: {early.message}")
                        return None
                    with zipfile.ZipFile(tmp.name) as inner:
                        inner_errors = header_problems(
                            inner, self.limits, tally=self.tally, where="the workbook: "
                        )
                        if not inner_errors and workbook_has_dtd(
                            inner, Budget(self.limits.max_uncompressed_bytes)
                        ):
                            self.add(Code.BAD_EXCEL, "the workbook's XML has a document type declaration (DTD), "
                                     "which is not allowed")  # fmt: skip
                            return None
                    if inner_errors:
                        self.add(inner_errors[0].code, inner_errors[0].message.removeprefix(f"{self.name}: "))
                        return None
                wb = openpyxl.load_workbook(tmp.name, read_only=True, data_only=True)
            except Exception as e:  # openpyxl raises many types for a broken workbook
                self.add(Code.BAD_EXCEL, f"not a readable .xlsx workbook ({type(e).__name__})")
                return None
            try:
                sheet = self.ent.excel_sheet_name.rstrip("$")
                ws = wb[sheet] if sheet and sheet in wb.sheetnames else wb.worksheets[0]
                it = ws.iter_rows(values_only=True)
                header = next(it, None)
                if header is None:
                    self.add(Code.NO_HEADER, "the workbook's sheet is empty")
                    return None
                columns = ["" if v is None else str(v) for v in header]
                key_idx = self._mapped_key_columns([c for c in columns])
                finder = self._finder() if key_idx else None
                rows = 0
                for values in it:
                    if values is None or all(v is None or v == "" for v in values):
                        continue
                    rows += 1
                    if finder is not None and key_idx:
                        finder.add(
                            tuple(
                                [
                                    ""
                                    if k >= len(values) or values[k] is None
                                    else str(values[k]).strip().upper()
                                    for k in key_idx
                                ]
                            ),
                            rows + 1,
                        )
                if finder is not None:
                    self._report_dups(finder)
                return rows
            finally:
                wb.close()


def _first_bare_lf(text: str, prev_cr: bool) -> int:
    start = 0
    while True:
        pos = text.find("\n", start)
        if pos < 0:
            return len(text)
        if pos == 0 and prev_cr:
            start = 1
            continue
        if pos == 0 or text[pos - 1] != "\r":
            return pos
        start = pos + 1


def _seekable(f: object) -> bool:
    try:
        return bool(f.seekable())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def spool_to_file(stream: BinaryIO, dest_dir: str | None = None, max_bytes: int | None = None) -> Path | None:
    """Copy a stream to a temp file in 1 MiB chunks; None (and no file) if it exceeds ``max_bytes``.
    The caller deletes the file."""
    fd, name = tempfile.mkstemp(suffix=".zip", dir=dest_dir)
    total = 0
    with os.fdopen(fd, "wb") as f:
        while chunk := stream.read(1024 * 1024):
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                break
            f.write(chunk)
    if max_bytes is not None and total > max_bytes:
        os.unlink(name)
        return None
    return Path(name)
