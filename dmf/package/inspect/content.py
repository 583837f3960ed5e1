"""Each entity's data file against its source format and the limits: size, rows, and what the format's
scan finds (``delimited``, ``xml``, ``excel``)."""

from __future__ import annotations

import zipfile

from dmf.package.formats import FileKind
from dmf.package.inspect.delimited import scan_delimited
from dmf.package.inspect.entries import DataFile
from dmf.package.inspect.excel import scan_excel
from dmf.package.inspect.report import CORRUPT, PackageReport
from dmf.package.inspect.scan import ContentScan
from dmf.package.inspect.xml import scan_xml
from dmf.package.limits import Limits
from dmf.package.problems import Code, Problem
from dmf.package.zipsafe import Budget, Tally, ZipBombError, iter_entry


def check_data_files(
    zf: zipfile.ZipFile,
    checks: list[DataFile],
    report: PackageReport,
    limits: Limits,
    budget: Budget,
    tally: Tally | None,
    read: set[str],
) -> bool:
    """Scan each data file (its name is added to ``read``); False when reading stopped (a bomb, or an
    entry that cannot be decompressed)."""
    p = report.problems
    for ent, data, rules, info in checks:
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
        scan = ContentScan(ent, data.filename, rules, info, limits, p, tally)
        try:
            rows = _scan(scan, zf, data, budget)
        except ZipBombError as e:
            p.append(Problem(Code.ZIP_BOMB, str(e), file=data.filename))
            return False
        except CORRUPT as e:
            p.append(
                Problem(
                    Code.ZIP_CORRUPT, f"{data.filename!r} cannot be decompressed ({e})", file=data.filename
                )
            )
            return False
        read.add(data.filename.casefold())
        if rows is None:
            continue
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
    return True


def _scan(scan: ContentScan, zf: zipfile.ZipFile, data: zipfile.ZipInfo, budget: Budget) -> int | None:
    if scan.rules.kind is FileKind.DELIMITED:
        return scan_delimited(scan, iter_entry(zf, data, budget))
    if scan.rules.kind is FileKind.XML:
        return scan_xml(scan, iter_entry(zf, data, budget))
    return scan_excel(scan, zf, data, budget)
