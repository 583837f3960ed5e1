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

import os
import zipfile
from typing import BinaryIO

from dmf.package.catalogue import Catalogue
from dmf.package.inspect.container import file_size, read_the_rest, read_xml, seekable
from dmf.package.inspect.content import check_data_files
from dmf.package.inspect.entries import entity_checks
from dmf.package.inspect.report import HEADER, MANIFEST, PackageReport
from dmf.package.limits import Limits
from dmf.package.manifest import parse_manifest, parse_package_header
from dmf.package.problems import Code, Problem, has_errors
from dmf.package.spool import spool_to_file
from dmf.package.zipsafe import Budget, Tally, ZipBombError, header_problems, precheck, root_files

__all__ = ["HEADER", "MANIFEST", "PackageReport", "inspect_package", "spool_to_file"]


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
    if not isinstance(path_or_file, (str, os.PathLike)) and not seekable(path_or_file):
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
    size = file_size(path_or_file)
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
    for i in root_files(infos, p):
        root.setdefault(i.filename.casefold(), i)
    if bomb:
        return  # reading anything further would mean decompressing a suspected bomb
    # Our own package: its data file was bounded when it was built, so reading it needs no budget.
    budget = Budget(limits.max_uncompressed_bytes if tally is not None else 2**62)
    try:
        header_codes = (Code.MISSING_PACKAGE_HEADER, Code.BAD_PACKAGE_HEADER)
        report.header = read_xml(zf, root, HEADER, parse_package_header, header_codes, budget, limits, p)
        report.manifest = read_xml(
            zf, root, MANIFEST, parse_manifest, (Code.MISSING_MANIFEST, Code.BAD_MANIFEST), budget, limits, p
        )
    except ZipBombError as e:
        p.append(Problem(Code.ZIP_BOMB, str(e)))
        return
    if report.manifest is None:
        return
    checks = entity_checks(report.manifest, root, catalogue, overwrite, p)
    if checks is None:  # the manifest lists no entities
        return
    read = {MANIFEST.casefold(), HEADER.casefold()}
    if check_content and not check_data_files(zf, checks, report, limits, budget, tally, read):
        return
    if tally is not None and not has_errors(p):
        read_the_rest(zf, infos, read, budget, p)
