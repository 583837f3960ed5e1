"""Entities routes can target: DMF label, AOT entity, key fields, composite flag, known fields."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class EntityInfo:
    """One DMF entity. ``label`` is what Manifest.xml's EntityName holds (not the OData name)."""

    label: str
    target_entity: str
    key_fields: tuple[str, ...] = ()
    composite: bool = False
    # Known DMF field names (upper case). Empty = unknown: any header column is accepted.
    fields: tuple[str, ...] = ()
    # Default sequencing inside a package (Manifest ExecutionUnit / LevelInExecutionUnit / SequenceInLevel).
    execution_unit: int = 1
    level: int = 1
    sequence: int = 1

    def __post_init__(self) -> None:
        if not self.label.strip() or not self.target_entity.strip():
            raise ValueError("EntityInfo needs a label and a target entity")
        # Normalise so lookups and header matching never depend on the caller's casing.
        object.__setattr__(self, "key_fields", tuple(k.upper() for k in self.key_fields))
        object.__setattr__(self, "fields", tuple(f.upper() for f in self.fields))


@dataclass
class Catalogue:
    """Entities by label and by AOT name (both case-insensitive)."""

    _by_label: dict[str, EntityInfo] = field(default_factory=dict)
    _by_target: dict[str, EntityInfo] = field(default_factory=dict)

    @classmethod
    def of(cls, entities: Iterable[EntityInfo]) -> Catalogue:
        cat = cls()
        for e in entities:
            cat.add(e)
        return cat

    def add(self, entity: EntityInfo) -> None:
        """Add or replace (a route's own definition wins over the built-in one)."""
        old = self._by_label.pop(entity.label.casefold(), None)
        if old is not None:
            self._by_target.pop(old.target_entity.casefold(), None)
        self._by_label[entity.label.casefold()] = entity
        self._by_target[entity.target_entity.casefold()] = entity

    def extended(self, entities: Iterable[EntityInfo]) -> Catalogue:
        """A copy with ``entities`` added, leaving this catalogue unchanged."""
        cat = Catalogue(dict(self._by_label), dict(self._by_target))
        for e in entities:
            cat.add(e)
        return cat

    def get(self, name: str) -> EntityInfo | None:
        """Look up by label ("Customer groups") or AOT name ("CustCustomerGroupEntity")."""
        key = name.strip().casefold()
        return self._by_label.get(key) or self._by_target.get(key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[EntityInfo]:
        return iter(self._by_label.values())

    def __len__(self) -> int:
        return len(self._by_label)


_DEFAULTS = (
    EntityInfo(
        "Customer groups",
        "CustCustomerGroupEntity",
        key_fields=("CUSTOMERGROUPID",),
        fields=(
            "CUSTOMERGROUPID",
            "DESCRIPTION",
            "PAYMENTTERMID",
            "DEFAULTDIMENSIONDISPLAYVALUE",
            "CLEARINGPERIODPAYMENTTERMNAME",
            "ISSALESTAXINCLUDEDINPRICE",
            "TAXGROUPID",
            "CUSTOMERACCOUNTNUMBERSEQUENCE",
            "WRITEOFFREASON",
        ),
    ),
    EntityInfo("Customers V3", "CustCustomerV3Entity", key_fields=("CUSTOMERACCOUNT",)),
    EntityInfo(
        "Fixed asset major type",
        "AssetMajorTypeEntity",
        key_fields=("MAJORTYPEID",),
        fields=("MAJORTYPEID", "DESCRIPTION"),
    ),
    EntityInfo("Customer definitions", "CustCustomerBaseEntity", key_fields=("CUSTOMERACCOUNT",)),
    EntityInfo("Sales orders composite V3", "SalesOrderV3CompositeEntity", composite=True),
)


def default_catalogue() -> Catalogue:
    """A fresh catalogue of common entities; routes extend it with ``add`` or ``extended``."""
    return Catalogue.of(replace(e) for e in _DEFAULTS)
