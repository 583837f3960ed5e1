"""XML files: split by top-level record, written as UTF-8 with the root element repeated in every part."""

from __future__ import annotations

from typing import BinaryIO
from xml.etree.ElementTree import Element, tostring
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from dmf.package.build.checks import dup_problems
from dmf.package.build.context import BuildResult, Ctx
from dmf.package.build.parts import Parts
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.problems import Code


def build_xml(src: BinaryIO, ctx: Ctx, parts: Parts, result: BuildResult, check_keys: bool) -> None:
    limits = ctx.limits
    attrs_mode = ctx.rules.xml_attributes
    finder = (
        DuplicateKeyFinder(limits.key_spill_threshold, limits.max_row_problems)
        if check_keys and ctx.entity.key_fields
        else None
    )
    depth = 0
    root: Element | None = None
    prefix = b""
    suffix = b""
    fields: dict[str, None] = {}
    row = 0
    result.source_encoding = "xml"
    try:
        for event, el in SafeET.iterparse(src, events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if depth == 1:
                    root = el
                    tag = _local(el.tag)
                    attrs = "".join(f" {_local(k)}={quoteattr(v)}" for k, v in el.attrib.items())
                    prefix = f'<?xml version="1.0" encoding="utf-8"?>\r\n<{tag}{attrs}>\r\n'.encode()
                    suffix = f"</{tag}>\r\n".encode()
                continue
            depth -= 1
            if depth != 1:
                continue
            assert root is not None
            row += 1
            names = list(el.attrib) if attrs_mode else [c.tag for c in el]
            values = dict(el.attrib) if attrs_mode else {c.tag: (c.text or "") for c in el}
            upper = {_local(k).upper(): v for k, v in values.items()}
            if finder is not None:
                finder.add(tuple([upper.get(k, "").strip().upper() for k in ctx.entity.key_fields]), row)
            el.tail = None
            data = tostring(el, encoding="unicode").encode("utf-8") + b"\r\n"
            root.remove(el)
            _write_xml_record(ctx, parts, data, prefix, suffix, fields, row)
            for n in names:
                fields.setdefault(_local(n), None)
    except DefusedXmlException as e:
        raise ctx.fail(
            Code.BAD_XML, f"{ctx.file_name}: forbidden XML construct ({type(e).__name__})"
        ) from None
    except SafeET.ParseError as e:
        raise ctx.fail(Code.BAD_XML, f"{ctx.file_name}: not well-formed XML ({e})") from None
    if root is None:
        raise ctx.fail(Code.EMPTY_FILE, f"{ctx.file_name} holds no XML")
    if row == 0:
        raise ctx.fail(Code.NO_ROWS, f"{ctx.file_name} has no records under <{_local(root.tag)}>")
    result.columns = list(fields)
    if finder is not None:
        dup_problems(ctx, finder)
    if parts.open:
        parts.finish_part(suffix, list(fields))


def _write_xml_record(
    ctx: Ctx, parts: Parts, data: bytes, prefix: bytes, suffix: bytes, fields: dict[str, None], row: int
) -> None:
    max_rows, max_bytes = ctx.limits.max_rows_per_package, ctx.limits.max_bytes_per_package
    if parts.open and (
        (max_rows is not None and parts.rows >= max_rows)
        or (max_bytes is not None and parts.bytes + len(data) + len(suffix) > max_bytes)
    ):
        parts.finish_part(suffix, list(fields))
        fields.clear()
    if not parts.open:
        parts.start(prefix)
        if max_bytes is not None and len(prefix) + len(data) + len(suffix) > max_bytes:
            raise ctx.fail(
                Code.TOO_LARGE,
                f"{ctx.file_name}: record {row} alone is larger than {max_bytes} bytes",
                row=row,
            )
    parts.write(data, 1)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
