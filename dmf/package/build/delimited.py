"""Delimited files (CSV, TSV, …): transcoded to the format's encoding, CRLF line endings, split by rows and
bytes with the header repeated in every part; re-delimited when the input uses another delimiter."""

from __future__ import annotations

import csv
import io
from typing import BinaryIO

from dmf.package.build.checks import check_columns, dup_problems
from dmf.package.build.context import BuildResult, Ctx
from dmf.package.build.parts import Parts
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.problems import Code, Severity
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


def build_delimited(
    src: BinaryIO,
    ctx: Ctx,
    parts: Parts,
    result: BuildResult,
    input_delimiter: str | None,
    check_keys: bool,
) -> None:
    assert ctx.rules.encoding is not None and ctx.rules.delimiter is not None
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
    recs = _Records(ctx, parts, result, input_delimiter, check_keys)
    splitter = recs.splitter
    try:
        for text in iter_normalised_text(src, head, enc):
            recs.handle(splitter.feed(text))
    except DecodeError as e:
        raise ctx.fail(Code.BAD_ENCODING, f"{ctx.file_name}: {e}") from None
    except RecordTooLongError as e:
        long_row = (recs.row if recs.header_bytes else 0) + e.records_before + 1
        raise ctx.fail(
            Code.RECORD_TOO_LONG, f"{ctx.file_name}: {record_too_long_message(long_row, e)}", row=long_row
        ) from None
    rest, unterminated = splitter.finish()
    if unterminated:
        raise ctx.fail(
            Code.UNTERMINATED_QUOTE,
            f"{ctx.file_name}: row {recs.row + 1} opens a quote that never closes",
            row=recs.row + 1,
        )
    recs.handle(rest)
    if not recs.header_bytes:
        raise ctx.fail(Code.EMPTY_FILE, f"{ctx.file_name} holds no text")
    if recs.row == 1:
        raise ctx.fail(Code.NO_ROWS, f"{ctx.file_name} has a header but no data rows")
    if recs.finder is not None:
        dup_problems(ctx, recs.finder)
    if parts.open:
        parts.finish_part()


class _Records:
    """Takes the records as the splitter yields them: the header first, then batches of data records."""

    def __init__(
        self, ctx: Ctx, parts: Parts, result: BuildResult, input_delimiter: str | None, check_keys: bool
    ) -> None:
        rules = ctx.rules
        assert rules.encoding is not None and rules.delimiter is not None
        self.ctx, self.parts, self.result, self.check_keys = ctx, parts, result, check_keys
        self.out_codec: str = rules.encoding
        self.out_delim: str = rules.delimiter
        self.redelimit = input_delimiter is not None and input_delimiter != rules.delimiter
        self.in_delim: str = input_delimiter or rules.delimiter
        self.splitter = RecordSplitter(max_record_chars=ctx.limits.max_record_chars)
        self.finder: DuplicateKeyFinder | None = None
        self.key_idx: list[int] = []
        self.header_bytes = b""
        self.row = 1  # record number of the last record handled (header = 1)
        self.warned_ascii = rules.name.upper() != "CSV"

    def handle(self, recs: list[str]) -> None:
        if recs and not self.header_bytes:
            recs = self._header(recs)
        if not recs:
            return
        if self.finder is not None:
            self.finder.add_batch(
                extract_keys(recs, self.key_idx, self.in_delim, self.splitter.quote_free), self.row + 1
            )
        if self.redelimit:
            recs = _redelimit(recs, self.in_delim, self.out_delim)
        if not self.warned_ascii and not all(r.isascii() for r in recs):
            self.warned_ascii = True
            self.ctx.problem(
                Code.BAD_ENCODING,
                f"{self.ctx.file_name}: non-ASCII text in plain CSV is read with the format's "
                "code page; use CSV-Unicode or CSV-UTF8 if it is not UTF-8",
                Severity.WARNING,
            )
        _write_records(self.ctx, self.parts, recs, self.header_bytes, self.out_codec, self.row)
        self.row += len(recs)

    def _header(self, recs: list[str]) -> list[str]:
        """Check the header (the first record) and keep its bytes for every part; the records after it."""
        header = recs[0].lstrip("\ufeff")
        columns = parse_fields(header, self.in_delim)
        self.key_idx = check_columns(self.ctx, columns)
        if self.key_idx and self.check_keys:
            limits = self.ctx.limits
            self.finder = DuplicateKeyFinder(limits.key_spill_threshold, limits.max_row_problems)
        self.parts.columns = columns
        self.result.columns = columns
        if self.redelimit:
            header = _redelimit([header], self.in_delim, self.out_delim)[0]
        self.header_bytes = self.ctx.rules.bom + (header.replace("\n", "\r\n") + "\r\n").encode(
            self.out_codec
        )
        return recs[1:]


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


def _write_records(ctx: Ctx, parts: Parts, recs: list[str], header: bytes, codec: str, row0: int) -> None:
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
