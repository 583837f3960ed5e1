"""In-memory target tables: one table per (legal entity, entity label), rows keyed by the entity keys.
Keys compare case-insensitively, as F&O's SQL collation does."""

from __future__ import annotations

import threading

KeyTuple = tuple[str, ...]


class DataStore:
    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], dict[KeyTuple, dict[str, str]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _id(legal_entity: str, label: str) -> tuple[str, str]:
        return (legal_entity.upper(), label.lower())

    def upsert(
        self,
        legal_entity: str,
        label: str,
        rows: list[tuple[KeyTuple, dict[str, str]]],
        columns: list[str] | None = None,
    ) -> None:
        """Insert or update rows. A new row has every column (empty unless given), like a table row;
        an update changes only the fields the import carries."""
        with self._lock:
            table = self._tables.setdefault(self._id(legal_entity, label), {})
            for key, row in rows:
                existing = table.get(key)
                if existing is None:
                    existing = table[key] = dict.fromkeys(columns or [], "")
                existing.update(row)

    def rows(self, legal_entity: str, label: str) -> list[dict[str, str]]:
        with self._lock:
            return [dict(r) for r in self._tables.get(self._id(legal_entity, label), {}).values()]

    def count(self, legal_entity: str, label: str) -> int:
        with self._lock:
            return len(self._tables.get(self._id(legal_entity, label), {}))

    def tables(self) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (le, label), table in self._tables.items():
                out.setdefault(le, {})[label] = len(table)
            return out

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
