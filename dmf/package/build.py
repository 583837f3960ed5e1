"""Raw data file → DMF package(s), streaming.

Input is any readable binary stream (e.g. a blob download stream); output is one or more zip files in
``out_dir``. Delimited files are transcoded to the source format's encoding (CSV-Unicode ⇒ UTF-16LE + BOM)
with every line ending normalised to CRLF (also inside quoted fields), split by ``Limits`` rows/bytes
with the header repeated in every part. XML files are split by top-level record and written as UTF-8;
Excel files are kept as they are when within limits and otherwise split by rows.

Memory stays bounded: one read chunk (1 MiB) plus one batch of records; duplicate-key checking spills to
disk above ``Limits.key_spill_threshold`` rows. Bad input never raises: problems are returned and, when
any is an error, no package is left behind.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from xml.etree.ElementTree import Element, tostring
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from dmf.package.catalogue import EntityInfo
from dmf.package.fingerprint import sha256_file
from dmf.package.formats import FileKind, FormatRules, UnknownFormatError, format_rules
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.limits import Limits
from dmf.package.manifest import (
    EntityData,
    Manifest,
    ManifestError,
    PackageHeader,
    entity_maps_for,
    parse_manifest,
    parse_package_header,
    render_manifest,
    render_package_header,
)
from dmf.package.problems import Code, Problem, Severity, has_errors
from dmf.package.textstream import (
    HEAD_BYTES,
    DecodeError,
    RecordSplitter,
    RecordTooLongError,
    detect_encoding,
    extract_keys,
    iter_normalised_text,
    parse_fields,
    read_head,
    record_too_long_message,
)
from dmf.package.zipsafe import Budget, header_problems, precheck, workbook_has_dtd

COMPRESS_LEVEL = 6
# UTF-16 text is half zero bytes: zlib's lazy matching at levels 5+ costs ~3.5x the time of level 4 for
# ~10% smaller output (bench/results/package.md), so UTF-16 data files default to level 4.
UTF16_COMPRESS_LEVEL = 4
_BAD_NAME_CHARS = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_RESERVED = {"manifest.xml", "packageheader.xml"}


@dataclass(frozen=True, slots=True)
class BuiltPackage:
    path: Path
    rows: int  # data rows (records), header excluded
    bytes: int  # size of the package zip file
    sha256: str  # of the package zip file
    data_file: str  # InputFilePath inside the package
    data_bytes: int  # uncompressed size of the data file
    part: int  # 1-based


@dataclass
class BuildResult:
    packages: list[BuiltPackage] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    source_encoding: str | None = None
    columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems) and bool(self.packages)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.packages)


class _InputTooLarge(Exception):
    pass


class _LimitedReader:
    """Counts bytes read from the source and stops at ``Limits.max_input_bytes``."""

    def __init__(self, src: BinaryIO, limit: int) -> None:
        self._src = src
        self.left = limit

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self.left -= len(data)
        if self.left < 0:
            raise _InputTooLarge
        return data


class _Abort(Exception):
    """Stop building; the problem is already recorded."""


@dataclass
class _Ctx:
    file_name: str
    data_name: str
    entity: EntityInfo
    rules: FormatRules
    data_project: str
    limits: Limits
    out_dir: Path
    stem: str  # file name stem for the zips in out_dir; never taken from the input's name
    template_entity: EntityData | None
    template_manifest: Manifest | None
    template_header: PackageHeader | None
    problems: list[Problem] = field(default_factory=list)
    compress_level: int = COMPRESS_LEVEL

    def problem(self, code: Code, message: str, severity: Severity = Severity.ERROR, row: int | None = None):
        self.problems.append(
            Problem(code, message, severity, file=self.file_name, entity=self.entity.label, row=row)
        )

    def fail(self, code: Code, message: str, row: int | None = None) -> _Abort:
        self.problem(code, message, row=row)
        return _Abort()

    def package_xml(self, columns: list[str]) -> tuple[bytes, bytes]:
        """Manifest.xml and PackageHeader.xml for a part whose data file has ``columns``."""
        if self.template_entity is not None:
            assert self.template_manifest is not None and self.template_header is not None
            ent = self.template_entity
            ent.input_file_path = self.data_name
            man = self.template_manifest
            man.entities = [ent]
            return render_manifest(man), render_package_header(self.template_header)
        known = {f: f for f in self.entity.fields}
        ent = EntityData(
            entity_name=self.entity.label,
            input_file_path=self.data_name,
            source_format=self.rules.name,
            entity_map_list=entity_maps_for(columns, known),
            target_entity=self.entity.target_entity,
            execution_unit=self.entity.execution_unit,
            level_in_execution_unit=self.entity.level,
            sequence_in_level=self.entity.sequence,
        )
        man = Manifest(definition_group_name=self.data_project, description=self.data_project, entities=[ent])
        return render_manifest(man), render_package_header(PackageHeader(description=self.data_project))


class _Parts:
    """Writes package zips one part at a time; the data entry is streamed, the XML files follow it."""

    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.built: list[BuiltPackage] = []
        self.paths: list[Path] = []
        self.zf: zipfile.ZipFile | None = None
        self.stream: BinaryIO | None = None
        self.rows = 0
        self.bytes = 0
        self.columns: list[str] = []

    @property
    def open(self) -> bool:
        return self.zf is not None

    def start(self, prefix: bytes) -> None:
        n = len(self.paths) + 1
        path = self.ctx.out_dir / f"{self.ctx.stem}-part{n:03d}.zip"
        self.paths.append(path)
        self.zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)
        info = _zinfo(self.ctx.data_name, self.ctx.compress_level)
        big = self.ctx.limits.max_bytes_per_package is None or self.ctx.limits.max_bytes_per_package > 2**31
        self.stream = self.zf.open(info, "w", force_zip64=big)
        self.rows = 0
        self.bytes = 0
        self.write(prefix, 0)

    def write(self, data: bytes, rows: int) -> None:
        assert self.stream is not None
        self.stream.write(data)
        self.bytes += len(data)
        self.rows += rows

    def finish_part(self, suffix: bytes = b"", columns: list[str] | None = None) -> None:
        assert self.zf is not None and self.stream is not None
        if suffix:
            self.write(suffix, 0)
        self.stream.close()
        manifest, header = self.ctx.package_xml(columns if columns is not None else self.columns)
        self.zf.writestr(_zinfo("Manifest.xml"), manifest)
        self.zf.writestr(_zinfo("PackageHeader.xml"), header)
        self.zf.close()
        path = self.paths[-1]
        self.built.append(
            BuiltPackage(
                path, self.rows, path.stat().st_size, "", self.ctx.data_name, self.bytes, len(self.paths)
            )
        )
        self.zf = None
        self.stream = None

    def abandon(self) -> None:
        if self.zf is not None:
            try:
                if self.stream is not None:
                    self.stream.close()
                self.zf.close()
            except Exception:  # noqa: S110 - the partial file is deleted next; its close error is noise
                pass
        self.zf = None
        self.stream = None
        for p in self.paths:
            p.unlink(missing_ok=True)
        self.built = []

    def finalise(self) -> list[BuiltPackage]:
        """Name a single part ``<stem>.zip`` (parts are ``<stem>-partNNN.zip``) and fingerprint every part."""
        out = []
        if len(self.built) == 1:
            only = self.built[0]
            dest = only.path.with_name(f"{self.ctx.stem}.zip")
            only.path.replace(dest)
            self.built = [BuiltPackage(dest, only.rows, only.bytes, "", only.data_file, only.data_bytes, 1)]
        for b in self.built:
            out.append(
                BuiltPackage(b.path, b.rows, b.bytes, sha256_file(b.path), b.data_file, b.data_bytes, b.part)
            )
        return out


def _zinfo(name: str, level: int = COMPRESS_LEVEL) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi._compresslevel = level  # type: ignore[attr-defined]  # ZipInfo has no public setter
    zi.external_attr = 0o644 << 16
    return zi


def safe_data_name(file_name: str, rules: FormatRules) -> str | None:
    """The data file's name inside the package: the original base name (traceability), or None if unusable."""
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or _BAD_NAME_CHARS.search(base) or base.casefold() in _RESERVED:
        return None
    if "." not in base:
        base += rules.extension
    return base


