"""Plain-text tables and a progress line on stderr (no dependency)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import IO, Any, BinaryIO


def emit_json(body: Any, out: IO[str] | None = None) -> None:
    (out or sys.stdout).write(json.dumps(body, indent=2, default=str) + "\n")


def _cell(v: Any, width: int | None) -> str:
    text = "" if v is None else str(v)
    text = " ".join(text.split())  # one line per row
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    out: IO[str] | None = None,
    *,
    wide: Sequence[str] = (),
    max_width: int = 60,
) -> None:
    """``columns`` are (key, heading); columns named in ``wide`` are not shortened."""
    out = out or sys.stdout
    if not rows:
        out.write("  (none)\n")
        return
    cells = [[_cell(r.get(k), None if k in wide else max_width) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    out.write("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for c in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip() + "\n")


def fields(pairs: Sequence[tuple[str, Any]], out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    shown = [(k, v) for k, v in pairs if v not in (None, "", [])]
    width = max((len(k) for k, _ in shown), default=0)
    for k, v in shown:
        out.write(f"{k.ljust(width)}  {v}\n")


class Progress:
    """``label: 12.3 / 40.0 MiB (31%)`` redrawn on stderr at most 10 times a second; off unless enabled."""

    def __init__(self, label: str, total: int | None, enabled: bool, err: IO[str] | None = None) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.err = err or sys.stderr
        self.done = 0
        self.counting = False
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw()

    def stage(self, label: str, *, counting: bool = False) -> None:
        """A new step; ``counting`` when its bytes are counted through ``reader`` (else only the label)."""
        self.label, self.counting, self.done = label, counting, 0
        if self.enabled:
            self._draw()

    def _draw(self) -> None:
        mib = self.done / 2**20
        if not self.counting:
            text = f"{self.label} …"
        elif self.total:
            pct = min(100, int(100 * self.done / self.total))
            text = f"{self.label}: {mib:.1f} / {self.total / 2**20:.1f} MiB ({pct}%)"
        else:
            text = f"{self.label}: {mib:.1f} MiB"
        self.err.write("\r\033[K" + text)
        self.err.flush()

    def close(self) -> None:
        if self.enabled:
            self.err.write("\r\033[K")
            self.err.flush()

    def reader(self, f: BinaryIO) -> BinaryIO:
        return _Counting(f, self)  # type: ignore[return-value]


class _Counting:
    def __init__(self, f: BinaryIO, progress: Progress) -> None:
        self._f, self._p = f, progress

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._p.advance(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)
