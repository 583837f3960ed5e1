"""Checks every format's build shares: the header's column names, and the duplicate keys found."""

from __future__ import annotations

from dmf.package.build.context import Ctx
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.problems import Code, Severity


def check_columns(ctx: Ctx, columns: list[str]) -> list[int]:
    """Header checks; returns the key column indexes for the duplicate check (empty = no check)."""
    upper = [c.strip().upper() for c in columns]
    if not columns or all(not c for c in upper):
        raise ctx.fail(Code.NO_HEADER, f"{ctx.file_name}: the first row holds no column names", row=1)
    if any(not c for c in upper):
        raise ctx.fail(Code.NO_HEADER, f"{ctx.file_name}: column {upper.index('') + 1} has no name", row=1)
    dups = sorted({c for c in upper if upper.count(c) > 1})
    if dups:
        raise ctx.fail(
            Code.DUPLICATE_COLUMN,
            f"{ctx.file_name}: columns repeated in the header: {', '.join(dups)}",
            row=1,
        )
    if ctx.template_entity is not None:
        missing = [
            m.xml_field
            for m in ctx.template_entity.entity_map_list
            if m.xml_field.strip().upper() not in upper
        ]
        if missing:
            raise ctx.fail(
                Code.HEADER_MISMATCH,
                f"{ctx.file_name}: the template maps columns the file lacks: {', '.join(missing)}",
                row=1,
            )
    elif ctx.entity.fields:
        unknown = [c for c in upper if c not in ctx.entity.fields]
        if unknown:
            ctx.problem(
                Code.UNKNOWN_FIELD,
                f"{ctx.file_name}: columns not known for entity {ctx.entity.label}: {', '.join(unknown)}",
                Severity.WARNING,
                row=1,
            )
    keys = ctx.entity.key_fields
    if not keys:
        return []
    absent = [k for k in keys if k not in upper]
    if absent:
        ctx.problem(
            Code.KEY_FIELD_MISSING,
            f"{ctx.file_name}: key column(s) {', '.join(absent)} of entity "
            f"{ctx.entity.label} are not in the header",
            Severity.WARNING,
            row=1,
        )
        return []
    return [upper.index(k) for k in keys]


def dup_problems(ctx: Ctx, finder: DuplicateKeyFinder) -> None:
    dups = finder.finish()
    keys = ", ".join(ctx.entity.key_fields)
    for d in dups:
        shown = f" ({keys} = {', '.join(d.key)})" if d.key is not None else ""
        ctx.problem(
            Code.DUPLICATE_KEY,
            f"{ctx.file_name}: row {d.row} repeats the key of row {d.first_row}{shown}",
            row=d.row,
        )
    extra = finder.duplicate_count - len(dups)
    if extra > 0:
        ctx.problem(Code.DUPLICATE_KEY, f"{ctx.file_name}: {extra} more rows repeat an earlier key")
