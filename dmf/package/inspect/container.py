"""The zip container: its size, the two XML files, and reading through what no content check reads (so
what it really expands to counts, and its CRCs are checked)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from dmf.package.inspect.report import CORRUPT
from dmf.package.limits import Limits
from dmf.package.manifest import ManifestError
from dmf.package.problems import Code, Problem
from dmf.package.zipsafe import Budget, ZipBombError, iter_entry, read_entry


def file_size(path_or_file: str | os.PathLike[str] | BinaryIO) -> int:
    if isinstance(path_or_file, (str, os.PathLike)):
        return Path(path_or_file).stat().st_size
    pos = path_or_file.tell()
    end = path_or_file.seek(0, os.SEEK_END)
    path_or_file.seek(pos)
    return end


def seekable(f: object) -> bool:
    try:
        return bool(f.seekable())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def read_xml(
    zf: zipfile.ZipFile,
    root: dict[str, zipfile.ZipInfo],
    name: str,
    parse: Callable[[bytes], Any],
    codes: tuple[Code, Code],
    budget: Budget,
    limits: Limits,
    p: list[Problem],
) -> Any:
    """Parse the entry ``name`` at the zip root; None (with a problem: ``codes`` are missing, bad) if it
    cannot be read. Raises ``ZipBombError`` past the budget."""
    missing_code, bad_code = codes
    info = root.get(name.casefold())
    if info is None:
        p.append(Problem(missing_code, f"{name} is missing from the zip root", file=name))
        return None
    try:
        return parse(read_entry(zf, info, budget, limits.max_xml_bytes))
    except ManifestError as e:
        p.append(Problem(bad_code, f"{name}: {e}", file=name))
    except CORRUPT as e:
        p.append(Problem(Code.ZIP_CORRUPT, f"{name} cannot be decompressed ({e})", file=name))
    return None


def read_the_rest(
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
        except CORRUPT as e:
            p.append(
                Problem(Code.ZIP_CORRUPT, f"{i.filename!r} cannot be decompressed ({e})", file=i.filename)
            )
            return