def build_packages_from_raw(
    src: BinaryIO,
    *,
    file_name: str,
    entity: EntityInfo,
    source_format: str,
    data_project: str,
    limits: Limits,
    out_dir: Path,
    template: Path | None = None,
    input_delimiter: str | None = None,
    check_duplicate_keys: bool = True,
    compress_level: int | None = None,
    template_name: str | None = None,
) -> BuildResult:
    """Wrap a raw data file into one or more packages. Never raises for bad input: see ``.problems``.

    ``template`` is a route's template package (its Manifest/PackageHeader are reused, mapping included;
    its data file is ignored). ``input_delimiter`` is the raw file's delimiter when it differs from the
    format's (e.g. ``;``): records are then re-written with the format's delimiter. ``compress_level``
    (deflate 1-9) defaults to 6, or 4 for UTF-16 data files (see ``UTF16_COMPRESS_LEVEL``).
    ``template_name`` names the template in messages (``template`` may be a temp file).
    """
    result = BuildResult()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        rules = format_rules(source_format)
    except UnknownFormatError as e:
        result.problems.append(Problem(Code.UNSUPPORTED_FORMAT, str(e), file=file_name, entity=entity.label))
        return result
    t_entity = t_manifest = t_header = None
    if template is not None:
        try:
            t_manifest, t_header, t_entity = _load_template(Path(template), entity)
        except (ManifestError, zipfile.BadZipFile, KeyError, OSError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else e  # never the (temp) path
            result.problems.append(
                Problem(
                    Code.TEMPLATE_INVALID,
                    f"template {template_name or Path(template).name}: {why}",
                    file=file_name,
                    entity=entity.label,
                )
            )
            return result
        if t_entity.source_format.casefold() != rules.name.casefold():
            try:
                template_rules = format_rules(t_entity.source_format)
            except UnknownFormatError as e:
                result.problems.append(
                    Problem(Code.TEMPLATE_INVALID, str(e), file=file_name, entity=entity.label)
                )
                return result
            result.problems.append(
                Problem(
                    Code.TEMPLATE_INVALID,
                    f"template uses source format {t_entity.source_format}, not {rules.name}; following the template",
                    Severity.WARNING,
                    file=file_name,
                    entity=entity.label,
                )
            )
            rules = template_rules
    data_name = safe_data_name(file_name, rules)
    if data_name is None:
        result.problems.append(
            Problem(
                Code.BAD_FILE_NAME,
                f"{file_name!r} cannot be used as a package file name",
                file=file_name,
                entity=entity.label,
            )
        )
        return result
    if "'" in data_project:
        result.problems.append(
            Problem(
                Code.APOSTROPHE_IN_PROJECT,
                f"data project name {data_project!r} contains an apostrophe, which DMF rejects",
                entity=entity.label,
            )
        )
        return result
    if len(data_name) > limits.max_name_chars:
        result.problems.append(
            Problem(
                Code.NAME_TOO_LONG,
                f"the file name is {len(data_name)} characters (limit {limits.max_name_chars}, "
                f"FILE_NAME_MAX_CHARS); it names the data file in the package: {data_name[:60]!r}…",
                file=file_name,
                entity=entity.label,
            )
        )
        return result
    # Files in out_dir are never named after the input: its name may be too long for the file system
    # (1,024 characters in a blob name; 255 bytes here) or hold characters a file name cannot.
    stem = "package"
    ctx = _Ctx(
        file_name,
        data_name,
        entity,
        rules,
        data_project,
        limits,
        out_dir,
        stem,
        t_entity,
        t_manifest,
        t_header,
        result.problems,
        compress_level if compress_level is not None else _default_level(rules),
    )
    parts = _Parts(ctx)
    src = _LimitedReader(src, limits.max_input_bytes)  # type: ignore[assignment]
    try:
        if rules.kind is FileKind.DELIMITED:
            _build_delimited(src, ctx, parts, result, input_delimiter, check_duplicate_keys)
        elif rules.kind is FileKind.XML:
            _build_xml(src, ctx, parts, result, check_duplicate_keys)
        else:
            _build_excel(src, ctx, parts, result, check_duplicate_keys)
    except _Abort:
        pass
    except _InputTooLarge:
        ctx.problem(Code.TOO_LARGE, f"{file_name} is larger than {limits.max_input_bytes} bytes")
    except OSError as e:
        # Disk full or a broken source stream: not the user's data, so let the caller retry. The message
        # leaves out the file path: it is a temp file, and messages end up in the user's reason.
        parts.abandon()
        err = OSError(f"building packages for {file_name!r} failed: {e.strerror or e}")
        err.errno = e.errno
        raise err from e
    if has_errors(result.problems):
        parts.abandon()
        return result
    result.packages = parts.finalise()
    return result


def _default_level(rules: FormatRules) -> int:
    return UTF16_COMPRESS_LEVEL if (rules.encoding or "").startswith("utf-16") else COMPRESS_LEVEL


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


# ------------------------------------------------------------------------------------------- delimited


def _check_columns(ctx: _Ctx, columns: list[str]) -> list[int]:
    """Header checks; returns the key column indexes for the duplicate check (empty = no check)."""
    upper = [c.strip().upper() for c in columns]
    if not columns or all(not c for c in upper):
        raise ctx.fail(Code.NO_HEADER, f"{ctx.file_name}: the first row holds no column names", row=1)
    if any(not c for c in upper):
        raise ctx.fail(Code.NO_HEADER, f"{ctx.file_name}: column {upper.index('') + 1} has no name", row=1)
    dups = sorted({c for c in upper if upper.count(c) > 1})
    if dups:
        raise ctx.fail(
            Code.DUPLICATE_COLUMN,
            f"{ctx.file_name}: columns repeated in the header: {', '.join(dups)}",
            row=1,
        )
    if ctx.template_entity is not None:
        missing = [
            m.xml_field
            for m in ctx.template_entity.entity_map_list
            if m.xml_field.strip().upper() not in upper
        ]
        if missing:
            raise ctx.fail(
                Code.HEADER_MISMATCH,
                f"{ctx.file_name}: the template maps columns the file lacks: {', '.join(missing)}",
                row=1,
            )
    elif ctx.entity.fields:
        unknown = [c for c in upper if c not in ctx.entity.fields]
        if unknown:
            ctx.problem(
                Code.UNKNOWN_FIELD,
                f"{ctx.file_name}: columns not known for entity {ctx.entity.label}: {', '.join(unknown)}",
                Severity.WARNING,
                row=1,
            )
    keys = ctx.entity.key_fields
    if not keys:
        return []
    absent = [k for k in keys if k not in upper]
    if absent:
        ctx.problem(
            Code.KEY_FIELD_MISSING,
            f"{ctx.file_name}: key column(s) {', '.join(absent)} of entity "
            f"{ctx.entity.label} are not in the header",
            Severity.WARNING,
            row=1,
        )
        return []
    return [upper.index(k) for k in keys]


def _dup_problems(ctx: _Ctx, finder: DuplicateKeyFinder) -> None:
    dups = finder.finish()
    keys = ", ".join(ctx.entity.key_fields)
    for d in dups:
        shown = f" ({keys} = {', '.join(d.key)})" if d.key is not None else ""
        ctx.problem(
            Code.DUPLICATE_KEY,
            f"{ctx.file_name}: row {d.row} repeats the key of row {d.first_row}{shown}",
            row=d.row,
        )
    extra = finder.duplicate_count - len(dups)
    if extra > 0:
        ctx.problem(Code.DUPLICATE_KEY, f"{ctx.file_name}: {extra} more rows repeat an earlier key")


def _build_delimited(
    src: BinaryIO,
    ctx: _Ctx,
    parts: _Parts,
    result: BuildResult,
    input_delimiter: str | None,
    check_keys: bool,
) -> None:
    limits, rules = ctx.limits, ctx.rules
    assert rules.encoding is not None and rules.delimiter is not None
    head = read_head(src)
    if not head:
        raise ctx.fail(Code.EMPTY_FILE, f"{ctx.file_name} is empty")
    enc = detect_encoding(head, complete=len(head) < HEAD_BYTES)
    result.source_encoding = enc.codec
    if enc.assumed:
        ctx.problem(
            Code.BAD_ENCODING,
            f"{ctx.file_name}: no byte order mark and not UTF-8; read as {enc.codec}",
            Severity.WARNING,
        )
    out_codec = rules.encoding
    redelimit = input_delimiter is not None and input_delimiter != rules.delimiter
    in_delim = input_delimiter or rules.delimiter
    splitter = RecordSplitter(max_record_chars=limits.max_record_chars)
    finder: DuplicateKeyFinder | None = None
    key_idx: list[int] = []
    header_bytes = b""
    row = 1  # record number of the last record handled (header = 1)
    warned_ascii = rules.name.upper() != "CSV"

    def handle(recs: list[str]) -> None:
        nonlocal header_bytes, row, finder, key_idx, warned_ascii
        if not recs:
            return
        if not header_bytes:
            header = recs[0].lstrip("\ufeff")
            columns = parse_fields(header, in_delim)
            key_idx = _check_columns(ctx, columns)
            if key_idx and check_keys:
                finder = DuplicateKeyFinder(limits.key_spill_threshold, limits.max_row_problems)
            parts.columns = columns
            result.columns = columns
            if redelimit:
                header = _redelimit([header], in_delim, rules.delimiter)[0]
            header_bytes = rules.bom + (header.replace("\n", "\r\n") + "\r\n").encode(out_codec)
            recs = recs[1:]
            if not recs:
                return
        if finder is not None:
            finder.add_batch(extract_keys(recs, key_idx, in_delim, splitter.quote_free), row + 1)
        if redelimit:
            recs = _redelimit(recs, in_delim, rules.delimiter)
        if not warned_ascii and not all(r.isascii() for r in recs):
            warned_ascii = True
            ctx.problem(
                Code.BAD_ENCODING,
                f"{ctx.file_name}: non-ASCII text in plain CSV is read with the format's "
                "code page; use CSV-Unicode or CSV-UTF8 if it is not UTF-8",
                Severity.WARNING,
            )
        _write_records(ctx, parts, recs, header_bytes, out_codec, row)
        row += len(recs)

    try:
        for text in iter_normalised_text(src, head, enc):
            handle(splitter.feed(text))
    except DecodeError as e:
        raise ctx.fail(Code.BAD_ENCODING, f"{ctx.file_name}: {e}") from None
    except RecordTooLongError as e:
        long_row = (row if header_bytes else 0) + e.records_before + 1
        raise ctx.fail(
            Code.RECORD_TOO_LONG, f"{ctx.file_name}: {record_too_long_message(long_row, e)}", row=long_row
        ) from None
    rest, unterminated = splitter.finish()
    if unterminated:
        raise ctx.fail(
            Code.UNTERMINATED_QUOTE,
            f"{ctx.file_name}: row {row + 1} opens a quote that never closes",
            row=row + 1,
        )
    handle(rest)
    if not header_bytes:
        raise ctx.fail(Code.EMPTY_FILE, f"{ctx.file_name} holds no text")
    if row == 1:
        raise ctx.fail(Code.NO_ROWS, f"{ctx.file_name} has a header but no data rows")
    if finder is not None:
        _dup_problems(ctx, finder)
    if parts.open:
        parts.finish_part()


def _redelimit(recs: list[str], src_delim: str, dst_delim: str) -> list[str]:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=dst_delim, lineterminator="\n")
    w.writerows(csv.reader(recs, delimiter=src_delim, strict=False))
    # Re-split with quote awareness: a rewritten field may still hold a line break. The records were
    # checked against the record length limit already; quoting adds a little, so no limit here.
    text = buf.getvalue()
    splitter = RecordSplitter(max_record_chars=len(text) + 1)
    out = splitter.feed(text)
    rest, _ = splitter.finish()
    return out + rest


