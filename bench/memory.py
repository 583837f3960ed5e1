"""Where a process's memory sits: RSS split into glibc's heap (in use / free), Python's object allocator
(pymalloc arenas: blocks in use / arena space) and the rest (mapped files, stacks, other mmaps).

Used by the soak to tell a leak (in-use bytes that grow) from fragmentation (free bytes the allocator
cannot give back) and to say in which allocator either sits."""

from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import tempfile
from dataclasses import dataclass

import psutil

MiB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc (or older than 2.33)
        return None


_LIBC = _libc()


def _pymalloc() -> tuple[int, int]:
    """(bytes in allocated blocks, bytes in arenas) from ``sys._debugmallocstats`` (it writes to fd 2)."""
    if not hasattr(sys, "_debugmallocstats"):
        return 0, 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as f:
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read()

    def grab(label: str) -> int:
        m = re.search(rf"^{label}\s*=\s*([\d,]+)", text, re.M)
        return int(m.group(1).replace(",", "")) if m else 0

    return grab("# bytes in allocated blocks"), grab(r"\d+ arenas \* \d+ bytes/arena")


@dataclass(frozen=True)
class Breakdown:
    rss: float
    heap_in_use: float
    heap_free: float
    heap_mmapped: float
    py_in_use: float
    py_arenas: float
    threads: int

    def line(self) -> str:
        return (
            f"RSS {self.rss:.0f} MiB = glibc heap {self.heap_in_use:.0f} in use + {self.heap_free:.0f} free "
            f"(+{self.heap_mmapped:.0f} mmapped), pymalloc {self.py_in_use:.0f} in use of {self.py_arenas:.0f}; "
            f"{self.threads} threads"
        )


def breakdown() -> Breakdown:
    info = _LIBC.mallinfo2() if _LIBC else None
    py_used, py_arenas = _pymalloc()
    proc = psutil.Process()
    return Breakdown(
        rss=proc.memory_info().rss / MiB,
        heap_in_use=(info.uordblks / MiB) if info else 0.0,
        heap_free=(info.fordblks / MiB) if info else 0.0,
        heap_mmapped=(info.hblkhd / MiB) if info else 0.0,
        py_in_use=py_used / MiB,
        py_arenas=py_arenas / MiB,
        threads=proc.num_threads(),
    )


def trimmed() -> Breakdown:
    """The breakdown after a full collection and glibc's ``malloc_trim(0)``: what stays if the allocators
    give back every page they can. Tells memory in use from memory an allocator keeps."""
    gc.collect()
    if _LIBC:
        _LIBC.malloc_trim(0)
    return breakdown()


_SHARED = (type(sys), type, type(len), type(breakdown))  # modules, classes, builtins, functions: not state


def deep_size(root: object, stop: tuple[object, ...] = ()) -> float:
    """MiB reachable from ``root`` (objects counted once), not walking into modules, classes, functions,
    threads' frames or the objects in ``stop``: what a structure holds, to tell whose state grows."""
    seen = {id(s) for s in stop}
    todo = [root]
    total = 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj, 0)
        todo.extend(gc.get_referents(obj))
    return total / MiB
