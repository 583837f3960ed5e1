"""An Excel data file: the workbook is a zip itself (the same zip bomb limits when it came from outside,
and no DTD), its header against the EntityMapList, its rows and duplicate keys."""

from __future__ import annotations

import tempfile
import zipfile
from typing import Any

from dmf.package.inspect.scan import ContentScan
from dmf.package.keys import cell_key
from dmf.package.problems import Code
from dmf.package.zipsafe import Budget, copy_entry, header_problems, precheck, workbook_has_dtd


def scan_excel(scan: ContentScan, zf: zipfile.ZipFile, data: zipfile.ZipInfo, budget: Budget) -> int | None:
    """The data row count, or None when the workbook cannot be counted (the problem is recorded)."""
    with tempfile.NamedTemporaryFile(suffix=".xlsx") as tmp:
        copy_entry(zf, data, tmp, budget)  # type: ignore[arg-type]
        tmp.flush()
        wb = _open_workbook(scan, tmp.name)
        if wb is None:
            return None
        try:
            return _count_rows(scan, wb)
        finally:
            wb.close()


def _open_workbook(scan: ContentScan, path: str) -> Any:
    import openpyxl  # deferred: only packages with Excel data pay for the import

    try:
        if scan.tally is not None and not _workbook_zip_ok(scan, path):
            return None
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a broken workbook
        scan.add(Code.BAD_EXCEL, f"not a readable .xlsx workbook ({type(e).__name__})")
        return None


def _workbook_zip_ok(scan: ContentScan, path: str) -> bool:
    """A workbook from outside: the zip bomb limits (counted with the package's) and no DTD."""
    early = precheck(path, scan.limits)
    if early is not None:
        scan.add(early.code, f"the workbook: {early.message}")
        return False
    with zipfile.ZipFile(path) as inner:
        inner_errors = header_problems(inner, scan.limits, tally=scan.tally, where="the workbook: ")
        if not inner_errors and workbook_has_dtd(inner, Budget(scan.limits.max_uncompressed_bytes)):
            scan.add(
                Code.BAD_EXCEL,
                "the workbook's XML has a document type declaration (DTD), which is not allowed",
            )
            return False
    if inner_errors:
        scan.add(inner_errors[0].code, inner_errors[0].message.removeprefix(f"{scan.name}: "))
        return False
    return True


def _count_rows(scan: ContentScan, wb: Any) -> int | None:
    sheet = scan.ent.excel_sheet_name.rstrip("$")
    ws = wb[sheet] if sheet and sheet in wb.sheetnames else wb.worksheets[0]
    it = ws.iter_rows(values_only=True)
    header = next(it, None)
    if header is None:
        scan.add(Code.NO_HEADER, "the workbook's sheet is empty")
        return None
    columns = ["" if v is None else str(v) for v in header]
    key_idx = scan.mapped_key_columns(columns)
    finder = scan.finder() if key_idx else None
    rows = 0
    for values in it:
        if values is None or all(v is None or v == "" for v in values):
            continue
        rows += 1
        if finder is not None and key_idx:
            finder.add(cell_key(values, key_idx), rows + 1)
    if finder is not None:
        scan.report_dups(finder)
    return rows
