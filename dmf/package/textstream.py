"""Streaming text helpers for delimited files: encoding detection, decoding with line-ending
normalisation, and grouping lines into CSV records (a quoted field may span lines)."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

READ_CHUNK = 1024 * 1024

# The csv module refuses fields over 128 KiB by default (``_csv.Error``, which would crash a build or
# validation). Records are bounded by ``Limits.max_record_chars`` before csv sees them, so lift its limit.
csv.field_size_limit(2**31 - 1)


class DecodeError(ValueError):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class DetectedEncoding:
    codec: str  # Python codec name used to decode the rest of the stream
    bom_len: int  # bytes of BOM to skip
    assumed: bool = False  # no BOM and not valid UTF-8: a guess the user should hear about


def detect_encoding(head: bytes, *, complete: bool = False) -> DetectedEncoding:
    """Encoding of a file from its first bytes: BOM first, then UTF-16 without BOM, UTF-8, Windows-1252.

    ``complete`` says ``head`` is the whole file, so a truncated UTF-8 sequence at its end is an error.
    """
    if head.startswith(codecs.BOM_UTF8):
        return DetectedEncoding("utf-8", 3)
    if head.startswith(codecs.BOM_UTF32_LE):
        return DetectedEncoding("utf-32-le", 4)
    if head.startswith(codecs.BOM_UTF16_LE):
        return DetectedEncoding("utf-16-le", 2)
    if head.startswith(codecs.BOM_UTF16_BE):
        return DetectedEncoding("utf-16-be", 2)
    sample = head[:4096]
    if len(sample) >= 4:
        # ASCII text in UTF-16 has a zero in every other byte.
        even_zero = sample[0::2].count(0) / (len(sample) // 2)
        odd_zero = sample[1::2].count(0) / (len(sample) // 2)
        if odd_zero > 0.3 and even_zero < 0.05:
            return DetectedEncoding("utf-16-le", 0, assumed=True)
        if even_zero > 0.3 and odd_zero < 0.05:
            return DetectedEncoding("utf-16-be", 0, assumed=True)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
        return DetectedEncoding("utf-8", 0)
    except UnicodeDecodeError:
        return DetectedEncoding("cp1252", 0, assumed=True)


HEAD_BYTES = 64 * 1024


def read_head(src: BinaryIO, n: int = HEAD_BYTES) -> bytes:
    """Read up to ``n`` bytes, looping over short reads (network streams return less than asked)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        b = src.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def iter_normalised_text(
    src: BinaryIO, head: bytes, enc: DetectedEncoding, chunk_size: int = READ_CHUNK
) -> Iterator[str]:
    """Decode ``head`` + the rest of ``src`` incrementally, turning CRLF and lone CR into LF.

    Raises ``DecodeError`` (with the byte offset) on bytes that are not valid in the encoding.
    """
    dec = codecs.getincrementaldecoder(enc.codec)(errors="strict")
    offset = 0
    pending_cr = False
    data = head[enc.bom_len :]
    offset = enc.bom_len
    while True:
        final = not data
        try:
            text = dec.decode(data, final=final)
        except UnicodeDecodeError as e:
            raise DecodeError(
                f"bytes at offset {offset + e.start} are not valid {enc.codec}", offset + e.start
            ) from None
        offset += len(data)
        if pending_cr:
            text = "\r" + text
            pending_cr = False
        if text.endswith("\r") and not final:
            # The LF of a CRLF may be in the next chunk.
            text = text[:-1]
            pending_cr = True
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text:
            yield text
        if final:
            return
        data = src.read(chunk_size)


class RecordTooLongError(ValueError):
    """A record is longer than the splitter's limit (or a quoted field never closes).

    ``records_before`` counts the complete records of the text fed so far that precede the long one but
    were not returned yet (the caller adds the records it already handled to name the row)."""

    def __init__(self, limit: int, records_before: int, in_quote: bool) -> None:
        super().__init__(f"a record is longer than {limit} characters")
        self.limit = limit
        self.records_before = records_before
        self.in_quote = in_quote


DEFAULT_MAX_RECORD_CHARS = 1024 * 1024


def record_too_long_message(row: int, e: RecordTooLongError) -> str:
    """The user's reason for a ``RecordTooLongError`` at ``row`` (1-based, header = row 1)."""
    hint = "; a quote opened in it may never close" if e.in_quote else ""
    return f"row {row} is longer than {e.limit} characters (RECORD_MAX_CHARS){hint}"


