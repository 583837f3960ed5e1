"""Excel workbooks: kept as they are when within limits, otherwise split by rows into new workbooks."""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from typing import IO, Any, BinaryIO

from dmf.package.build.checks import check_columns, dup_problems
from dmf.package.build.context import Abort, BuildResult, Ctx
from dmf.package.build.parts import Parts
from dmf.package.keys import DuplicateKeyFinder, cell_key
from dmf.package.limits import Limits
from dmf.package.problems import Code
from dmf.package.spool import copy_limited
from dmf.package.zipsafe import Budget, header_problems, precheck, workbook_has_dtd


def build_excel(src: BinaryIO, ctx: Ctx, parts: Parts, result: BuildResult, check_keys: bool) -> None:
    limits = ctx.limits
    with tempfile.NamedTemporaryFile(suffix=".xlsx", dir=ctx.out_dir) as spool:
        # openpyxl needs a seekable file; spool the stream to disk, never to memory.
        copied = copy_limited(src, spool, limits.max_uncompressed_bytes)
        if copied is None:
            raise ctx.fail(
                Code.TOO_LARGE, f"{ctx.file_name} is larger than {limits.max_uncompressed_bytes} bytes"
            )
        if copied == 0:
            raise ctx.fail(Code.EMPTY_FILE, f"{ctx.file_name} is empty")
        spool.flush()
        wb = _open_workbook(ctx, spool.name)
        try:
            ws = wb.worksheets[0]
            rows_iter = ws.iter_rows(values_only=True)
            header = next(rows_iter, None)
            columns = ["" if v is None else str(v) for v in (header or ())]
            while columns and not columns[-1]:
                columns.pop()
            key_idx = check_columns(ctx, columns)
            result.columns = columns
            parts.columns = columns
            keyed = bool(key_idx) and check_keys
            n, split, finder = _count_rows(rows_iter, limits, key_idx if keyed else [])
            if n == 0:
                raise ctx.fail(Code.NO_ROWS, f"{ctx.file_name} has a header but no data rows")
            if finder is not None and not split:
                dup_problems(ctx, finder)
            size_ok = limits.max_bytes_per_package is None or copied <= limits.max_bytes_per_package
            if not split and size_ok:
                _copy_whole(spool, copied, n, parts)
                return
            per_part = limits.max_rows_per_package or n
            if not size_ok and limits.max_rows_per_package is None:
                per_part = max(1, int(n * limits.max_bytes_per_package / copied))  # type: ignore[operator]
            _split_rows(ws, ctx, parts, columns, key_idx if keyed else [], per_part)
        finally:
            wb.close()


def _open_workbook(ctx: Ctx, path: str) -> Any:
    import openpyxl  # deferred: only Excel routes pay for the import

    try:
        _check_workbook_zip(ctx, path)
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Abort:
        raise
    except Exception as e:  # openpyxl raises many types for a broken workbook
        raise ctx.fail(
            Code.BAD_EXCEL, f"{ctx.file_name} is not a readable .xlsx workbook ({type(e).__name__})"
        ) from None


def _check_workbook_zip(ctx: Ctx, path: str) -> None:
    """The workbook is a zip from outside: the same limits as a dropped package, and no DTD."""
    limits = ctx.limits
    early = precheck(path, limits)
    if early is not None:
        raise ctx.fail(early.code, f"{ctx.file_name}: {early.message}")
    with zipfile.ZipFile(path) as z:
        errors = header_problems(z, limits)
        if not errors and workbook_has_dtd(z, Budget(limits.max_uncompressed_bytes)):
            raise ctx.fail(
                Code.BAD_EXCEL,
                f"{ctx.file_name}: the workbook's XML has a document type declaration (DTD), "
                "which is not allowed",
            )
    if errors:
        raise ctx.fail(errors[0].code, f"{ctx.file_name}: {errors[0].message}")


def _finder(limits: Limits) -> DuplicateKeyFinder:
    return DuplicateKeyFinder(limits.key_spill_threshold, limits.max_row_problems)


def _blank(values: tuple | None) -> bool:
    return values is None or all(v is None or v == "" for v in values)


def _count_rows(rows_iter, limits: Limits, key_idx: list[int]) -> tuple[int, bool, DuplicateKeyFinder | None]:  # type: ignore[no-untyped-def]
    """Data rows, counted up to one past ``max_rows_per_package`` (then it must be split: True), with
    their keys checked on the way when ``key_idx`` names key columns."""
    finder = _finder(limits) if key_idx else None
    max_rows = limits.max_rows_per_package
    n = 0
    for values in rows_iter:
        if _blank(values):
            continue
        n += 1
        if finder is not None:
            finder.add(cell_key(values, key_idx), n + 1)
        if max_rows is not None and n > max_rows:
            return n, True, finder
    return n, False, finder


def _copy_whole(spool: IO[bytes], copied: int, rows: int, parts: Parts) -> None:
    parts.start(b"")
    spool.seek(0)
    assert parts.stream is not None
    shutil.copyfileobj(spool, parts.stream, 1024 * 1024)
    parts.bytes = copied
    parts.rows = rows
    parts.finish_part()


def _split_rows(ws, ctx: Ctx, parts: Parts, columns: list[str], key_idx: list[int], per_part: int) -> None:  # type: ignore[no-untyped-def]
    """Split by rows into new workbooks (values only: DMF reads nothing else)."""
    finder = _finder(ctx.limits) if key_idx else None
    writer: _XlsxPart | None = None
    row = 1
    for values in ws.iter_rows(min_row=2, values_only=True):
        if _blank(values):
            continue
        row += 1
        if finder is not None:
            finder.add(cell_key(values, key_idx), row)
        if writer is None:
            writer = _XlsxPart(ws.title, columns)
        writer.append(values[: len(columns)])
        if writer.rows >= per_part:
            writer.flush_into(parts, ctx)
            writer = None
    if writer is not None:
        writer.flush_into(parts, ctx)
    if finder is not None:
        dup_problems(ctx, finder)


class _XlsxPart:
    def __init__(self, title: str, columns: list[str]) -> None:
        import openpyxl

        self.wb = openpyxl.Workbook(write_only=True)
        self.ws = self.wb.create_sheet(title)
        self.ws.append(columns)
        self.rows = 0

    def append(self, values: tuple) -> None:
        self.ws.append(list(values))
        self.rows += 1

    def flush_into(self, parts: Parts, ctx: Ctx) -> None:
        parts.start(b"")
        assert parts.stream is not None
        counter = _CountingWriter(parts.stream)
        self.wb.save(counter)  # type: ignore[arg-type]
        parts.bytes = counter.n
        parts.rows = self.rows
        parts.finish_part()


class _CountingWriter(io.RawIOBase):
    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.inner.write(b)
        self.n += len(b)
        return len(b)