def _write_records(ctx: _Ctx, parts: _Parts, recs: list[str], header: bytes, codec: str, row0: int) -> None:
    max_rows = ctx.limits.max_rows_per_package
    max_bytes = ctx.limits.max_bytes_per_package
    i = 0
    while i < len(recs):
        if not parts.open:
            parts.start(header)
        room = len(recs) - i if max_rows is None else min(len(recs) - i, max_rows - parts.rows)
        take = recs[i : i + room]
        data = _encode_records(take, codec)
        if max_bytes is not None and parts.bytes + len(data) > max_bytes:
            n, data = _fit(take, codec, max_bytes - parts.bytes)
            if n == 0:
                if parts.rows == 0:
                    raise ctx.fail(
                        Code.TOO_LARGE,
                        f"{ctx.file_name}: row {row0 + i + 1} alone is larger than {max_bytes} bytes",
                        row=row0 + i + 1,
                    )
                parts.finish_part()
                continue
            take = take[:n]
        parts.write(data, len(take))
        i += len(take)
        if (max_rows is not None and parts.rows >= max_rows) or (
            max_bytes is not None and parts.bytes >= max_bytes
        ):
            parts.finish_part()


def _encode_records(recs: list[str], codec: str) -> bytes:
    text = "\n".join(recs)
    # Quoted multi-line fields hold bare LFs; CRLF applies to them too (F&O reads lines as CRLF).
    return (text.replace("\n", "\r\n") + "\r\n").encode(codec)


