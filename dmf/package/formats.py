"""DMF source data formats and the file rules F&O applies to each.

The names are F&O "Data source" format names (Data management > Configure data source). A route may use
a custom-named format; ``format_rules`` then needs the caller to say which known format it behaves like.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SourceFormat(StrEnum):
    CSV = "CSV"
    CSV_UNICODE = "CSV-Unicode"
    CSV_UTF8 = "CSV-UTF8"
    TAB_UNICODE = "TAB-Unicode"
    XML_ELEMENT = "XML-Element"
    XML_ATTRIBUTE = "XML-Attribute"
    EXCEL = "EXCEL"


class FileKind(StrEnum):
    DELIMITED = "delimited"
    XML = "xml"
    EXCEL = "excel"


@dataclass(frozen=True, slots=True)
class FormatRules:
    name: str
    kind: FileKind
    # Python codec for the data file, and whether it must start with a byte order mark.
    encoding: str | None
    bom: bytes
    delimiter: str | None
    crlf_required: bool
    extension: str
    # XML-Attribute puts field values in attributes of each record element, XML-Element in child elements.
    xml_attributes: bool = False
    note: str = ""


UTF16LE_BOM = b"\xff\xfe"
UTF8_BOM = b"\xef\xbb\xbf"

_RULES: dict[str, FormatRules] = {
    r.name.upper(): r
    for r in (
        # "Selected file is not Unicode" unless UTF-16LE with BOM (launch-control, verified end to end).
        FormatRules("CSV-Unicode", FileKind.DELIMITED, "utf-16-le", UTF16LE_BOM, ",", True, ".csv"),
        FormatRules("TAB-Unicode", FileKind.DELIMITED, "utf-16-le", UTF16LE_BOM, "\t", True, ".txt"),
        # Code page 65001. Written without BOM so the first header can never carry one into the mapping.
        FormatRules("CSV-UTF8", FileKind.DELIMITED, "utf-8", b"", ",", True, ".csv"),
        # Plain CSV reads with the format's code page (ANSI by default): non-ASCII text is only safe when
        # that code page matches; we write UTF-8 and flag non-ASCII content as a warning.
        FormatRules(
            "CSV", FileKind.DELIMITED, "utf-8", b"", ",", True, ".csv", note="code page set on the format"
        ),
        FormatRules("XML-Element", FileKind.XML, None, b"", None, False, ".xml"),
        FormatRules("XML-Attribute", FileKind.XML, None, b"", None, False, ".xml", xml_attributes=True),
        FormatRules("EXCEL", FileKind.EXCEL, None, b"", None, False, ".xlsx"),
    )
}


class UnknownFormatError(KeyError):
    pass


def format_rules(name: str, *, like: str | None = None) -> FormatRules:
    """Rules for a source format name (case-insensitive).

    ``like`` names a known format whose rules a custom-named format follows, e.g.
    ``format_rules("CSV-Pipe-Unicode", like="CSV-Unicode")``.
    """
    rules = _RULES.get(name.strip().upper())
    if rules is not None:
        return rules
    if like is not None:
        base = format_rules(like)
        return FormatRules(
            name,
            base.kind,
            base.encoding,
            base.bom,
            base.delimiter,
            base.crlf_required,
            base.extension,
            base.xml_attributes,
            f"custom format following {base.name}",
        )
    raise UnknownFormatError(f"unknown DMF source format {name!r}; known: {', '.join(known_formats())}")


def known_formats() -> list[str]:
    return sorted(r.name for r in _RULES.values())
