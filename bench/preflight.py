"""Benchmark: pre-flight of a large raw CSV against entity metadata vs building its package, and its memory.

Run:  .venv/bin/python -m bench.preflight [--size-mb 1024] [--repeat 2]
Writes bench/results/preflight.md. Target: pre-flight adds at most 30% to the time of building the file's
package (``build_packages_from_raw`` as ``prepare_item`` runs it: CSV-Unicode, duplicate-key check, split by
100,000 rows), in bounded memory (< 100 MB above idle). Each run is a child process (peak = VmHWM − RSS
before the work); build and pre-flight runs are interleaved so both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEADER = (
    "CUSTOMERACCOUNT,ORGANIZATIONNAME,CUSTOMERGROUPID,CURRENCY,CREDITLIMIT,PARTYTYPE,CUSTOMERSINCEDATE,"
    "PAYMENTTERMS,ADDRESSCITY,QTY\n"
)
WORDS = [
    "north",
    "wholesale",
    "retail",
    "export",
    "trade",
    "industrial",
    "partner",
    "supply",
    "global",
    "metro",
    "alpha",
    "café",
    "straße",
]


def generate_csv(path: Path, size_mb: int, seed: int = 11) -> int:
    """Customer rows with typed columns: strings with lengths, a real, an enum, a date and an integer."""
    rnd = random.Random(seed)
    target = size_mb * 1024 * 1024
    written = 0
    i = 0
    with open(path, "wb", buffering=4 * 1024 * 1024) as f:
        f.write(HEADER.encode())
        written += len(HEADER)
        while written < target:
            rows = []
            for _ in range(10000):
                i += 1
                w = rnd.choices(WORDS, k=3)
                rows.append(
                    f'C{i:09d},"{w[0].title()} {w[1]} {w[2]}",G{rnd.randint(1, 40)},USD,'
                    f"{rnd.randint(0, 10**6)}.{rnd.randint(0, 99):02d},{rnd.choice(('Organization', 'Person'))},"
                    f"{date.fromordinal(rnd.randint(734000, 740000)).isoformat()},Net30,"
                    f"{w[1].title()},{rnd.randint(0, 5000)}\n"
                )
            block = "".join(rows).encode()
            f.write(block)
            written += len(block)
    return i


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from dmf.package.build import build_packages_from_raw
    from dmf.package.catalogue import EntityInfo
    from dmf.package.limits import Limits
    from dmf.package.preflight import PreflightOptions, preflight_delimited
    from dmf.fno.metadata import EntityMeta, FieldMeta, Snapshot
    mode, src, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    snap = Snapshot("bench", "2026-11-29T00:00:00+00:00")
    snap.enums["DirPartyType"] = [("Organization", 0), ("Person", 1)]
    fields = [
        FieldMeta("CUSTOMERACCOUNT", "string", True, True, 20), FieldMeta("ORGANIZATIONNAME", "string", False, False, 100),
        FieldMeta("CUSTOMERGROUPID", "string", True, False, 10), FieldMeta("CURRENCY", "string", False, False, 3),
        FieldMeta("CREDITLIMIT", "real"), FieldMeta("PARTYTYPE", "enum", enum="DirPartyType"),
        FieldMeta("CUSTOMERSINCEDATE", "date"), FieldMeta("PAYMENTTERMS", "string", False, False, 10),
        FieldMeta("ADDRESSCITY", "string", False, False, 60), FieldMeta("QTY", "int"),
    ]
    snap.entities["customers v3"] = EntityMeta("Customers V3", "CustCustomerV3Entity", "CustomerV3", "CustomersV3",
                                               {{f.staging: f for f in fields}})
    entity = EntityInfo("Customers V3", "CustCustomerV3Entity", key_fields=("CUSTOMERACCOUNT",))
    limits = Limits()
    idle = status("VmRSS")
    t = time.perf_counter()
    if mode == "build":
        with open(src, "rb") as f:
            r = build_packages_from_raw(f, file_name="Customers V3.csv", entity=entity, source_format="CSV-Unicode",
                                        data_project="Bench", limits=limits, out_dir=out)
        assert r.ok, r.problems[:3]
        rows, problems = r.rows, 0
    else:
        with open(src, "rb") as f:
            r = preflight_delimited(f, snapshot=snap, label="Customers V3", delimiter=",",
                                    opts=PreflightOptions(mode="enforce"), file_name="Customers V3.csv",
                                    max_record_chars=limits.max_record_chars)
        rows, problems = r.rows, r.total
    secs = time.perf_counter() - t
    print(idle, status("VmHWM"), secs, rows, problems)
    """
)


def run_child(mode: str, src: Path, out: Path) -> tuple[float, float, float, int, int]:
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), mode, str(src), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    idle_kb, peak_kb, secs, rows, problems = res.stdout.split()
    shutil.rmtree(out)
    return int(idle_kb) / 1024, int(peak_kb) / 1024, float(secs), int(rows), int(problems)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "preflight.md"))
    args, _ = ap.parse_known_args()
    work = Path(tempfile.mkdtemp(prefix="dmf-bench-pf-"))
    try:
        src = work / "customers.csv"
        t0 = time.perf_counter()
        rows = generate_csv(src, args.size_mb)
        size = src.stat().st_size
        print(
            f"generated {size / 2**20:.0f} MiB, {rows:,} rows in {time.perf_counter() - t0:.0f}s", flush=True
        )
        best: dict[str, tuple[float, float, float, int, int]] = {}
        for _ in range(args.repeat):
            for mode in ("build", "preflight"):
                r = run_child(mode, src, work / "out")
                print(mode, [round(x, 2) if isinstance(x, float) else x for x in r], flush=True)
                assert r[3] == rows, (mode, r[3], rows)
                if mode not in best or r[2] < best[mode][2]:
                    best[mode] = (r[0], max(r[1], best.get(mode, r)[1]), r[2], r[3], r[4])
        b, p = best["build"], best["preflight"]
        assert p[4] == 0, f"pre-flight found {p[4]} problems in good data"
        ratio = p[2] / b[2]
        lines = [
            "# Pre-flight against entity metadata: benchmark",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} CPUs "
            f"(shared; load average {os.getloadavg()[0]:.1f}), Python {platform.python_version()}; "
            f"`.venv/bin/python -m bench.preflight --size-mb {args.size_mb} --repeat {args.repeat}`.",
            "",
            f"Input: a {size / 2**20:,.0f} MiB UTF-8 CSV, {rows:,} rows × 10 columns (strings with lengths, a real, an "
            "enum, a date, an integer; 3 mandatory). Pre-flight checks every value of every typed column; the build "
            "is `prepare_item`'s (CSV-Unicode, duplicate-key check, 100,000 rows per package). Best of "
            f"{args.repeat} interleaved runs each, each in its own process.",
            "",
            "| Run | time (s) | MiB/s | idle RSS (MiB) | peak RSS (MiB) | peak above idle (MiB) |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in (("build the packages (baseline)", b), ("pre-flight", p)):
            lines.append(
                f"| {name} | {r[2]:.2f} | {size / 2**20 / r[2]:.0f} | {r[0]:.0f} | {r[1]:.0f} | {r[1] - r[0]:.0f} |"
            )
        lines += [
            "",
            f"**Pre-flight adds {ratio:.2f}× the build's time** (target ≤ 0.30), "
            f"**{p[1] - p[0]:.0f} MiB above idle** (target < 100 MiB; the build: {b[1] - b[0]:.0f} MiB).",
            "",
        ]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines), encoding="utf-8")
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
