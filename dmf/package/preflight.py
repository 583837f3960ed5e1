"""Pre-flight: a raw data file (or a package's data files) checked against the environment's entity metadata
(``dmf.fno.metadata.Snapshot``) before anything is sent to F&O.

Checks and the metadata each uses (see docs/INBOUND.md, "Pre-flight"):

- unknown entity: the label has no ``DataManagementTargetMapEntities`` rows; closest labels/names suggested;
- unknown columns: a header column that is not one of the label's staging fields (``StagingField``);
- mandatory fields: ``IsMandatory``/``IsKey`` (``PublicEntities``) or ``IsRequired`` (target map), missing from
  the header or empty in a row (``dataAreaId`` excepted: F&O fills it from the import's legal entity);
- types: ``DataType`` (``PublicEntities``): Int32/Int64, Real, Date and UtcDateTime in the route's declared
  format, Enum members (``PublicEnumerations``: name or value; NoYes is an enum), Guid;
- lengths: ``FieldLength`` (target map), strings only; no length known, no check;
- XLSX: numbers in string fields (leading zeros lost), formulas (cached value or rejected, per route),
  Excel serial numbers in date fields, the dummy padding text of columns over 255 characters.

Bounded memory: delimited files are read as the build reads them (one chunk plus one batch of records); each
batch is checked column by column with C-speed scans, falling back to row by row only where a column fails.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

from dmf.fno.metadata import EntityMeta, FieldMeta, Snapshot
from dmf.package.formats import FileKind, FormatRules
from dmf.package.problems import Code, Problem, Severity
from dmf.package.textstream import HEAD_BYTES, DecodeError, detect_encoding, iter_normalised_text, read_head

MODES = ("off", "warn", "enforce")
_INT = re.compile(r"[+-]?\d+")
_REAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
DUMMY_MIN_CHARS = 256


@dataclass(frozen=True)
class PreflightOptions:
    mode: str = "warn"  # off | warn | enforce
    date_format: str = "iso"  # "iso" or a strptime format, e.g. "%d/%m/%Y"
    datetime_format: str = "iso"
    xlsx_formulas: str = "value"  # value (use the cached value, with a warning) | reject
    max_listed: int = 20  # problems listed in the outcome and reason file


@dataclass
class PreflightResult:
    problems: list[Problem] = field(default_factory=list)  # the first ``max_listed``, in row order
    counts: dict[str, int] = field(default_factory=dict)  # every problem counted by code
    rows: int = 0
    checked: bool = True  # False: no metadata, nothing was checked

    @property
    def errors(self) -> int:
        return sum(1 for p in self.problems if p.severity is Severity.ERROR)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no problems"
        more = self.total - len(self.problems)
        return ", ".join(f"{n} {c}" for c, n in sorted(self.counts.items())) + (
            f" ({more} more not listed)" if more > 0 else ""
        )


class _Sink:
    def __init__(self, opts: PreflightOptions, file: str | None, entity: str) -> None:
        self.opts = opts
        self.file = file
        self.entity = entity
        self.result = PreflightResult()
        self._warned: set[tuple[str, str]] = set()

    def add(self, code: Code, row: int | None, column: str | None, message: str, sev=Severity.ERROR) -> None:
        self.result.counts[code.value] = self.result.counts.get(code.value, 0) + 1
        if len(self.result.problems) >= self.opts.max_listed:
            return
        where = ", ".join(x for x in (f"row {row}" if row else "", f"column {column}" if column else "") if x)
        text = f"{self.file}: {where}: {message}" if where else f"{self.file}: {message}"
        self.result.problems.append(Problem(code, text, sev, file=self.file, entity=self.entity, row=row))

    def once(self, code: Code, row: int, column: str, message: str, sev=Severity.WARNING) -> None:
        """A warning reported for its first row per column only (counted every time)."""
        if (code.value, column) in self._warned:
            self.result.counts[code.value] = self.result.counts.get(code.value, 0) + 1
            return
        self._warned.add((code.value, column))
        self.add(code, row, column, message, sev)


# -- value checks --------------------------------------------------------------------------------------
def _parse_date(fmt: str) -> Callable[[str], object]:
    if fmt == "iso":
        return lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).date()
    return lambda v: datetime.strptime(v, fmt).date()


def _parse_datetime(fmt: str) -> Callable[[str], object]:
    if fmt == "iso":
        return lambda v: datetime.fromisoformat(v.replace("Z", "+00:00"))
    return lambda v: datetime.strptime(v, fmt)


class ColumnCheck:
    """Checks one column's values; ``batch`` is fast when all is well, ``one`` explains a value."""

    def __init__(self, column: str, f: FieldMeta, snap: Snapshot, opts: PreflightOptions) -> None:
        self.column = column
        self.f = f
        self.kind = f.type
        self.mandatory = f.mandatory
        self.length = f.length if f.type in ("string", "other") else None
        self.members: set[str] = set()
        self.member_names: list[str] = []
        if f.type == "enum" and f.enum in snap.enums:
            self.member_names = [m for m, _ in snap.enums[f.enum]]
            self.members = {m.casefold() for m in self.member_names} | {str(v) for _, v in snap.enums[f.enum]}
        elif f.type == "enum":
            self.kind = "string"
        self.fmt = opts.date_format if f.type == "date" else opts.datetime_format
        self._parse = (
            _parse_date(opts.date_format)
            if f.type == "date"
            else _parse_datetime(opts.datetime_format)
            if f.type == "datetime"
            else None
        )
        self._good_distinct: set[str] = set()

    def fast_pattern(self, d: str) -> str | None:
        """A regex accepting only values that pass ``one`` (a subset: what it refuses goes the exact way), or
        None when the column has no such pattern (a date format other than ISO)."""
        bare, quoted = f'[^{d}\\n"]', '[^"\\n]'
        k, m = self.kind, self.mandatory
        opt = "" if m else "?"
        if k in ("string", "other"):
            n = "" if self.length is None else str(self.length)
            if m:
                rest = "*+" if self.length is None else f"{{0,{max(self.length - 1, 0)}}}+"
                if self.length == 0:
                    return None
                return f'(?:[^{d}\\n"\\s]{bare}{rest}|"[^"\\n\\s]{quoted}{rest}")'
            rep = "*+" if self.length is None else f"{{0,{n}}}+"
            return f'(?:{bare}{rep}|"{quoted}{rep}")'
        if k == "int":
            return f"(?:\\d++){opt}"
        if k == "real":
            return f"(?:\\d++(?:\\.\\d++)?){opt}"
        # Every day that exists in every year, and 29 February of leap years.
        date = (
            "(?:[1-9]\\d{3}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\\d|2[0-8])"
            "|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
            "|(?:[1-9]\\d(?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)-02-29)"
        )
        if k == "date" and self.fmt == "iso":
            return f"(?:{date}){opt}"
        if k == "datetime" and self.fmt == "iso":
            return f"(?:{date}T(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\dZ?){opt}"
        if k == "enum" and self.member_names:
            names = "|".join(re.escape(x) for x in sorted(self.member_names, key=len, reverse=True))
            return f"(?>{names}){opt}"
        if k == "guid":
            h = "[0-9A-Fa-f]"
            return f"(?:{h}{{8}}-{h}{{4}}-{h}{{4}}-{h}{{4}}-{h}{{12}}){opt}"
        return None

    @property
    def needed(self) -> bool:
        return (
            self.mandatory
            or self.length is not None
            or self.kind in ("int", "real", "date", "datetime", "enum", "guid")
        )

    def batch_ok(self, col: tuple[str, ...]) -> bool:
        """True when every value passes (cheap C-level scans; a False sends the column row by row)."""
        if self.mandatory and (not all(col) or any(map(str.isspace, col))):
            return False
        if self.length is not None and col and max(map(len, col)) > self.length:
            return False
        k = self.kind
        if k == "int":
            # Plain digits everywhere (the usual case): one join and one scan. Else the regex per value.
            if all(col):
                joined = "".join(col)
                if joined.isdigit() and joined.isascii():
                    return True
            return all(map(_INT.fullmatch, col))
        if k == "real":
            if all(col) and "." not in col and max(map(str.count, col, repeat("."))) <= 1:
                joined = "".join(col).replace(".", "")
                if joined.isdigit() and joined.isascii():
                    return True
            return all(map(_REAL.fullmatch, col))
        if k in ("enum", "date", "datetime", "guid"):
            distinct = set(col) - self._good_distinct
            for v in distinct:
                if self.one(v) is not None:
                    return False
            if len(self._good_distinct) < 10_000:
                self._good_distinct |= distinct
        return True

    def one(self, value: str) -> tuple[Code, str] | None:
        v = value.strip()
        if not v:
            if self.mandatory:
                return Code.MANDATORY_MISSING, f"{self.f.staging} is mandatory but empty"
            return None
        k = self.kind
        if k == "int":
            if not _INT.fullmatch(v):
                return Code.BAD_VALUE, f"{v!r} is not an integer ({self.f.staging})"
        elif k == "real":
            if not _REAL.fullmatch(v):
                return Code.BAD_VALUE, f"{v!r} is not a number ({self.f.staging})"
        elif k in ("date", "datetime"):
            try:
                assert self._parse is not None
                self._parse(v)
            except ValueError:
                return Code.BAD_VALUE, (
                    f"{v!r} is not a {'date' if k == 'date' else 'date and time'} in the route's format "
                    f"{self.fmt} ({self.f.staging})"
                )
        elif k == "enum":
            if v.casefold() not in self.members and v not in self.members:
                return Code.BAD_VALUE, (
                    f"{v!r} is not a member of enum {self.f.enum} ({', '.join(self.member_names[:8])}"
                    f"{'…' if len(self.member_names) > 8 else ''}) ({self.f.staging})"
                )
        elif k == "guid":
            try:
                uuid.UUID(v)
            except ValueError:
                return Code.BAD_VALUE, f"{v!r} is not a GUID ({self.f.staging})"
        if self.length is not None and len(v) > self.length:
            return Code.VALUE_TOO_LONG, (f"{len(v)} characters, longer than {self.f.staging}'s {self.length}")
        return None


