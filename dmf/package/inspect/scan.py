"""What every data file's content check shares: its problems, the header against the EntityMapList, and
the duplicate key check."""

from __future__ import annotations

from dmf.package.catalogue import EntityInfo
from dmf.package.formats import FormatRules
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.limits import Limits
from dmf.package.manifest import EntityData
from dmf.package.problems import Code, Problem, Severity
from dmf.package.zipsafe import Tally


class ContentScan:
    """Checks one data file; appends problems and returns the data row count (None if not countable)."""

    def __init__(
        self,
        ent: EntityData,
        name: str,
        rules: FormatRules,
        info: EntityInfo | None,
        limits: Limits,
        problems: list[Problem],
        tally: Tally | None = None,
    ) -> None:
        self.ent, self.name, self.rules, self.info, self.limits, self.p = (
            ent,
            name,
            rules,
            info,
            limits,
            problems,
        )
        self.tally = tally  # None: a package built here, whose workbook build checked already

    def add(
        self, code: Code, message: str, severity: Severity = Severity.ERROR, row: int | None = None
    ) -> None:
        self.p.append(
            Problem(
                code,
                f"{self.name}: {message}",
                severity,
                file=self.name,
                entity=self.ent.entity_name,
                row=row,
            )
        )

    def mapped_key_columns(self, columns: list[str]) -> list[int] | None:
        """Check the header against the EntityMapList; return key column indexes (None = no key check)."""
        upper = [c.strip().upper() for c in columns]
        mapped = [m.xml_field.strip().upper() for m in self.ent.entity_map_list]
        missing = [m for m in mapped if m not in upper]
        if missing:
            self.add(
                Code.HEADER_MISMATCH,
                f"EntityMapList maps columns the file lacks: {', '.join(missing)}",
                row=1,
            )
        unmapped = [c for c in upper if c and c not in mapped]
        if unmapped and mapped:
            self.add(
                Code.HEADER_MISMATCH,
                f"columns not in the EntityMapList are ignored: {', '.join(unmapped)}",
                Severity.WARNING,
                row=1,
            )
        if self.info is None or not self.info.key_fields:
            return None
        # The key lives in entity fields; find the file column mapped to each key field.
        by_entity = {
            m.entity_field.strip().upper(): m.xml_field.strip().upper() for m in self.ent.entity_map_list
        }
        idx = []
        for k in self.info.key_fields:
            col = by_entity.get(k, k)
            if col not in upper:
                self.add(
                    Code.KEY_FIELD_MISSING,
                    f"key field {k} of {self.info.label} is not in the file",
                    Severity.WARNING,
                )
                return None
            idx.append(upper.index(col))
        return idx

    def finder(self) -> DuplicateKeyFinder:
        return DuplicateKeyFinder(self.limits.key_spill_threshold, self.limits.max_row_problems)

    def report_dups(self, finder: DuplicateKeyFinder) -> None:
        assert self.info is not None
        keys = ", ".join(self.info.key_fields)
        dups = finder.finish()
        for d in dups:
            shown = f" ({keys} = {', '.join(d.key)})" if d.key is not None else ""
            self.add(
                Code.DUPLICATE_KEY, f"row {d.row} repeats the key of row {d.first_row}{shown}", row=d.row
            )
        if finder.duplicate_count > len(dups):
            self.add(
                Code.DUPLICATE_KEY, f"{finder.duplicate_count - len(dups)} more rows repeat an earlier key"
            )
