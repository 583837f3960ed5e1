"""Staging and target validation of records against the entity catalogue.

Type conversion problems (wrong type, unknown enum value) are staging errors, as in F&O where the
source-to-staging step converts values; missing keys, mandatory fields, lengths and duplicate keys are
target errors (staging-to-target). Both are returned by GetExecutionErrors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from .config import CatalogueEntity, EntityField
from .package_reader import Record, to_text

KeyTuple = tuple[str, ...]


@dataclass
class RowError:
    record_id: int
    entity_label: str
    field: str
    message: str
    stage: str  # "staging" | "target"
    values: dict[str, str]

    def as_api(self) -> dict[str, str]:
        return {"RecordId": str(self.record_id), "Field": self.field, "ErrorMessage": self.message}


class _ConversionError(Exception):
    pass


def _convert(value: object, f: EntityField) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return ""
    convert = _CONVERTERS.get(f.type)
    if convert is None:
        raise _ConversionError
    return convert(value, f)


def _to_string(value: object, f: EntityField) -> str:
    return to_text(value)


def _to_int(value: object, f: EntityField) -> str:
    if isinstance(value, bool):
        raise _ConversionError
    if isinstance(value, int):
        return str(value)
    try:
        return str(int(str(value)))
    except ValueError as exc:
        raise _ConversionError from exc


def _to_decimal(value: object, f: EntityField) -> str:
    try:
        d = Decimal(str(value))
    except InvalidOperation as exc:
        raise _ConversionError from exc
    if not d.is_finite():
        raise _ConversionError
    text = format(d.normalize(), "f")
    return text if text != "-0" else "0"


def _to_date(value: object, f: EntityField) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).date().isoformat()
    except ValueError as exc:
        raise _ConversionError from exc


def _to_datetime(value: object, f: EntityField) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).isoformat()
    except ValueError as exc:
        raise _ConversionError from exc


def _to_enum(value: object, f: EntityField) -> str:
    text = str(value)
    allowed = f.values or []
    for v in allowed:
        if v.lower() == text.lower():
            return v
    if text.isdigit() and int(text) < len(allowed):
        return allowed[int(text)]  # enums may also come as their integer value
    raise _ConversionError


_CONVERTERS: dict[str, Callable[[object, EntityField], str]] = {
    "string": _to_string,
    "int": _to_int,
    "decimal": _to_decimal,
    "date": _to_date,
    "datetime": _to_datetime,
    "enum": _to_enum,
}


_TYPE_NAMES = {"int": "Integer", "decimal": "Real", "date": "Date", "datetime": "UtcDateTime", "enum": "Enum"}


@dataclass
class Validated:
    good: list[tuple[KeyTuple, dict[str, str]]]
    errors: list[RowError]
    total: int


def validate(records: list[Record], entity: CatalogueEntity) -> Validated:
    """Validate the records of one (non-composite) entity. Later rows with a key seen earlier in the
    same file fail as duplicates, so the first one wins (as a unique index on staging would)."""
    good: list[tuple[KeyTuple, dict[str, str]]] = []
    errors: list[RowError] = []
    seen: set[KeyTuple] = set()
    for rec in records:
        row: dict[str, str] = {}
        row_errors: list[RowError] = []
        raw = {k: to_text(v) for k, v in rec.values.items()}
        for name, value in rec.values.items():
            f = entity.field(name)
            if f is None:
                if entity.open_fields and value is not None:
                    row[name.upper()] = to_text(value).strip()
                continue
            try:
                row[f.name] = _convert(value, f)
            except _ConversionError:
                if f.type == "enum":
                    msg = f"Enum value '{to_text(value)}' is not valid for field {f.name}."
                else:
                    msg = (
                        f"Error converting value '{to_text(value)}' of field {f.name} "
                        f"to type {_TYPE_NAMES.get(f.type, f.type)}."
                    )
                row_errors.append(RowError(rec.record_id, entity.label, f.name, msg, "staging", raw))
        if not row_errors:
            for f in entity.fields:
                value = row.get(f.name, "")
                if (f.name in entity.keys or f.mandatory) and value == "":
                    row_errors.append(
                        RowError(
                            rec.record_id,
                            entity.label,
                            f.name,
                            f"Field '{f.name}' must be filled in.",
                            "target",
                            raw,
                        )
                    )
                elif f.max_length and f.type == "string" and len(value) > f.max_length:
                    row_errors.append(
                        RowError(
                            rec.record_id,
                            entity.label,
                            f.name,
                            f"The value '{value}' of field {f.name} is longer than {f.max_length} characters.",
                            "target",
                            raw,
                        )
                    )
        if not row_errors:
            key = tuple(row.get(k, "").upper() for k in entity.keys)
            if key in seen:
                row_errors.append(
                    RowError(
                        rec.record_id,
                        entity.label,
                        ",".join(entity.keys),
                        f"Cannot create a record in {entity.target_entity} ({entity.label}). "
                        f"The record already exists: {_key_text(entity.keys, row)}.",
                        "target",
                        raw,
                    )
                )
            else:
                seen.add(key)
                good.append((key, row))
        errors.extend(row_errors)
    return Validated(good=good, errors=errors, total=len(records))


def _key_text(keys: list[str], row: dict[str, str]) -> str:
    return ", ".join(f"{k}={row.get(k, '')}" for k in keys)