# -- header --------------------------------------------------------------------------------------------
def check_entity(snap: Snapshot, label: str, sink: _Sink) -> EntityMeta | None:
    ent = snap.entity(label)
    if ent is None:
        near = snap.suggestions(label)
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        sink.add(
            Code.UNKNOWN_ENTITY, None, None, f"entity {label!r} does not exist in {snap.environment}{hint}"
        )
    return ent


def header_checks(
    ent: EntityMeta,
    columns: list[str],
    snap: Snapshot,
    opts: PreflightOptions,
    sink: _Sink,
    mapping: dict[str, str] | None = None,
) -> list[tuple[int, ColumnCheck]]:
    """Unknown columns and missing mandatory ones (row 1); returns the checks for the data rows.
    ``mapping``: file column (upper) → staging field, from a package's EntityMapList (identity otherwise)."""
    checks: list[tuple[int, ColumnCheck]] = []
    seen: set[str] = set()
    unknown = []
    for i, c in enumerate(columns):
        col = c.strip().lstrip("\ufeff").upper()
        if mapping is not None:
            staging = mapping.get(col)
            if staging is None:
                continue  # not mapped: DMF does not read it
        else:
            staging = col
        f = ent.fields.get(staging)
        if f is None:
            unknown.append(staging if mapping is not None else c.strip())
            continue
        seen.add(staging)
        chk = ColumnCheck(c.strip(), f, snap, opts)
        if chk.needed:
            checks.append((i, chk))
    if unknown:
        near = []
        for u in unknown[:5]:
            m = difflib.get_close_matches(u.upper(), list(ent.fields), n=1, cutoff=0.6)
            near.append(f"{u} (did you mean {m[0]}?)" if m else u)
        sink.add(
            Code.UNKNOWN_FIELD,
            1,
            ", ".join(unknown[:5]),
            f"column(s) not in entity {ent.label}: {', '.join(near)}",
        )
    missing = [f.staging for f in ent.fields.values() if f.mandatory and f.staging not in seen]
    if missing:
        sink.add(
            Code.MANDATORY_MISSING,
            1,
            ", ".join(missing[:5]),
            f"mandatory field(s) of {ent.label} missing from the header: {', '.join(missing)}",
        )
    return checks


