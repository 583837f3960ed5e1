"""Duplicate-key detection over any number of rows in bounded memory.

Keys are hashed to 64 bits (Python's per-process tuple hash). Up to ``spill_threshold`` hashes live in a dict, so duplicates are
found immediately with both row numbers and the key text. Above that, every (hash, row) pair goes to one
of 256 bucket files on disk and ``finish`` checks one bucket at a time. A 64-bit hash collision (about
3 in a million at 10 million rows) would report a false duplicate; the message says which rows to check.
"""

from __future__ import annotations

import os
import struct
import tempfile
from array import array
from dataclasses import dataclass

_BUCKETS = 256
_PAIR = struct.Struct("<QQ")


@dataclass(frozen=True, slots=True)
class Duplicate:
    row: int  # the later row
    first_row: int
    key: tuple[str, ...] | None  # None when found after spilling (key text not kept)


def key_hash(key: tuple[str, ...]) -> int:
    # Python's tuple hash (SipHash of each string) is 64-bit, C-fast and stable within one process,
    # which is all one check needs; spill files never outlive it.
    return hash(key) & 0xFFFFFFFFFFFFFFFF


class DuplicateKeyFinder:
    def __init__(self, spill_threshold: int = 500_000, max_reported: int = 20, tmp_dir: str | None = None):
        self.spill_threshold = spill_threshold
        self.max_reported = max_reported
        self.tmp_dir = tmp_dir
        self._seen: dict[int, int] | None = {}
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._files: list = []
        self._buffers: list[bytearray] = []
        self.duplicates: list[Duplicate] = []
        self.duplicate_count = 0

    def add(self, key: tuple[str, ...], row: int) -> None:
        h = key_hash(key)
        if self._seen is not None:
            first = self._seen.get(h)
            if first is not None:
                self._record(Duplicate(row, first, key))
                return
            self._seen[h] = row
            if len(self._seen) > self.spill_threshold:
                self._spill()
            return
        buf = self._buffers[h & (_BUCKETS - 1)]
        buf += _PAIR.pack(h, row)
        if len(buf) >= 64 * 1024:
            self._flush(h & (_BUCKETS - 1))

    def _record(self, d: Duplicate) -> None:
        self.duplicate_count += 1
        if len(self.duplicates) < self.max_reported:
            self.duplicates.append(d)

    def _spill(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="dmfkeys-", dir=self.tmp_dir)
        self._files = [open(os.path.join(self._dir.name, f"{i:03d}"), "wb") for i in range(_BUCKETS)]  # noqa: SIM115
        self._buffers = [bytearray() for _ in range(_BUCKETS)]
        assert self._seen is not None
        for h, row in self._seen.items():
            self._buffers[h & (_BUCKETS - 1)] += _PAIR.pack(h, row)
        self._seen = None
        for i in range(_BUCKETS):
            self._flush(i)

    def _flush(self, i: int) -> None:
        self._files[i].write(self._buffers[i])
        self._buffers[i].clear()

    def finish(self) -> list[Duplicate]:
        """Check the spilled buckets (if any) and return the reported duplicates, in row order."""
        if self._seen is None and self._dir is not None:
            for i in range(_BUCKETS):
                self._flush(i)
                self._files[i].close()
            late: list[Duplicate] = []
            for i in range(_BUCKETS):
                pairs = array("Q")
                with open(os.path.join(self._dir.name, f"{i:03d}"), "rb") as f:
                    pairs.frombytes(f.read())
                first: dict[int, int] = {}
                for j in range(0, len(pairs), 2):
                    h, row = pairs[j], pairs[j + 1]
                    prev = first.get(h)
                    if prev is None:
                        first[h] = row
                    else:
                        late.append(Duplicate(max(row, prev), min(row, prev), None))
            late.sort(key=lambda d: d.row)
            for d in late:
                self._record(d)
            self.close()
        return sorted(self.duplicates, key=lambda d: d.row)

    def close(self) -> None:
        for f in self._files:
            if not f.closed:
                f.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
