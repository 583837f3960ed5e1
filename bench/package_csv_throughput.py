"""Benchmark: raw CSV → DMF package throughput vs `zip -6`, and peak memory for a ~1 GB CSV.

Run:  .venv/bin/python bench/package_csv_throughput.py [--size-mb 256] [--memory-size-mb 1024]
Writes bench/results/package.md. Every figure is a ratio against a baseline measured in the same run:
throughput against `zip -6` on the same input bytes (Python zipfile level 6 if `zip` is missing), memory
against a read-it-all conversion of the same file.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("north wholesale retail export trade industrial partner supply global metro alpha delta "
         "café straße søndergaard nuñez łódź", )[0].split()  # fmt: skip


def generate_csv(path: Path, size_mb: int, seed: int = 7) -> int:
    """Customer-like rows with unique keys, LF line endings (the build normalises to CRLF)."""
    rnd = random.Random(seed)
    target = size_mb * 1024 * 1024
    written = 0
    i = 0
    with open(path, "wb", buffering=4 * 1024 * 1024) as f:
        head = b"CUSTOMERACCOUNT,NAME,ADDRESSSTREET,ADDRESSCITY,CREDITLIMIT,CUSTOMERGROUPID\n"
        f.write(head)
        written += len(head)
        while written < target:
            rows = []
            for _ in range(10000):
                i += 1
                w = rnd.choices(WORDS, k=4)
                rows.append(f'C{i:09d},"{w[0].title()} {w[1]} {w[2]}",{rnd.randint(1, 999)} {w[3]} road,'
                            f"{w[1].title()},{rnd.randint(0, 10**6)}.{rnd.randint(0, 99):02d},G{rnd.randint(1, 40)}\n")  # fmt: skip
            block = "".join(rows).encode()
            f.write(block)
            written += len(block)
    return i


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    return min(timed(fn) for _ in range(n))


CHILD = textwrap.dedent(
    """
    import sys, time, zipfile
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from dmf.package.build import build_packages_from_raw
    from dmf.package.catalogue import EntityInfo
    from dmf.package.limits import Limits
    mode, src, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    def status(field):
        # VmHWM (peak RSS) starts afresh at exec, unlike ru_maxrss, which keeps the parent's peak.
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    idle = status("VmRSS")
    t = time.perf_counter()
    if mode == "stream":
        entity = EntityInfo("Customers V3", "CustCustomerV3Entity", key_fields=("CUSTOMERACCOUNT",))
        with open(src, "rb") as f:
            r = build_packages_from_raw(f, file_name="customers.csv", entity=entity, source_format="CSV-Unicode",
                                        data_project="Bench", limits=Limits(max_rows_per_package=None,
                                        max_bytes_per_package=None), out_dir=out)
        assert r.ok, r.problems
        rows = r.rows
    else:  # read it all: the obvious non-streaming conversion
        data = open(src, "rb").read()
        text = data.decode("utf-8").replace("\\r\\n", "\\n").replace("\\n", "\\r\\n")
        body = b"\\xff\\xfe" + text.encode("utf-16-le")
        with zipfile.ZipFile(out / "all.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr("customers.csv", body)
        rows = text.count("\\n") - 1
    secs = time.perf_counter() - t
    peak = status("VmHWM")
    print(idle, peak, secs, rows)
    """
)


def run_child(mode: str, src: Path, out: Path) -> tuple[float, float, float, int]:
    out.mkdir(parents=True, exist_ok=True)
    code = CHILD.format(root=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code, mode, str(src), str(out)], check=True, capture_output=True,
                         text=True)  # fmt: skip
    idle_kb, peak_kb, secs, rows = res.stdout.split()
    shutil.rmtree(out)
    return int(idle_kb) / 1024, int(peak_kb) / 1024, float(secs), int(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--memory-size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "package.md"))
    args, _ = ap.parse_known_args()  # scripts/bench.sh passes the same arguments to every benchmark

    import zipfile

    from dmf.package.build import build_packages_from_raw
    from dmf.package.catalogue import EntityInfo
    from dmf.package.limits import Limits

    work = Path(tempfile.mkdtemp(prefix="dmf-bench-"))
    lines: list[str] = []
    try:
        src = work / "customers.csv"
        rows = generate_csv(src, args.size_mb)
        size = src.stat().st_size
        zip_bin = shutil.which("zip")

        def zip6() -> None:
            (work / "z.zip").unlink(missing_ok=True)
            if zip_bin:
                subprocess.run([zip_bin, "-6", "-q", "-j", str(work / "z.zip"), str(src)], check=True)
            else:
                with zipfile.ZipFile(work / "z.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
                    zf.write(src, "customers.csv")

        base = best_of(args.repeat, zip6)
        base_size = (work / "z.zip").stat().st_size
        entity = EntityInfo("Customers V3", "CustCustomerV3Entity", key_fields=("CUSTOMERACCOUNT",))
        unlimited = Limits(max_rows_per_package=None, max_bytes_per_package=None)

        def ours(fmt: str, check: bool, limits: Limits = unlimited, level: int | None = None):  # type: ignore[no-untyped-def]
            def run() -> None:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                with open(src, "rb") as f:
                    r = build_packages_from_raw(f, file_name="customers.csv", entity=entity, source_format=fmt,
                                                data_project="Bench", limits=limits, out_dir=out,
                                                check_duplicate_keys=check, compress_level=level)  # fmt: skip
                assert r.ok and r.rows == rows, r.problems
                run.size = sum(p.bytes for p in r.packages)  # type: ignore[attr-defined]
                run.parts = len(r.packages)  # type: ignore[attr-defined]

            return run

        cases = [
            ("CSV-UTF8 (same bytes out, LF→CRLF), no key check", ours("CSV-UTF8", False)),
            ("CSV-UTF8, duplicate-key check on", ours("CSV-UTF8", True)),
            ("CSV-Unicode (UTF-16LE: 2× bytes to deflate, level 4), no key check", ours("CSV-Unicode", False)),
            ("CSV-Unicode forced to deflate level 6, no key check", ours("CSV-Unicode", False, level=6)),
            ("CSV-Unicode, duplicate-key check on", ours("CSV-Unicode", True)),
            ("CSV-Unicode, key check, split 100k rows/package", ours("CSV-Unicode", True,
                                                                     Limits(max_rows_per_package=100_000))),
        ]  # fmt: skip
        rows_out: list[tuple[str, float, int, int]] = []
        baseline_name = "`zip -6`" if zip_bin else "Python zipfile level 6 (`zip` not installed)"
        lines += [
            "# DMF package library: benchmarks",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, by `bench/package_csv_throughput.py`.",
            "",
            f"## Throughput: raw CSV → package ({size / 2**20:.0f} MiB, {rows:,} rows, best of {args.repeat})",
            "",
            "(baseline line)",
            "",
            "| Case | Time (s) | MiB/s of input | × baseline time (target ≤ 2) | Output MiB | Parts |",
            "|---|---|---|---|---|---|",
        ]
        baseline_line = lines.index("(baseline line)")
        for name, fn in cases:
            # Interleave baseline and case runs so both see the same load on this shared machine.
            t = float("inf")
            for _ in range(args.repeat):
                base = min(base, timed(zip6))
                t = min(t, timed(fn))
            rows_out.append((name, t, fn.size, fn.parts))  # type: ignore[attr-defined]
            print(name, round(t, 2), round(base, 2), flush=True)
        lines[baseline_line] = (
            f"Baseline: {baseline_name} on the same input file, best of {len(cases) * args.repeat + args.repeat} "
            f"runs interleaved with the cases: {base:.2f} s ({size / 2**20 / base:.0f} MiB/s), "
            f"zip {base_size / 2**20:.1f} MiB."
        )
        for name, t, out_size, parts in rows_out:
            lines.append(f"| {name} | {t:.2f} | {size / 2**20 / t:.0f} | {t / base:.2f} | "
                         f"{out_size / 2**20:.1f} | {parts} |")  # fmt: skip
        src.unlink()

        big = work / "big.csv"
        big_rows = generate_csv(big, args.memory_size_mb)
        big_size = big.stat().st_size
        s_idle, s_peak, s_secs, s_rows = run_child("stream", big, work / "o1")
        a_idle, a_peak, a_secs, a_rows = run_child("all", big, work / "o2")
        assert s_rows == big_rows == a_rows, (s_rows, big_rows, a_rows)
        lines += [
            "",
            f"## Memory: {big_size / 2**20:.0f} MiB CSV → CSV-Unicode package, {big_rows:,} rows",
            "",
            "Peak RSS of a fresh process running the conversion, minus its RSS after imports (idle).",
            "",
            "| Approach | Idle MiB | Peak MiB | Peak above idle MiB (target < 100) | Time (s) |",
            "|---|---|---|---|---|",
            f"| Streaming `build_packages_from_raw` (key check on) | {s_idle:.0f} | {s_peak:.0f} | "
            f"{s_peak - s_idle:.0f} | {s_secs:.1f} |",
            f"| Baseline: read it all, transcode, `writestr` | {a_idle:.0f} | {a_peak:.0f} | "
            f"{a_peak - a_idle:.0f} | {a_secs:.1f} |",
            "",
            f"Streaming uses {(s_peak - s_idle) / max(a_peak - a_idle, 1):.3f}× the baseline's extra memory.",
            "",
            "## Notes",
            "",
            "- The machine is shared with other engineers' test runs (load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end of this run);",
            "  compare ratios, not absolute times. Rows within a few tenths of each other are within the noise.",
            "- CSV-Unicode output is UTF-16LE, twice the bytes of the UTF-8 input. At deflate level 6 that alone",
            "  costs about 2× `zip -6`; level 4 (the default for UTF-16 data files) deflates it ~3× faster for a",
            "  ~10% larger package (the 'forced to deflate level 6' row shows the size and time traded).",
            "- The duplicate-key check keeps up to `Limits.key_spill_threshold` (200,000) keys in a dict, then",
            "  spills 64-bit hashes + row numbers to disk and checks 256 buckets at the end; the memory figure",
            f"  above includes that spill ({big_rows:,} keys).",
        ]
        print("\n".join(lines[-8:]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