def check_rows(
    rows: list[list[str]], row0: int, checks: list[tuple[int, ColumnCheck]], width: int, sink: _Sink
) -> None:
    """``rows`` are data rows numbered from ``row0``; columns beyond a short row count as empty."""
    if not checks or not rows:
        return
    if set(map(len, rows)) != {width}:
        rows = [r + [""] * (width - len(r)) if len(r) < width else r for r in rows]
    check_cols(list(zip(*rows, strict=False)), row0, checks, sink)


def check_cols(cols: list, row0: int, checks: list[tuple[int, ColumnCheck]], sink: _Sink) -> None:
    """``cols[i]`` holds column i of consecutive data rows numbered from ``row0``."""
    found: list[tuple[int, int, Code, str, str]] = []
    for i, chk in checks:
        col = cols[i]
        if chk.batch_ok(col):
            continue
        for n, v in enumerate(col):
            bad = chk.one(v)
            if bad is not None:
                found.append((row0 + n, i, bad[0], chk.column, bad[1]))
    found.sort(key=lambda t: (t[0], t[1]))
    for row, _i, code, column, msg in found:
        sink.add(code, row, column, msg)


# -- delimited -------------------------------------------------------------------------------------------
class _TooLong(Exception):
    pass


def fast_rows(checks: list[tuple[int, ColumnCheck]], width: int, delimiter: str) -> re.Pattern[str] | None:
    """One regex for a run of whole records whose every value passes: a run it matches needs no other look."""
    d = "\\" + delimiter if delimiter in "\\]^-" else delimiter  # inside a character class
    by_col = dict(checks)
    parts = []
    for i in range(width):
        chk = by_col.get(i)
        if chk is None:
            parts.append(f'(?:[^{d}\\n"]*+|"(?:[^"\\n]|"")*+")')
            continue
        pat = chk.fast_pattern(d)
        if pat is None:
            return None
        parts.append(pat)
    row = re.escape(delimiter).join(parts)
    try:
        return re.compile(f"(?>{row}\\n)*+{row}")
    except re.error:
        return None


