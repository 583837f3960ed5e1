"""An XML data file: well-formed, no forbidden constructs (defusedxml), its fields against the
EntityMapList, and duplicate keys. Streamed: each record is dropped once read."""

from __future__ import annotations

from collections.abc import Iterator

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from dmf.package.inspect.scan import ContentScan
from dmf.package.problems import Code, Severity
from dmf.package.zipsafe import ChunkReader


def scan_xml(scan: ContentScan, chunks: Iterator[bytes]) -> int | None:
    attrs_mode = scan.rules.xml_attributes
    keys = scan.info.key_fields if scan.info is not None else ()
    finder = scan.finder() if keys else None
    mapped = {m.xml_field.strip().upper() for m in scan.ent.entity_map_list}
    seen: set[str] = set()
    depth = 0
    rows = 0
    root = None
    try:
        for event, el in SafeET.iterparse(ChunkReader(chunks), events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if depth == 1:
                    root = el
                continue
            depth -= 1
            if depth != 1:
                continue
            rows += 1
            values = el.attrib if attrs_mode else {c.tag: (c.text or "") for c in el}
            upper = {k.rsplit("}", 1)[-1].upper(): v for k, v in values.items()}
            seen.update(upper)
            if finder is not None:
                finder.add(tuple([upper.get(k, "").strip().upper() for k in keys]), rows)
            assert root is not None
            root.remove(el)
    except DefusedXmlException as e:
        scan.add(Code.BAD_XML, f"forbidden XML construct ({type(e).__name__})")
        return None
    except SafeET.ParseError as e:
        scan.add(Code.BAD_XML, f"not well-formed XML ({e})")
        return None
    unknown = sorted(seen - mapped)
    if unknown and mapped:
        scan.add(
            Code.HEADER_MISMATCH,
            f"fields not in the EntityMapList are ignored: {', '.join(unknown)}",
            Severity.WARNING,
        )
    if finder is not None:
        scan.report_dups(finder)
    if rows == 0:
        scan.add(Code.NO_ROWS, "the file holds no records", Severity.WARNING)
    return rows
