"""Zip container safety: entry names, zip bomb limits from headers, and bounded reading."""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from dmf.package.limits import Limits
from dmf.package.problems import Code, Problem

_DRIVE = re.compile(r"^[A-Za-z]:")


class ZipBombError(ValueError):
    pass


def name_problem(name: str) -> Problem | None:
    """PATH_TRAVERSAL or ZIP_NESTED_FOLDER for a zip entry name that is not a plain root file name."""
    if (
        "\\" in name
        or name.startswith("/")
        or _DRIVE.match(name)
        or "\x00" in name
        or any(seg == ".." for seg in name.split("/"))
    ):
        return Problem(
            Code.PATH_TRAVERSAL,
            f"zip entry {name!r} has an unsafe path (.., absolute, drive or \\)",
            file=name,
        )
    if "/" in name:
        return Problem(
            Code.ZIP_NESTED_FOLDER,
            f"zip entry {name!r} is inside a folder; F&O needs every file at the zip root",
            file=name,
        )
    return None


def root_files(infos: Iterable[zipfile.ZipInfo], problems: list[Problem]) -> Iterator[zipfile.ZipInfo]:
    """The entries that are plain files at the zip root; a problem for every other entry and for every
    empty file (which is still yielded: a caller decides whether an empty file is kept)."""
    for i in infos:
        bad = name_problem(i.filename)
        if bad is not None:
            problems.append(bad)
            continue
        if i.file_size == 0:
            problems.append(Problem(Code.EMPTY_FILE, f"{i.filename!r} is empty", file=i.filename))
        yield i


@dataclass
class Tally:
    """What one input from outside adds up to across every archive in it (a batch zip, the packages in
    it, a workbook inside a package), so a limit cannot be dodged by spreading over archives."""

    input_bytes: int  # size of the outermost file as received (the denominator of the input-wide ratio)
    entries: int = 0
    expanded: int = 0


def _archive_size(f: BinaryIO) -> int:
    pos = f.tell()
    end = f.seek(0, 2)
    f.seek(pos)
    return end


def precheck(source: str | os.PathLike[str] | BinaryIO, limits: Limits) -> Problem | None:
    """Entry count and central directory size from the end record alone, before ``zipfile`` reads the
    whole central directory into memory (millions of tiny entries would exhaust it). None = go ahead."""
    with contextlib.ExitStack() as stack:
        f: BinaryIO = (
            stack.enter_context(open(source, "rb")) if isinstance(source, (str, os.PathLike)) else source
        )
        pos = f.tell()
        try:
            end = zipfile._EndRecData(f)  # type: ignore[attr-defined]  # stable since Python 2
        except (OSError, struct.error):
            end = None
        finally:
            f.seek(pos)
    if end is None:
        return None  # not a zip: zipfile says so in its own words
    entries, cd_size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > limits.max_entries:
        return Problem(Code.ZIP_TOO_MANY_ENTRIES, f"{entries} entries (limit {limits.max_entries})")
    # A central directory entry is 46 bytes plus its name and extra fields (a few dozen bytes in practice).
    if cd_size > limits.max_entries * (46 + 4 * limits.max_name_chars + 1024):
        return Problem(
            Code.ZIP_TOO_MANY_ENTRIES,
            f"the zip's central directory is {cd_size} bytes, more than {limits.max_entries} entries need",
        )
    return None