_LAST = itemgetter(slice(-1, None))
_FIRST = itemgetter(slice(0, 1))


def _columns_fast(body: str, delimiter: str, width: int) -> list | None:
    """The columns of a run of records by C-level splitting, when that is exact: no blank line, every line
    ``width`` fields, and quotes (if any) only around whole fields holding no delimiter, line break or
    escaped quote. None: use the csv module."""
    if '"' in body:
        if '""' in body:
            return None
        segs = body.split('"')
        inside = "".join(segs[1::2])
        if delimiter in inside or "\n" in inside:
            return None
        # Every quote opens a field (a boundary before it) or closes one (a boundary after it).
        bounds = {"", delimiter, "\n"}
        if not set(map(_LAST, segs[0:-1:2])) <= bounds or not set(map(_FIRST, segs[2::2])) <= bounds:
            return None
        body = body.replace('"', "")
    lines = body.split("\n")
    if "" in lines or set(map(str.count, lines, repeat(delimiter))) != {width - 1}:
        return None
    flat = body.replace("\n", delimiter).split(delimiter)
    return [flat[i::width] for i in range(width)]


def _count_records(body: str, delimiter: str) -> int:
    return sum(1 for r in csv.reader(io.StringIO(body), delimiter=delimiter, strict=False) if r)


class _Chunker:
    """Cuts normalised text into runs of complete records: up to the last line end outside quotes (the
    count of quote characters before it is even, "" escapes counting two). What follows waits for the next
    chunk; more than ``limit`` characters of it stops the read (the build reports the record as too long),
    so memory holds one chunk plus one record at most."""

    def __init__(self, limit: int) -> None:
        self.carry = ""
        self.limit = limit

    def feed(self, text: str) -> str:
        text = self.carry + text if self.carry else text
        k = text.rfind("\n")
        quotes = text.count('"', 0, k) if k >= 0 else 0
        while k >= 0 and quotes & 1:
            k2 = text.rfind("\n", 0, k)
            quotes -= text.count('"', k2 + 1 if k2 >= 0 else 0, k)
            k = k2
        if k < 0:
            self.carry = text
            body = ""
        else:
            self.carry = text[k + 1 :]
            body = text[:k]
        if len(self.carry) > self.limit:
            raise _TooLong
        return body


