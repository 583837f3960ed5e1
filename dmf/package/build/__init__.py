"""Raw data file → DMF package(s), streaming.

Input is any readable binary stream (e.g. a blob download stream); output is one or more zip files in
``out_dir``. Delimited files are transcoded to the source format's encoding (CSV-Unicode ⇒ UTF-16LE + BOM)
with every line ending normalised to CRLF (also inside quoted fields), split by ``Limits`` rows/bytes
with the header repeated in every part. XML files are split by top-level record and written as UTF-8;
Excel files are kept as they are when within limits and otherwise split by rows.

Memory stays bounded: one read chunk (1 MiB) plus one batch of records; duplicate-key checking spills to
disk above ``Limits.key_spill_threshold`` rows. Bad input never raises: problems are returned and, when
any is an error, no package is left behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from dmf.package.build.context import (
    COMPRESS_LEVEL,
    UTF16_COMPRESS_LEVEL,
    Abort,
    BuildResult,
    BuiltPackage,
    Ctx,
)
from dmf.package.build.delimited import build_delimited
from dmf.package.build.excel import build_excel
from dmf.package.build.parts import Parts
from dmf.package.build.template import Template, TemplateError, open_template
from dmf.package.build.xml import build_xml
from dmf.package.catalogue import EntityInfo
from dmf.package.formats import FileKind, FormatRules, UnknownFormatError, format_rules
from dmf.package.limits import Limits
from dmf.package.problems import Code, Problem, Severity, has_errors

__all__ = [
    "COMPRESS_LEVEL",
    "UTF16_COMPRESS_LEVEL",
    "BuildResult",
    "BuiltPackage",
    "build_packages_from_raw",
    "safe_data_name",
]

_BAD_NAME_CHARS = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_RESERVED = {"manifest.xml", "packageheader.xml"}


class _InputTooLarge(Exception):
    pass


class _LimitedReader:
    """Counts bytes read from the source and stops at ``Limits.max_input_bytes``."""

    def __init__(self, src: BinaryIO, limit: int) -> None:
        self._src = src
        self.left = limit

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self.left -= len(data)
        if self.left < 0:
            raise _InputTooLarge
        return data


def safe_data_name(file_name: str, rules: FormatRules) -> str | None:
    """The data file's name inside the package: the original base name (traceability), or None if unusable."""
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or _BAD_NAME_CHARS.search(base) or base.casefold() in _RESERVED:
        return None
    if "." not in base:
        base += rules.extension
    return base


def build_packages_from_raw(
    src: BinaryIO,
    *,
    file_name: str,
    entity: EntityInfo,
    source_format: str,
    data_project: str,
    limits: Limits,
    out_dir: Path,
    template: Path | None = None,
    input_delimiter: str | None = None,
    check_duplicate_keys: bool = True,
    compress_level: int | None = None,
    template_name: str | None = None,
) -> BuildResult:
    """Wrap a raw data file into one or more packages. Never raises for bad input: see ``.problems``.

    ``template`` is a route's template package (its Manifest/PackageHeader are reused, mapping included;
    its data file is ignored). ``input_delimiter`` is the raw file's delimiter when it differs from the
    format's (e.g. ``;``): records are then re-written with the format's delimiter. ``compress_level``
    (deflate 1-9) defaults to 6, or 4 for UTF-16 data files (see ``UTF16_COMPRESS_LEVEL``).
    ``template_name`` names the template in messages (``template`` may be a temp file).
    """
    result = BuildResult()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def refuse(code: Code, message: str, file: str | None = file_name) -> BuildResult:
        result.problems.append(Problem(code, message, file=file, entity=entity.label))
        return result

    try:
        rules = format_rules(source_format)
    except UnknownFormatError as e:
        return refuse(Code.UNSUPPORTED_FORMAT, str(e))
    tpl: Template | None = None
    if template is not None:
        try:
            tpl = open_template(Path(template), template_name, entity, rules)
        except TemplateError as e:
            return refuse(Code.TEMPLATE_INVALID, str(e))
        if tpl.warning is not None:
            result.problems.append(
                Problem(
                    Code.TEMPLATE_INVALID, tpl.warning, Severity.WARNING, file=file_name, entity=entity.label
                )
            )
        rules = tpl.rules
    data_name = safe_data_name(file_name, rules)
    if data_name is None:
        return refuse(Code.BAD_FILE_NAME, f"{file_name!r} cannot be used as a package file name")
    if "'" in data_project:
        msg = f"data project name {data_project!r} contains an apostrophe, which DMF rejects"
        return refuse(Code.APOSTROPHE_IN_PROJECT, msg, file=None)
    if len(data_name) > limits.max_name_chars:
        return refuse(
            Code.NAME_TOO_LONG,
            f"the file name is {len(data_name)} characters (limit {limits.max_name_chars}, "
            f"FILE_NAME_MAX_CHARS); it names the data file in the package: {data_name[:60]!r}…",
        )
    # Files in out_dir are never named after the input: its name may be too long for the file system
    # (1,024 characters in a blob name; 255 bytes here) or hold characters a file name cannot.
    stem = "package"
    ctx = Ctx(
        file_name,
        data_name,
        entity,
        rules,
        data_project,
        limits,
        out_dir,
        stem,
        tpl.entity if tpl is not None else None,
        tpl.manifest if tpl is not None else None,
        tpl.header if tpl is not None else None,
        result.problems,
        compress_level if compress_level is not None else _default_level(rules),
    )
    return _build(src, ctx, result, input_delimiter, check_duplicate_keys)


def _build(
    src: BinaryIO, ctx: Ctx, result: BuildResult, input_delimiter: str | None, check_keys: bool
) -> BuildResult:
    parts = Parts(ctx)
    limited = _LimitedReader(src, ctx.limits.max_input_bytes)
    try:
        if ctx.rules.kind is FileKind.DELIMITED:
            build_delimited(limited, ctx, parts, result, input_delimiter, check_keys)  # type: ignore[arg-type]
        elif ctx.rules.kind is FileKind.XML:
            build_xml(limited, ctx, parts, result, check_keys)  # type: ignore[arg-type]
        else:
            build_excel(limited, ctx, parts, result, check_keys)  # type: ignore[arg-type]
    except Abort:
        pass
    except _InputTooLarge:
        ctx.problem(Code.TOO_LARGE, f"{ctx.file_name} is larger than {ctx.limits.max_input_bytes} bytes")
    except OSError as e:
        # Disk full or a broken source stream: not the user's data, so let the caller retry. The message
        # leaves out the file path: it is a temp file, and messages end up in the user's reason.
        parts.abandon()
        err = OSError(f"building packages for {ctx.file_name!r} failed: {e.strerror or e}")
        err.errno = e.errno
        raise err from e
    if has_errors(result.problems):
        parts.abandon()
        return result
    result.packages = parts.finalise()
    return result


def _default_level(rules: FormatRules) -> int:
    return UTF16_COMPRESS_LEVEL if (rules.encoding or "").startswith("utf-16") else COMPRESS_LEVEL