class RecordSplitter:
    """Turns normalised text chunks into complete CSV records (lists of lines joined by LF).

    A record ends at a line end where the count of quote characters so far is even ("" escapes count
    two, so parity is exact). Blank lines between records are dropped. A record longer than
    ``max_record_chars`` raises ``RecordTooLongError`` as soon as it is seen, so memory holds at most
    about one limit's worth of an unfinished record plus one chunk.
    """

    def __init__(self, quote: str = '"', max_record_chars: int = DEFAULT_MAX_RECORD_CHARS) -> None:
        self.quote = quote
        self.carry = ""
        self.max_record_chars = max_record_chars
        self.quote_free = True  # the records returned by the last feed/finish hold no quote character

    def _too_long(self, records_before: int, in_quote: bool) -> RecordTooLongError:
        self.carry = ""  # nothing more is read; drop the long text now
        return RecordTooLongError(self.max_record_chars, records_before, in_quote)

    def feed(self, text: str) -> list[str]:
        limit = self.max_record_chars
        text = self.carry + text
        lines = text.split("\n")
        self.carry = lines.pop()
        self.quote_free = self.quote not in text
        if self.quote_free:
            out = [ln for ln in lines if ln] if "" in lines else lines
            if len(text) > limit and out and max(map(len, out)) > limit:
                first = next(i for i, ln in enumerate(out) if len(ln) > limit)
                raise self._too_long(first, False)
            if len(self.carry) > limit:
                raise self._too_long(len(out), False)
            return out
        out: list[str] = []
        q = self.quote
        open_rec: list[str] | None = None
        open_len = 0
        for ln in lines:
            odd = ln.count(q) & 1
            if open_rec is None:
                if odd:
                    open_rec = [ln]
                    open_len = len(ln)
                elif ln:
                    if len(ln) > limit:
                        raise self._too_long(len(out), False)
                    out.append(ln)
            else:
                open_rec.append(ln)
                open_len += len(ln) + 1
                if open_len > limit:
                    raise self._too_long(len(out), not odd)
                if odd:
                    out.append("\n".join(open_rec))
                    open_rec = None
        if open_rec is not None:
            # An open quoted field continues into the next chunk: keep it with the carry.
            self.carry = "\n".join([*open_rec, self.carry])
        if len(self.carry) > limit:
            # A quote that never closes would otherwise make the whole file one record in memory.
            raise self._too_long(len(out), open_rec is not None or bool(self.carry.count(q) & 1))
        return out

    def finish(self) -> tuple[list[str], bool]:
        """Remaining records, and whether the file ended inside a quoted field."""
        rest, self.carry = self.carry, ""
        self.quote_free = self.quote not in rest
        if not rest:
            return [], False
        if rest.count(self.quote) & 1:
            return [rest], True
        return [rest], False


def parse_fields(record: str, delimiter: str) -> list[str]:
    """Split one record into fields (csv module rules: "" escapes, quotes may hold the delimiter)."""
    return next(csv.reader([record], delimiter=delimiter, strict=False), [])


def extract_keys(
    recs: list[str], key_idx: list[int], delimiter: str, quote_free: bool
) -> list[str] | list[tuple[str, ...]]:
    """Key of each record: a stripped, upper-cased string for a one-field key, a tuple of them otherwise.
    Upper case because F&O's database collation is case-insensitive: "g1" and "G1" are the same key.

    ``quote_free`` (no quote character in any record) allows a plain split, much faster than csv.
    """
    if len(key_idx) == 1:
        k = key_idx[0]
        if quote_free:
            if k == 0:
                return [r.split(delimiter, 1)[0].strip().upper() for r in recs]
            return [(p[k] if len(p := r.split(delimiter, k + 1)) > k else "").strip().upper() for r in recs]
        if k == 0:
            # Quotes later in a row do not matter when its first field is unquoted.
            return [
                r.split(delimiter, 1)[0].strip().upper()
                if r[:1] != '"'
                else parse_fields(r, delimiter)[0].strip().upper()
                for r in recs
            ]
        return [
            (f[k] if len(f) > k else "").strip().upper()
            for f in csv.reader(recs, delimiter=delimiter, strict=False)
        ]
    return [
        tuple([(f[k] if len(f) > k else "").strip().upper() for k in key_idx])
        for f in csv.reader(recs, delimiter=delimiter, strict=False)
    ]