def preflight_delimited(
    src: BinaryIO,
    *,
    snapshot: Snapshot,
    label: str,
    delimiter: str,
    opts: PreflightOptions,
    file_name: str,
    max_record_chars: int,
    mapping: dict[str, str] | None = None,
) -> PreflightResult:
    """Stream a delimited file (any encoding the build reads) and check every row. Decoding and record
    length problems are left to the build, which reports them."""
    sink = _Sink(opts, file_name, label)
    ent = check_entity(snapshot, label, sink)
    if ent is None:
        return sink.result
    head = read_head(src)
    if not head:
        return sink.result
    enc = detect_encoding(head, complete=len(head) < HEAD_BYTES)
    chunker = _Chunker(max_record_chars)
    checks: list[tuple[int, ColumnCheck]] | None = None
    width = 0
    row = 1

    fast: re.Pattern[str] | None = None

    def handle(body: str) -> None:
        nonlocal checks, width, row, fast
        if not body:
            return
        if checks is None:
            first, _, body = body.partition("\n")
            while not first and body:
                first, _, body = body.partition("\n")
            header = next(csv.reader([first.lstrip("\ufeff")], delimiter=delimiter, strict=False), [])
            width = len(header)
            checks = header_checks(ent, header, snapshot, opts, sink, mapping)
            fast = fast_rows(checks, width, delimiter) if checks else None
            if not body:
                return
        if not checks:
            row += (
                sum(1 for ln in body.split("\n") if ln)
                if '"' not in body
                else _count_records(body, delimiter)
            )
            return
        if fast is not None and fast.fullmatch(body):
            row += body.count("\n") + 1
            return
        cols = _columns_fast(body, delimiter, width)
        if cols is not None:
            check_cols(cols, row + 1, checks, sink)
            row += len(cols[0])
            return
        rows = list(csv.reader(io.StringIO(body), delimiter=delimiter, strict=False))
        if [] in rows:  # blank lines: not records (as the build counts them)
            rows = [r for r in rows if r]
        check_rows(rows, row + 1, checks, width, sink)
        row += len(rows)

    try:
        for text in iter_normalised_text(src, head, enc):
            handle(chunker.feed(text))
        handle(chunker.carry)
    except (DecodeError, _TooLong):
        pass  # the build names these (with the row), reading the same bytes
    sink.result.rows = max(0, row - 1)
    return sink.result


# -- XLSX ------------------------------------------------------------------------------------------------
def _number_text(v: float | int) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def _is_dummy(text: str) -> bool:
    """Excel exports pad columns over 255 characters with dummy text (one character repeated) so the
    OLE DB driver reads them as memo fields (dmf-capabilities: "Delete before reimporting")."""
    return len(text) >= DUMMY_MIN_CHARS and text.strip() and len(set(text.strip())) == 1


def xlsx_rows(
    path: str,
    *,
    ent: EntityMeta | None,
    opts: PreflightOptions,
    sink: _Sink,
    for_csv: bool,
) -> Iterator[tuple[int, list[str]]]:
    """The first sheet's rows as text (header first, row numbers as Excel shows them), with the XLSX-only
    findings recorded in ``sink``. ``for_csv``: values become CSV text (dates in the route's format, serial
    numbers in date fields converted); otherwise as F&O's Excel reader would see them."""
    import openpyxl

    wb_f = openpyxl.load_workbook(path, read_only=True, data_only=False)
    wb_v = openpyxl.load_workbook(path, read_only=True, data_only=True)
    cells = _XlsxText(sink, opts, for_csv)
    try:
        ws_f, ws_v = wb_f.worksheets[0], wb_v.worksheets[0]
        fields: list[FieldMeta | None] = []
        header: list[str] = []
        for n, (rf, rv) in enumerate(
            zip(ws_f.iter_rows(values_only=True), ws_v.iter_rows(values_only=True), strict=False), start=1
        ):
            if n == 1:
                header = ["" if v is None else str(v) for v in rv]
                while header and not header[-1]:
                    header.pop()
                fields = [ent.fields.get(h.strip().upper()) if ent else None for h in header]
                yield 1, header
                continue
            if all(v is None or v == "" for v in rv):
                continue
            out: list[str] = []
            for i, col in enumerate(header):
                raw = rf[i] if i < len(rf) else None
                val = rv[i] if i < len(rv) else None
                cells.formula(raw, val, n, col)
                out.append(cells.text(val, fields[i] if i < len(fields) else None, n, col))
            yield n, out
    finally:
        wb_f.close()
        wb_v.close()


