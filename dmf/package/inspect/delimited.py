"""A delimited data file: its encoding (CSV-Unicode must be UTF-16LE with BOM), CRLF line endings (an
LF-only record end is rejected; ``build`` fixes them when it wraps raw files), the header against the
EntityMapList, the record length and duplicate keys. Streamed: one chunk at a time."""

from __future__ import annotations

import codecs
from collections.abc import Iterator

from dmf.package.inspect.scan import ContentScan
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.problems import Code, Severity
from dmf.package.textstream import (
    RecordSplitter,
    RecordTooLongError,
    extract_keys,
    parse_fields,
    record_too_long_message,
)


def scan_delimited(scan: ContentScan, chunks: Iterator[bytes]) -> int | None:
    """The data row count, or None when the file cannot be counted (the problem is recorded)."""
    first = next(chunks, b"")
    skip = _bom_length(scan, first)
    if skip is None:
        return None
    recs = _Records(scan)
    ends = _LineEnds()
    if not _feed(scan, chunks, first, skip, recs, ends):
        return None
    rest, unterminated = recs.splitter.finish()
    if unterminated:
        scan.add(
            Code.UNTERMINATED_QUOTE, f"row {recs.row + 1} opens a quote that never closes", row=recs.row + 1
        )
        return None
    recs.handle(rest)
    if ends.bare_lfs > recs.inner_breaks:
        # Some record ends with LF only (an LF inside a quoted field alone is data, not a row end).
        scan.add(Code.LF_LINE_ENDINGS, f"line {ends.first_lf_line} ends with LF only; F&O needs CRLF (it reports a "
                 "misleading mapping error otherwise)", row=ends.first_lf_line)  # fmt: skip
    if recs.columns is None:
        scan.add(Code.NO_HEADER, "the file holds no header row")
        return None
    if recs.finder is not None:
        scan.report_dups(recs.finder)
    if recs.row == 1:
        scan.add(Code.NO_ROWS, "the file has a header but no data rows", Severity.WARNING)
    return recs.row - 1


def _bom_length(scan: ContentScan, first: bytes) -> int | None:
    """How many leading bytes are a byte order mark; None if the first bytes do not fit the format."""
    rules = scan.rules
    if rules.bom == b"\xff\xfe" and not first.startswith(b"\xff\xfe"):
        scan.add(
            Code.BAD_ENCODING, f"source format {rules.name} needs UTF-16LE with a byte order mark (FF FE)"
        )
        return None
    if rules.encoding == "utf-8" and first.startswith((b"\xff\xfe", b"\xfe\xff")):
        scan.add(
            Code.BAD_ENCODING,
            f"the file is UTF-16 but source format {rules.name} expects 8-bit text (use CSV-Unicode)",
        )
        return None
    if rules.encoding == "utf-8" and first.startswith(codecs.BOM_UTF8):
        return 3
    return len(rules.bom) if rules.bom and first.startswith(rules.bom) else 0


def _feed(
    scan: ContentScan, chunks: Iterator[bytes], first: bytes, skip: int, recs: _Records, ends: _LineEnds
) -> bool:
    """Decode every chunk and feed its records; False when the file cannot be read on (problem recorded)."""
    codec = scan.rules.encoding
    assert codec is not None
    dec = codecs.getincrementaldecoder(codec)("strict")
    data: bytes | None = first[skip:]
    offset = skip
    try:
        while True:
            final = data is None
            try:
                text = dec.decode(b"" if data is None else data, final=final)
            except UnicodeDecodeError as e:
                scan.add(
                    Code.BAD_ENCODING,
                    f"bytes at offset {offset + e.start} are not valid {codec} (source format {scan.rules.name})",
                )
                return False
            if data is not None:
                offset += len(data)
            recs.handle(recs.splitter.feed(ends.normalise(text, final)))
            if final:
                return True
            data = next(chunks, None)
    except RecordTooLongError as e:
        long_row = (recs.row if recs.columns is not None else 0) + e.records_before + 1
        scan.add(Code.RECORD_TOO_LONG, record_too_long_message(long_row, e), row=long_row)
        return False


class _LineEnds:
    """Counts LF-only line ends (and where the first is) and normalises every line end to LF."""

    def __init__(self) -> None:
        self.lines_seen = 0  # newlines before the current chunk, for the first LF-only line number
        self.prev_cr = False
        self.first_lf_line: int | None = None
        self.bare_lfs = 0  # LF not preceded by CR, anywhere

    def normalise(self, text: str, final: bool) -> str:
        if "\n" in text:
            n_bare = text.count("\n") - text.count("\r\n") - (self.prev_cr and text.startswith("\n"))
            if n_bare and self.first_lf_line is None:
                pos = _first_bare_lf(text, self.prev_cr)
                self.first_lf_line = self.lines_seen + text.count("\n", 0, pos) + 1
            self.bare_lfs += n_bare
        self.lines_seen += text.count("\n")
        if self.prev_cr:
            text = "\r" + text
        # A CR at the chunk end may pair with an LF at the next start: hold it back.
        self.prev_cr = not final and text.endswith("\r")
        if self.prev_cr:
            text = text[:-1]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text


class _Records:
    """Takes the records as the splitter yields them: the header first, then batches of data records."""

    def __init__(self, scan: ContentScan) -> None:
        self.scan = scan
        self.delim = scan.rules.delimiter or ","
        self.splitter = RecordSplitter(max_record_chars=scan.limits.max_record_chars)
        self.inner_breaks = 0  # line breaks inside quoted fields
        self.columns: list[str] | None = None
        self.key_idx: list[int] | None = None
        self.finder: DuplicateKeyFinder | None = None
        self.row = 1

    def handle(self, recs: list[str]) -> None:
        if not recs:
            return
        if not self.splitter.quote_free:
            self.inner_breaks += sum(r.count("\n") for r in recs)
        if self.columns is None:
            self.columns = parse_fields(recs[0].lstrip("\ufeff"), self.delim)
            self.key_idx = self.scan.mapped_key_columns(self.columns)
            self.finder = self.scan.finder() if self.key_idx else None
            recs = recs[1:]
        if self.finder is not None and self.key_idx:
            self.finder.add_batch(
                extract_keys(recs, self.key_idx, self.delim, self.splitter.quote_free), self.row + 1
            )
        self.row += len(recs)


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
