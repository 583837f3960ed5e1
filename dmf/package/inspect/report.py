"""What an inspection returns, and the names and errors every check shares."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field

from dmf.package.manifest import EntityData, Manifest, PackageHeader
from dmf.package.problems import Code, Problem, Severity, has_errors

MANIFEST = "Manifest.xml"
HEADER = "PackageHeader.xml"
# A damaged deflate stream surfaces as zlib.error, a bad CRC as BadZipFile.
CORRUPT = (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, RuntimeError, NotImplementedError, zlib.error)


@dataclass
class PackageReport:
    problems: list[Problem] = field(default_factory=list)
    manifest: Manifest | None = None
    header: PackageHeader | None = None
    files: list[str] = field(default_factory=list)
    uncompressed_bytes: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)  # entity label → data rows (header excluded)

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems)

    @property
    def entities(self) -> list[EntityData]:
        return self.manifest.entities if self.manifest is not None else []

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    def codes(self) -> set[Code]:
        return {p.code for p in self.problems}