class _XlsxText:
    """A cell's value as text (CSV text, or as F&O's Excel reader sees it), with the XLSX-only findings
    recorded in the sink on the way."""

    def __init__(self, sink: _Sink, opts: PreflightOptions, for_csv: bool) -> None:
        from openpyxl.utils.datetime import from_excel

        self.sink, self.opts, self.for_csv, self.from_excel = sink, opts, for_csv, from_excel
        self.date_fmt = "%Y-%m-%d" if opts.date_format == "iso" else opts.date_format
        self.dt_fmt = "%Y-%m-%dT%H:%M:%S" if opts.datetime_format == "iso" else opts.datetime_format

    def formula(self, raw: object, val: object, n: int, col: str) -> None:
        if not (isinstance(raw, str) and raw.startswith("=")):
            return
        if self.opts.xlsx_formulas == "reject":
            self.sink.add(Code.EXCEL_FORMULA, n, col, f"a formula ({raw[:40]}); paste values instead")
        elif val is None:
            self.sink.add(Code.EXCEL_FORMULA, n, col, "a formula with no saved value; paste values instead")
        else:
            self.sink.once(Code.EXCEL_FORMULA, n, col, "formulas: their saved values are used")

    def text(self, val: object, f: FieldMeta | None, n: int, col: str) -> str:
        if val is None:
            return ""
        if isinstance(val, bool):
            return "Yes" if val else "No"
        if isinstance(val, datetime):
            if (f is not None and f.type == "date") or val.time() == datetime.min.time():
                return val.strftime(self.date_fmt) if self.for_csv else val.date().isoformat()
            return val.strftime(self.dt_fmt) if self.for_csv else val.isoformat()
        if isinstance(val, date):
            return val.strftime(self.date_fmt) if self.for_csv else val.isoformat()
        if isinstance(val, int | float):
            return self._number(val, f, n, col)
        text = str(val)
        if _is_dummy(text):
            self.sink.add(
                Code.EXCEL_DUMMY_TEXT,
                n,
                col,
                f"Excel's dummy padding text ({len(text)} × {text.strip()[0]!r}); delete it before importing",
            )
        return text

    def _number(self, val: int | float, f: FieldMeta | None, n: int, col: str) -> str:
        if f is not None and f.type in ("date", "datetime"):
            if not self.for_csv:
                self.sink.add(
                    Code.EXCEL_SERIAL_DATE,
                    n,
                    col,
                    f"{_number_text(val)} is an Excel serial number, not a date: format the column as a date",
                )
                return _number_text(val)
            try:
                d = self.from_excel(val)
            except (ValueError, OverflowError, TypeError):
                return _number_text(val)
            self.sink.once(Code.EXCEL_SERIAL_DATE, n, col, "Excel serial numbers converted to dates")
            return d.strftime(self.date_fmt if f.type == "date" else self.dt_fmt)
        if f is not None and f.type in ("string", "other"):
            self.sink.once(
                Code.EXCEL_NUMBER_AS_TEXT,
                n,
                col,
                f"a number ({_number_text(val)}) in text field {f.staging}: leading zeros are lost; "
                "format the column as Text",
            )
        return _number_text(val)


def preflight_xlsx(
    path: str,
    *,
    snapshot: Snapshot | None,
    label: str,
    opts: PreflightOptions,
    file_name: str,
    csv_out: BinaryIO | None = None,
) -> PreflightResult:
    """Check a workbook (and, with ``csv_out``, write it as CSV-Unicode: UTF-16LE with BOM, CRLF)."""
    sink = _Sink(opts, file_name, label)
    ent = check_entity(snapshot, label, sink) if snapshot is not None else None
    check = snapshot is not None and ent is not None
    writer = None
    text_out = None
    if csv_out is not None:
        text_out = io.TextIOWrapper(csv_out, encoding="utf-16-le", newline="", write_through=False)
        text_out.write("\ufeff")
        writer = csv.writer(text_out, lineterminator="\r\n")
    checks: list[tuple[int, ColumnCheck]] = []
    width = 0
    batch: list[list[str]] = []
    row0 = 2
    rows = 0
    try:
        for n, values in xlsx_rows(path, ent=ent, opts=opts, sink=sink, for_csv=csv_out is not None):
            if writer is not None:
                writer.writerow(values)
            if n == 1:
                width = len(values)
                if check:
                    assert ent is not None and snapshot is not None
                    checks = header_checks(ent, values, snapshot, opts, sink)
                continue
            rows += 1
            if check and checks:
                if not batch:
                    row0 = n
                if batch and n != row0 + len(batch):  # blank rows skipped: keep numbering exact
                    check_rows(batch, row0, checks, width, sink)
                    batch, row0 = [], n
                batch.append(values)
                if len(batch) >= 5000:
                    check_rows(batch, row0, checks, width, sink)
                    batch = []
        if batch:
            check_rows(batch, row0, checks, width, sink)
    finally:
        if text_out is not None:
            text_out.flush()
            text_out.detach()
    sink.result.rows = rows
    sink.result.checked = check
    return sink.result