def header_problems(
    zf: zipfile.ZipFile, limits: Limits, *, tally: Tally | None = None, where: str = ""
) -> list[Problem]:
    """Problems visible from the central directory alone (no decompression), for an archive from outside.

    Every limit holds for each entry, for the whole archive and, with ``tally``, for the whole input the
    archive is part of. ``where`` prefixes messages about an archive inside another (``"a.zip: "``).
    """
    problems: list[Problem] = []
    infos = zf.infolist()
    if tally is None:
        tally = Tally(_archive_size(zf.fp) if zf.fp is not None else 0)  # type: ignore[arg-type]
    tally.entries += len(infos)
    expanded = sum(i.file_size for i in infos)
    compressed = sum(i.compress_size for i in infos)
    tally.expanded += expanded
    nested = tally.expanded != expanded
    if len(infos) > limits.max_entries:
        problems.append(
            Problem(Code.ZIP_TOO_MANY_ENTRIES, f"{where}{len(infos)} entries (limit {limits.max_entries})")
        )
    elif tally.entries > limits.max_entries:
        problems.append(
            Problem(
                Code.ZIP_TOO_MANY_ENTRIES,
                f"{where}{tally.entries} entries counting the archives inside the input (limit {limits.max_entries})",
            )
        )
    if expanded > limits.max_uncompressed_bytes:
        problems.append(
            Problem(
                Code.ZIP_BOMB,
                f"{where}uncompressed size {expanded} bytes exceeds {limits.max_uncompressed_bytes}",
            )
        )
    elif tally.expanded > limits.max_uncompressed_bytes:
        problems.append(
            Problem(
                Code.ZIP_BOMB,
                f"{where}the input expands to {tally.expanded} bytes counting the archives inside it "
                f"(limit {limits.max_uncompressed_bytes})",
            )
        )
    seen: set[str] = set()
    for i in infos:
        if len(i.filename) > limits.max_name_chars:
            problems.append(
                Problem(
                    Code.NAME_TOO_LONG,
                    f"{where}an entry name is {len(i.filename)} characters (limit {limits.max_name_chars}): "
                    f"{i.filename[:60]!r}…",
                    file=i.filename,
                )
            )
        kind = not_regular(i)
        if kind is not None:
            problems.append(
                Problem(
                    Code.ZIP_NOT_A_FILE,
                    f"{where}{i.filename!r} is a {kind}, not a regular file",
                    file=i.filename,
                )
            )
        if i.flag_bits & 0x1:
            problems.append(
                Problem(Code.ZIP_ENCRYPTED, f"{where}{i.filename!r} is encrypted", file=i.filename)
            )
        if i.file_size > limits.max_ratio * max(i.compress_size, 1):
            problems.append(
                Problem(
                    Code.ZIP_BOMB,
                    f"{where}{i.filename!r} expands {i.file_size / max(i.compress_size, 1):.0f}× "
                    f"(limit {limits.max_ratio:.0f}×)",
                    file=i.filename,
                )
            )
        key = i.filename.casefold()
        if key in seen:
            problems.append(
                Problem(
                    Code.ZIP_DUPLICATE_ENTRY,
                    f"{where}{i.filename!r} appears twice in the zip",
                    file=i.filename,
                )
            )
        seen.add(key)
    # As a whole: never above the worst entry for one archive, but the input-wide ratio multiplies
    # across nesting (a deflated zip of deflated zips).
    if any(x.code is Code.ZIP_BOMB for x in problems):
        return problems
    if expanded > limits.max_ratio * max(compressed, 1):
        problems.append(
            Problem(
                Code.ZIP_BOMB,
                f"{where}the archive expands {expanded / max(compressed, 1):.0f}× as a whole "
                f"(limit {limits.max_ratio:.0f}×)",
            )
        )
    elif nested and tally.expanded > limits.max_ratio * max(tally.input_bytes, 1):
        problems.append(
            Problem(
                Code.ZIP_BOMB,
                f"{where}the input expands {tally.expanded / max(tally.input_bytes, 1):.0f}× counting the "
                f"archives inside it (limit {limits.max_ratio:.0f}×)",
            )
        )
    return problems


_FILE_TYPES = {
    stat.S_IFLNK: "symbolic link",
    stat.S_IFDIR: "folder",
    stat.S_IFIFO: "named pipe",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


def not_regular(info: zipfile.ZipInfo) -> str | None:
    """What a non-regular entry is (symbolic link, device, ...), from the Unix mode in ``external_attr``;
    None for a regular file, or a folder entry (name ending in ``/``: reported by name checks)."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG):
        return None  # 0: written without Unix mode bits (Windows, .NET)
    if kind == stat.S_IFDIR and info.filename.endswith("/"):
        return None
    return _FILE_TYPES.get(kind, f"special file (mode {oct(mode)})")


class Budget:
    """Decompressed bytes allowed across a whole archive, shared by every entry read."""

    def __init__(self, limit: int) -> None:
        self.left = limit


def iter_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, chunk_size: int = 1024 * 1024
) -> Iterator[bytes]:
    """Decompressed chunks of one entry, checked against its declared size and the shared budget while
    reading (headers can lie; zipfile also verifies the CRC at the end)."""
    got = 0
    with zf.open(info) as f:
        while chunk := f.read(chunk_size):
            got += len(chunk)
            budget.left -= len(chunk)
            if got > info.file_size:
                raise ZipBombError(f"{info.filename!r} decompresses to more than its declared size")
            if budget.left < 0:
                raise ZipBombError("the archive decompresses to more than the allowed total size")
            yield chunk


def read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, max_bytes: int) -> bytes:
    if info.file_size > max_bytes:
        raise ZipBombError(f"{info.filename!r} is {info.file_size} bytes (limit {max_bytes})")
    return b"".join(iter_entry(zf, info, budget))


def copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: BinaryIO, budget: Budget) -> int:
    n = 0
    for chunk in iter_entry(zf, info, budget):
        dest.write(chunk)
        n += len(chunk)
    return n


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (e.g. ``iter_entry``), for parsers that want files."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _Dtd(Exception):
    pass


class _Root(Exception):
    pass


def xml_has_dtd(chunks: Iterator[bytes]) -> bool:
    """Whether an XML document declares a DTD (``<!DOCTYPE``). Reads only up to the root element's start
    tag: a DTD can only come before it. Badly formed XML is left to the real parser (False)."""
    from xml.parsers import expat

    parser = expat.ParserCreate()

    def doctype(*_: object) -> None:
        raise _Dtd

    def root(*_: object) -> None:
        raise _Root

    parser.StartDoctypeDeclHandler = doctype
    parser.StartElementHandler = root
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except _Dtd:
        return True
    except (_Root, expat.ExpatError):
        return False
    return False


_XML_PARTS = (".xml", ".rels", ".vml")


def workbook_has_dtd(zf: zipfile.ZipFile, budget: Budget) -> bool:
    """Whether any XML part of an .xlsx declares a DTD (openpyxl would accept one)."""
    for info in zf.infolist():
        if info.filename.lower().endswith(_XML_PARTS) and info.file_size:
            chunks = iter_entry(zf, info, budget, chunk_size=64 * 1024)
            try:
                if xml_has_dtd(chunks):
                    return True
            finally:
                chunks.close()  # type: ignore[attr-defined]
    return False
