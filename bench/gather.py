"""Gather bench/results/*.md into bench/RESULTS.md (one section per area)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parts = [
        "# Benchmark results\n",
        "Written by `scripts/bench.sh`; each section is one area's latest run.\n",
    ]
    for f in sorted((HERE / "results").glob("*.md")):
        parts.append(f.read_text(encoding="utf-8").strip() + "\n")
    (HERE / "RESULTS.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
