"""What a build shares: its result types, the context one input file is built in, and the abort signal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dmf.package.catalogue import EntityInfo
from dmf.package.formats import FormatRules
from dmf.package.limits import Limits
from dmf.package.manifest import EntityData, Manifest, PackageHeader, entity_maps_for, render_package
from dmf.package.problems import Code, Problem, Severity, has_errors

COMPRESS_LEVEL = 6
# UTF-16 text is half zero bytes: zlib's lazy matching at levels 5+ costs ~3.5x the time of level 4 for
# ~10% smaller output (bench/results/package.md), so UTF-16 data files default to level 4.
UTF16_COMPRESS_LEVEL = 4


@dataclass(frozen=True, slots=True)
class BuiltPackage:
    path: Path
    rows: int  # data rows (records), header excluded
    bytes: int  # size of the package zip file
    sha256: str  # of the package zip file
    data_file: str  # InputFilePath inside the package
    data_bytes: int  # uncompressed size of the data file
    part: int  # 1-based


@dataclass
class BuildResult:
    packages: list[BuiltPackage] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    source_encoding: str | None = None
    columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems) and bool(self.packages)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.packages)


class Abort(Exception):
    """Stop building; the problem is already recorded."""


@dataclass
class Ctx:
    file_name: str
    data_name: str
    entity: EntityInfo
    rules: FormatRules
    data_project: str
    limits: Limits
    out_dir: Path
    stem: str  # file name stem for the zips in out_dir; never taken from the input's name
    template_entity: EntityData | None
    template_manifest: Manifest | None
    template_header: PackageHeader | None
    problems: list[Problem] = field(default_factory=list)
    compress_level: int = COMPRESS_LEVEL

    def problem(self, code: Code, message: str, severity: Severity = Severity.ERROR, row: int | None = None):
        self.problems.append(
            Problem(code, message, severity, file=self.file_name, entity=self.entity.label, row=row)
        )

    def fail(self, code: Code, message: str, row: int | None = None) -> Abort:
        self.problem(code, message, row=row)
        return Abort()

    def package_xml(self, columns: list[str]) -> tuple[bytes, bytes]:
        """Manifest.xml and PackageHeader.xml for a part whose data file has ``columns``."""
        if self.template_entity is not None:
            assert self.template_manifest is not None and self.template_header is not None
            ent = self.template_entity
            ent.input_file_path = self.data_name
            man = self.template_manifest
            man.entities = [ent]
            return render_package(man, self.template_header)
        known = {f: f for f in self.entity.fields}
        ent = EntityData(
            entity_name=self.entity.label,
            input_file_path=self.data_name,
            source_format=self.rules.name,
            entity_map_list=entity_maps_for(columns, known),
            target_entity=self.entity.target_entity,
            execution_unit=self.entity.execution_unit,
            level_in_execution_unit=self.entity.level,
            sequence_in_level=self.entity.sequence,
        )
        man = Manifest(definition_group_name=self.data_project, description=self.data_project, entities=[ent])
        return render_package(man, PackageHeader(description=self.data_project))
