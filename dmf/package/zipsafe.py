"""Zip container safety: entry names, zip bomb limits from headers, and bounded reading."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
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


def header_problems(zf: zipfile.ZipFile, limits: Limits) -> list[Problem]:
    """Problems visible from the central directory alone (no decompression)."""
    problems: list[Problem] = []
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        problems.append(
            Problem(Code.ZIP_TOO_MANY_ENTRIES, f"{len(infos)} entries (limit {limits.max_entries})")
        )
    total = sum(i.file_size for i in infos)
    if total > limits.max_uncompressed_bytes:
        problems.append(
            Problem(Code.ZIP_BOMB, f"uncompressed size {total} bytes exceeds {limits.max_uncompressed_bytes}")
        )
    seen: set[str] = set()
    for i in infos:
        if i.flag_bits & 0x1:
            problems.append(Problem(Code.ZIP_ENCRYPTED, f"{i.filename!r} is encrypted", file=i.filename))
        if i.file_size >= limits.ratio_min_bytes and i.file_size > limits.max_ratio * max(i.compress_size, 1):
            problems.append(
                Problem(
                    Code.ZIP_BOMB,
                    f"{i.filename!r} expands {i.file_size / max(i.compress_size, 1):.0f}× "
                    f"(limit {limits.max_ratio:.0f}×)",
                    file=i.filename,
                )
            )
        key = i.filename.casefold()
        if key in seen:
            problems.append(
                Problem(Code.ZIP_DUPLICATE_ENTRY, f"{i.filename!r} appears twice in the zip", file=i.filename)
            )
        seen.add(key)
    return problems


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
