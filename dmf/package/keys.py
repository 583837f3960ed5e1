"""Duplicate-key detection over any number of rows in bounded memory.

Up to ``spill_threshold`` distinct keys live in a dict (key → first row), so duplicates are found with
both row numbers and the key text, and whole batches are checked with C-level dict/set operations.
Above that, keys are reduced to 64-bit hashes (Python's per-process hash, stable for one run) and
appended with their row numbers to a spill file; ``finish`` partitions it into 256 bucket files and
checks one bucket at a time. A 64-bit collision (about 3 in a million at 10 million rows) would report a
false duplicate; the message names both rows so a person can check.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

_BUCKETS = 256
_READ = 1 << 16  # hashes per read when partitioning


@dataclass(frozen=True, slots=True)
class Duplicate:
    row: int  # the later row
    first_row: int
    key: tuple[str, ...] | None  # None when found after spilling (key text not kept)


def _as_tuple(key: Hashable) -> tuple[str, ...]:
    return key if isinstance(key, tuple) else (str(key),)


class DuplicateKeyFinder:
    """Feed keys (a string for a one-field key, a tuple otherwise) with their row numbers."""

    def __init__(
        self, spill_threshold: int = 200_000, max_reported: int = 20, tmp_dir: str | None = None
    ) -> None:
        self.spill_threshold = spill_threshold
        self.max_reported = max_reported
        self.tmp_dir = tmp_dir
        self._seen: dict[Hashable, int] | None = {}
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._hashes = None
        self._rows = None
        self.duplicates: list[Duplicate] = []
        self.duplicate_count = 0

    def add(self, key: Hashable, row: int) -> None:
        self.add_batch([key], row)

    def add_batch(self, keys: Sequence[Hashable], first_row: int) -> None:
        """Keys of consecutive rows starting at ``first_row``."""
        if not keys:
            return
        rows = range(first_row, first_row + len(keys))
        if self._seen is None:
            self._hashes.write(array("q", map(hash, keys)).tobytes())  # type: ignore[union-attr]
            self._rows.write(array("q", rows).tobytes())  # type: ignore[union-attr]
            return
        seen = self._seen
        new = dict(zip(keys, rows, strict=True))
        if len(new) == len(keys) and seen.keys().isdisjoint(new):
            seen.update(new)  # the common case: no duplicates, all in C
        else:
            for key, row in zip(keys, rows, strict=True):
                first = seen.get(key)
                if first is None:
                    seen[key] = row
                else:
                    self._record(Duplicate(row, first, _as_tuple(key)))
        if len(seen) > self.spill_threshold:
            self._spill()

    def _record(self, d: Duplicate) -> None:
        self.duplicate_count += 1
        if len(self.duplicates) < self.max_reported:
            self.duplicates.append(d)

    def _spill(self) -> None:
        assert self._seen is not None
        self._dir = tempfile.TemporaryDirectory(prefix="dmfkeys-", dir=self.tmp_dir)
        self._hashes = open(os.path.join(self._dir.name, "hashes"), "wb")  # noqa: SIM115 - closed in finish
        self._rows = open(os.path.join(self._dir.name, "rows"), "wb")  # noqa: SIM115
        seen, self._seen = self._seen, None
        self._hashes.write(array("q", map(hash, seen.keys())).tobytes())
        self._rows.write(array("q", seen.values()).tobytes())

    def finish(self) -> list[Duplicate]:
        """Check spilled keys (if any); return the reported duplicates in row order."""
        if self._seen is None and self._dir is not None:
            assert self._hashes is not None and self._rows is not None
            self._hashes.close()
            self._rows.close()
            late = self._check_spilled(self._dir.name)
            late.sort(key=lambda d: d.row)
            for d in late:
                self._record(d)
            self.close()
        return sorted(self.duplicates, key=lambda d: d.row)

    def _check_spilled(self, folder: str) -> list[Duplicate]:
        paths = [os.path.join(folder, f"b{i:03d}") for i in range(_BUCKETS)]
        files = [open(p, "wb") for p in paths]  # noqa: SIM115 - closed just below
        try:
            with (
                open(os.path.join(folder, "hashes"), "rb") as fh,
                open(os.path.join(folder, "rows"), "rb") as fr,
            ):
                while True:
                    hs = array("q")
                    rs = array("q")
                    hs.frombytes(fh.read(_READ * 8))
                    rs.frombytes(fr.read(_READ * 8))
                    if not hs:
                        break
                    parts: list[array] = [array("q") for _ in range(_BUCKETS)]
                    for h, r in zip(hs, rs, strict=True):
                        part = parts[h & (_BUCKETS - 1)]
                        part.append(h)
                        part.append(r)
                    for f, part in zip(files, parts, strict=True):
                        if part:
                            f.write(part.tobytes())
        finally:
            for f in files:
                f.close()
        late: list[Duplicate] = []
        for p in paths:
            pairs = array("q")
            with open(p, "rb") as f:
                pairs.frombytes(f.read())
            hs, rs = pairs[0::2], pairs[1::2]
            first = dict(zip(hs, rs, strict=True))  # keeps the last row per hash
            if len(first) == len(hs):
                continue
            earliest: dict[int, int] = {}
            for h, r in zip(hs, rs, strict=True):
                prev = earliest.get(h)
                if prev is None:
                    earliest[h] = r
                else:
                    late.append(Duplicate(max(r, prev), min(r, prev), None))
        return late

    def close(self) -> None:
        for f in (self._hashes, self._rows):
            if f is not None and not f.closed:
                f.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def cell_key(values: Sequence[object], key_idx: Sequence[int]) -> tuple[str, ...]:
    """The key of a row of cells (a worksheet row): each key cell as text, trimmed and upper-cased; a
    missing or empty cell is ""."""
    return tuple(
        ["" if k >= len(values) or values[k] is None else str(values[k]).strip().upper() for k in key_idx]
    )