def preflight_raw(
    path: Path,
    rules: FormatRules,
    snapshot: Snapshot | None,
    opts: PreflightOptions,
    named: tuple[str, str],
    max_record_chars: int,
    csv_out: BinaryIO | None = None,
) -> PreflightResult | None:
    """A raw file by its format (``named``: the file name reported, the entity label): a delimited file (with
    a snapshot) or a workbook (``csv_out``: its rows as CSV-Unicode); None when F&O alone checks it (XML)."""
    file_name, label = named
    if rules.kind is FileKind.DELIMITED and snapshot is not None:
        with path.open("rb") as f:
            delimiter = rules.delimiter or ","
            return preflight_delimited(
                f,
                snapshot=snapshot,
                label=label,
                delimiter=delimiter,
                opts=opts,
                file_name=file_name,
                max_record_chars=max_record_chars,
            )
    if rules.kind is FileKind.EXCEL:
        return preflight_xlsx(
            str(path), snapshot=snapshot, label=label, opts=opts, file_name=file_name, csv_out=csv_out
        )
    return None


def skipped(reason: str, file_name: str, label: str) -> PreflightResult:
    r = PreflightResult(checked=False)
    r.problems.append(
        Problem(
            Code.PREFLIGHT_SKIPPED,
            f"{file_name}: pre-flight skipped: {reason}",
            Severity.WARNING,
            file_name,
            label,
        )
    )
    r.counts[Code.PREFLIGHT_SKIPPED.value] = 1
    return r


def as_outcome(result: PreflightResult, mode: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) as lines for the outcome row and reason file: in ``warn`` mode every problem is a
    warning; in ``enforce`` mode errors reject."""
    errs, warns = [], []
    for p in result.problems:
        line = f"{p.code}: {p.message}"
        if mode == "enforce" and p.severity is Severity.ERROR:
            errs.append(line)
        else:
            warns.append(line)
    if errs:
        errs.insert(0, f"pre-flight found {result.summary()}; first problems by row:")
    return errs, warns


def mapping_from(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {a.strip().upper(): b.strip().upper() for a, b in pairs}


def preflight_member(
    z: zipfile.ZipFile,
    member: str,
    entity: Any,
    rules: Any,
    *,
    snapshot: Snapshot,
    opts: PreflightOptions,
    max_record_chars: int,
) -> PreflightResult:
    """Pre-flight of one data file inside a package (delimited, or Excel through a temp copy), through its
    entity's EntityMapList; ``entity`` is the manifest entry, ``rules`` its source format's rules."""
    from dmf.package.formats import FileKind

    mapping = mapping_from((m.xml_field, m.entity_field) for m in entity.entity_map_list) or None
    if rules.kind is FileKind.DELIMITED:
        with z.open(member) as f:
            return preflight_delimited(
                f,  # type: ignore[arg-type]
                snapshot=snapshot,
                label=entity.entity_name,
                delimiter=rules.delimiter or ",",
                opts=opts,
                file_name=member,
                max_record_chars=max_record_chars,
                mapping=mapping,
            )
    with tempfile.NamedTemporaryFile(suffix=".xlsx") as tmp:
        with z.open(member) as f:
            while chunk := f.read(1 << 20):
                tmp.write(chunk)
        tmp.flush()
        return preflight_xlsx(
            tmp.name, snapshot=snapshot, label=entity.entity_name, opts=opts, file_name=member
        )


def package_data_files(z: zipfile.ZipFile, entities: Iterable[Any]) -> Iterator[tuple[Any, str | None, Any]]:
    """Each manifest entity with its data file's name in ``z`` and its format's rules. The name is None
    when pre-flight does not read the file (XML, or missing: the package check reports that); entities of
    an unknown format are left out (the package check rejects them)."""
    from dmf.package.formats import FileKind, UnknownFormatError, format_rules

    names = {n.casefold(): n for n in z.namelist()}
    for ent in entities:
        member = names.get((ent.input_file_path or "").casefold())
        try:
            rules = format_rules(ent.source_format)
        except UnknownFormatError:
            continue
        yield ent, (None if rules.kind is FileKind.XML else member), rules