def _fit(recs: list[str], codec: str, room: int) -> tuple[int, bytes]:
    """How many leading records fit in ``room`` bytes, and their bytes."""
    total = 0
    chunks = []
    for r in recs:
        b = _encode_records([r], codec)
        if total + len(b) > room:
            break
        total += len(b)
        chunks.append(b)
    return len(chunks), b"".join(chunks)


# ------------------------------------------------------------------------------------------------- XML


def _build_xml(src: BinaryIO, ctx: _Ctx, parts: _Parts, result: BuildResult, check_keys: bool) -> None:
    limits = ctx.limits
    attrs_mode = ctx.rules.xml_attributes
    finder = (
        DuplicateKeyFinder(limits.key_spill_threshold, limits.max_row_problems)
        if check_keys and ctx.entity.key_fields
        else None
    )
    depth = 0
    root: Element | None = None
    prefix = b""
    suffix = b""
    fields: dict[str, None] = {}
    row = 0
    result.source_encoding = "xml"
    try:
        for event, el in SafeET.iterparse(src, events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if depth == 1:
                    root = el
                    tag = _local(el.tag)
                    attrs = "".join(f" {_local(k)}={quoteattr(v)}" for k, v in el.attrib.items())
                    prefix = f'<?xml version="1.0" encoding="utf-8"?>\r\n<{tag}{attrs}>\r\n'.encode()
                    suffix = f"</{tag}>\r\n".encode()
                continue
            depth -= 1
            if depth != 1:
                continue
            assert root is not None
            row += 1
            names = list(el.attrib) if attrs_mode else [c.tag for c in el]
            values = dict(el.attrib) if attrs_mode else {c.tag: (c.text or "") for c in el}
            upper = {_local(k).upper(): v for k, v in values.items()}
            if finder is not None:
                finder.add(tuple([upper.get(k, "").strip().upper() for k in ctx.entity.key_fields]), row)
            el.tail = None
            data = tostring(el, encoding="unicode").encode("utf-8") + b"\r\n"
            root.remove(el)
            _write_xml_record(ctx, parts, data, prefix, suffix, fields, row)
            for n in names:
                fields.setdefault(_local(n), None)
    except DefusedXmlException as e:
        raise ctx.fail(
            Code.BAD_XML, f"{ctx.file_name}: forbidden XML construct ({type(e).__name__})"
        ) from None
    except SafeET.ParseError as e:
        raise ctx.fail(Code.BAD_XML, f"{ctx.file_name}: not well-formed XML ({e})") from None
    if root is None:
        raise ctx.fail(Code.EMPTY_FILE, f"{ctx.file_name} holds no XML")
    if row == 0:
        raise ctx.fail(Code.NO_ROWS, f"{ctx.file_name} has no records under <{_local(root.tag)}>")
    result.columns = list(fields)
    if finder is not None:
        _dup_problems(ctx, finder)
    if parts.open:
        parts.finish_part(suffix, list(fields))


def _write_xml_record(
    ctx: _Ctx, parts: _Parts, data: bytes, prefix: bytes, suffix: bytes, fields: dict[str, None], row: int
) -> None:
    max_rows, max_bytes = ctx.limits.max_rows_per_package, ctx.limits.max_bytes_per_package
    if parts.open and (
        (max_rows is not None and parts.rows >= max_rows)
        or (max_bytes is not None and parts.bytes + len(data) + len(suffix) > max_bytes)
    ):
        parts.finish_part(suffix, list(fields))
        fields.clear()
    if not parts.open:
        parts.start(prefix)
        if max_bytes is not None and len(prefix) + len(data) + len(suffix) > max_bytes:
            raise ctx.fail(
                Code.TOO_LARGE,
                f"{ctx.file_name}: record {row} alone is larger than {max_bytes} bytes",
                row=row,
            )
    parts.write(data, 1)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# ----------------------------------------------------------------------------------------------- Excel


def _build_excel(src: BinaryIO, ctx: _Ctx, parts: _Parts, result: BuildResult, check_keys: bool) -> None:
    import openpyxl  # deferred: only Excel routes pay for the import

    limits = ctx.limits
    with tempfile.NamedTemporaryFile(suffix=".xlsx", dir=ctx.out_dir) as spool:
        # openpyxl needs a seekable file; spool the stream to disk, never to memory.
        copied = _copy_limited(src, spool, limits.max_uncompressed_bytes)
        if copied is None:
            raise ctx.fail(
                Code.TOO_LARGE, f"{ctx.file_name} is larger than {limits.max_uncompressed_bytes} bytes"
            )
        if copied == 0:
            raise ctx.fail(Code.EMPTY_FILE, f"{ctx.file_name} is empty")
        spool.flush()
        try:
            # The workbook is a zip from outside: the same limits as a dropped package, and no DTD.
            early = precheck(spool.name, limits)
            if early is not None:
                raise ctx.fail(early.code, f"{ctx.file_name}: {early.message}")
            with zipfile.ZipFile(spool.name) as z:
                errors = header_problems(z, limits)
                if not errors and workbook_has_dtd(z, Budget(limits.max_uncompressed_bytes)):
                    raise ctx.fail(
                        Code.BAD_EXCEL,
                        f"{ctx.file_name}: the workbook's XML has a document type declaration (DTD), "
                        "which is not allowed",
                    )
            if errors:
                raise ctx.fail(errors[0].code, f"{ctx.file_name}: {errors[0].message}")
            wb = openpyxl.load_workbook(spool.name, read_only=True, data_only=True)
        except _Abort:
            raise
        except Exception as e:  # openpyxl raises many types for a broken workbook
            raise ctx.fail(
                Code.BAD_EXCEL, f"{ctx.file_name} is not a readable .xlsx workbook ({type(e).__name__})"
            ) from None
        try:
            ws = wb.worksheets[0]
            rows_iter = ws.iter_rows(values_only=True)
            header = next(rows_iter, None)
            columns = ["" if v is None else str(v) for v in (header or ())]
            while columns and not columns[-1]:
                columns.pop()
            key_idx = _check_columns(ctx, columns)
            result.columns = columns
            parts.columns = columns
            finder = (
                DuplicateKeyFinder(limits.key_spill_threshold, limits.max_row_problems)
                if key_idx and check_keys
                else None
            )
            n = 0
            max_rows = limits.max_rows_per_package
            split = False
            writer: _XlsxPart | None = None
            for values in rows_iter:
                if values is None or all(v is None or v == "" for v in values):
                    continue
                n += 1
                if finder is not None:
                    finder.add(tuple([_cell(values, k) for k in key_idx]), n + 1)
                if max_rows is not None and n > max_rows and not split:
                    split = True
                if split:
                    break
            if n == 0:
                raise ctx.fail(Code.NO_ROWS, f"{ctx.file_name} has a header but no data rows")
            if finder is not None and not split:
                _dup_problems(ctx, finder)
            size_ok = limits.max_bytes_per_package is None or copied <= limits.max_bytes_per_package
            if not split and size_ok:
                parts.start(b"")
                spool.seek(0)
                assert parts.stream is not None
                shutil.copyfileobj(spool, parts.stream, 1024 * 1024)
                parts.bytes = copied
                parts.rows = n
                parts.finish_part()
                return
            # Split by rows into new workbooks (values only: DMF reads nothing else).
            if finder is not None:
                finder = DuplicateKeyFinder(limits.key_spill_threshold, limits.max_row_problems)
            per_part = max_rows or n
            if not size_ok and max_rows is None:
                per_part = max(1, int(n * limits.max_bytes_per_package / copied))  # type: ignore[operator]
            row = 1
            for values in ws.iter_rows(min_row=2, values_only=True):
                if values is None or all(v is None or v == "" for v in values):
                    continue
                row += 1
                if finder is not None:
                    finder.add(tuple([_cell(values, k) for k in key_idx]), row)
                if writer is None:
                    writer = _XlsxPart(ws.title, columns)
                writer.append(values[: len(columns)])
                if writer.rows >= per_part:
                    writer.flush_into(parts, ctx)
                    writer = None
            if writer is not None:
                writer.flush_into(parts, ctx)
            if finder is not None:
                _dup_problems(ctx, finder)
        finally:
            wb.close()


def _cell(values: tuple, k: int) -> str:
    v = values[k] if k < len(values) else None
    return "" if v is None else str(v).strip().upper()


class _XlsxPart:
    def __init__(self, title: str, columns: list[str]) -> None:
        import openpyxl

        self.wb = openpyxl.Workbook(write_only=True)
        self.ws = self.wb.create_sheet(title)
        self.ws.append(columns)
        self.rows = 0

    def append(self, values: tuple) -> None:
        self.ws.append(list(values))
        self.rows += 1

    def flush_into(self, parts: _Parts, ctx: _Ctx) -> None:
        parts.start(b"")
        assert parts.stream is not None
        counter = _CountingWriter(parts.stream)
        self.wb.save(counter)  # type: ignore[arg-type]
        parts.bytes = counter.n
        parts.rows = self.rows
        parts.finish_part()


class _CountingWriter(io.RawIOBase):
    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.inner.write(b)
        self.n += len(b)
        return len(b)


def _copy_limited(src: BinaryIO, dest: BinaryIO, limit: int) -> int | None:
    n = 0
    while chunk := src.read(1024 * 1024):
        n += len(chunk)
        if n > limit:
            return None
        dest.write(chunk)
    return n
