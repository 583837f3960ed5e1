"""50 packages dropped at once: time on the emulator's clock vs the sum of F&O's import durations, and
status calls per import vs log2(duration / initial interval) + 3.

Five data projects, ten packages each, each project with its own usual duration (as real imports have):
polling has to learn each project's duration to be both prompt and frugal. Runs on the embedded stack
(Azurite + emulator + local runner, virtual clock), so the figures are F&O-clock seconds.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local.azurite import Azurite  # noqa: E402
from local.embedded_stack import Stack  # noqa: E402
from local.fno_emulator import EmulatorConfig  # noqa: E402
from local.fno_emulator.config import DataProject, ProjectEntity  # noqa: E402
from local.samples import customer_groups_csv  # noqa: E402

DURATIONS = {"Groups-A": 300, "Groups-B": 600, "Groups-C": 900, "Groups-D": 1200, "Groups-E": 1800}
PER_PROJECT = 10
INITIAL = 15.0


def main() -> str:
    cfg = EmulatorConfig()
    cfg.data_projects = [
        DataProject(
            name=n, entities=[ProjectEntity(entity="Customer groups")], base_seconds=d, per_row_seconds=0
        )
        for n, d in DURATIONS.items()
    ]
    cfg.timings.queue_seconds = 0
    cfg.timings.not_found_seconds = 0
    wall = time.monotonic()
    with (
        Azurite() as az,
        Stack(az, "bench50", emulator_config=cfg, POLL_INITIAL_SECONDS=str(INITIAL)) as stack,
    ):
        start = stack.clock.now()
        n = 0
        for i in range(PER_PROJECT):
            for project in DURATIONS:
                stack.drop(
                    f"USMF/{project}/Customer groups__{i:02d}.csv",
                    customer_groups_csv([f"{project[-1]}{i:02d}"]),
                )
                n += 1
        stack.settle(timeout=1800)
        execs = [e for e in stack.emu.admin.executions() if e["kind"] == "import"]
        durations = [
            (datetime.fromisoformat(e["endAt"]) - datetime.fromisoformat(e["startAt"])).total_seconds()
            for e in execs
        ]
        ends = [datetime.fromisoformat(e["endAt"]) for e in execs]
        packages = [r for r in stack.outcomes() if r.get("Kind") == "package"]
        finished = max(r["FinishedAt"] for r in packages)
        elapsed = (finished - start).total_seconds()
        total = sum(durations)
        bounds = {e["executionId"]: math.log2(d / INITIAL) + 3 for e, d in zip(execs, durations, strict=True)}
        polls = {r["ExecutionId"]: r["PollCount"] for r in packages}
        over = [polls[x] - b for x, b in bounds.items()]
        statuses = {r["Status"] for r in packages}
        violations = stack.emu.admin.violations
    lines = [
        "## Inbound: 50 packages dropped at once",
        "",
        f"`bench/inbound_fifty_packages.py`: 5 data projects × {PER_PROJECT} packages, usual durations "
        f"{', '.join(f'{d}s' for d in DURATIONS.values())}; initial poll interval {INITIAL:.0f}s; F&O-clock seconds "
        f"(virtual clock). Wall time {time.monotonic() - wall:.0f}s.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| packages imported | {len(execs)} of {n} (statuses: {', '.join(sorted(statuses))}) | all |",
        f"| parallel-import violations | {violations} | 0 |",
        f"| elapsed on F&O's clock / sum of import durations | {elapsed:.0f}s / {total:.0f}s = **{elapsed / total:.3f}** | ≤ 1.15 |",
        f"| status calls per import: max over the bound log2(d/initial)+3 | **{max(over):+.2f}** (mean calls {statistics.mean(polls.values()):.2f}) | ≤ 0 |",
        f"| first import end → last import end | {(max(ends) - min(ends)).total_seconds():.0f}s | |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    text = main()
    print(text)
    out = ROOT / "bench" / "results" / "inbound_fifty_packages.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
