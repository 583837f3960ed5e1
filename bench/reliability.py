"""The fault matrix (issue #14): ``python -m bench.reliability [--scale K] [--only NAME ...]``.

Runs every fault kind of ``local.reliability.FAULTS`` against the four flows (inbound, outbound drain,
scheduled export, enqueue) on its own Azurite, and writes the table to ``bench/RELIABILITY.md`` (the
matrix section; ``bench/soak.py`` writes the soak section beside it). Counts, not timings, are the result:
every cell must be 0. Exit status 1 when one is not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from local.azurite import Azurite
from local.reliability import FAULTS, Scale, run_inproc, run_killed, total, write_markdown

OUT = Path(__file__).resolve().parent / "RELIABILITY.md"
MATRIX = Path(__file__).resolve().parent / "results" / "reliability-matrix.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--scale", type=float, default=1.0, help="workload multiplier (1 = 8 drops, 12 messages, 4 enqueues)"
    )
    p.add_argument("--only", nargs="*", default=None, help="fault names (default: all)")
    p.add_argument(
        "--max-kills", type=int, default=None, help="cap the SIGKILL row's kills (default: every boundary)"
    )
    p.add_argument("--out", type=Path, default=MATRIX)
    ns = p.parse_args(argv)
    scale = Scale(drops=8, messages=12, enqueues=4).times(ns.scale)
    command = "python -m bench.reliability" + (f" --scale {ns.scale:g}" if ns.scale != 1 else "") + (
        f" --only {' '.join(repr(o) for o in ns.only)}" if ns.only else "")  # fmt: skip
    location = Path(tempfile.mkdtemp(prefix="azurite-reliability-"))
    az = Azurite(location=location).start()  # our own data dir: a restart keeps the data
    results = []
    started = time.monotonic()
    try:
        for name, fault in FAULTS.items():
            if ns.only and name not in ns.only:
                continue
            unique = "r" + uuid.uuid4().hex[:12]
            print(f"== {name}", flush=True)
            if fault.kind == "subprocess":
                r = run_killed(az, unique, scale, max_kills=ns.max_kills, timeout=900)
            else:
                r = run_inproc(fault, az, unique, scale)
            print(
                json.dumps({k: v for k, v in r.items() if k not in ("faults_injected",)}, default=str),
                flush=True,
            )
            results.append(r)
    finally:
        az.stop()
        shutil.rmtree(location, ignore_errors=True)
    seconds = time.monotonic() - started
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    text = write_markdown(results, ns.out, command, scale, seconds)
    print(text)
    _gather()
    return 0 if all(total(r["counts"]) == 0 for r in results) else 1


def _gather() -> None:
    parts = ["# Reliability (issue #14)", "",
             "Written by `bash scripts/bench.sh reliability` (`bench/reliability.py`, `bench/soak.py`).", ""]  # fmt: skip
    for name in ("reliability-matrix.md", "reliability-soak.md"):
        f = MATRIX.parent / name
        if f.exists():
            parts.append(f.read_text().replace("\n# ", "\n## ").replace("\n## ", "\n### ", 0))
    OUT.write_text("\n".join(parts))


if __name__ == "__main__":
    sys.exit(main())
