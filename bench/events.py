"""Pushed completion vs polling: delay from F&O finishing an import to our outcome row, and status calls.

The same workload runs twice on the embedded stack (Azurite + emulator + local runner, virtual clock, so the
figures are F&O-clock seconds): once polling alone (events off, the app's usual learned schedule), once with
the emulator posting F&O's DMF import-status business event to ``/api/fno/events`` (events on, polling as the
fallback every ``FALLBACK`` s). Three data projects with different durations, several packages each, all
dropped at once (the import gate runs them one at a time, so every delay also delays the next import).
"""

from __future__ import annotations

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

DURATIONS = {"Groups-A": 120, "Groups-B": 600, "Groups-C": 1500}
PER_PROJECT = 4
INITIAL = 15.0
FALLBACK = 300.0
TARGET_DELAY = 5.0


def run(az: Azurite, name: str, events: bool) -> dict:
    cfg = EmulatorConfig()
    cfg.data_projects = [
        DataProject(
            name=n, entities=[ProjectEntity(entity="Customer groups")], base_seconds=d, per_row_seconds=0
        )
        for n, d in DURATIONS.items()
    ]
    settings = {"POLL_INITIAL_SECONDS": str(INITIAL)}
    if events:
        settings |= {"FNO_EVENTS_ENABLED": "true", "FNO_EVENTS_FALLBACK_POLL_SECONDS": str(FALLBACK)}
    wall = time.monotonic()
    with Stack(az, name, emulator_config=cfg, **settings) as stack:
        stack.enable_business_events()  # posted in both runs: with events off the app answers 404
        start = stack.clock.now()
        for i in range(PER_PROJECT):
            for project in DURATIONS:
                stack.drop(
                    f"USMF/{project}/Customer groups__{i:02d}.csv",
                    customer_groups_csv([f"{project[-1]}{i:02d}"]),
                )
        stack.settle(timeout=1800)
        execs = {e["executionId"]: e for e in stack.emu.admin.executions() if e["kind"] == "import"}
        packages = [r for r in stack.outcomes() if r.get("Kind") == "package"]
        delays = [
            (r["FinishedAt"] - datetime.fromisoformat(execs[r["ExecutionId"]]["endAt"])).total_seconds()
            for r in packages
        ]
        status_calls = len(stack.emu.admin.calls("GetExecutionSummaryStatus"))
        finished = max(r["FinishedAt"] for r in packages)
        sent = stack.emu.admin.business_events_sent()
        return {
            "packages": len(packages),
            "statuses": sorted({r["Status"] for r in packages}),
            "delays": delays,
            "status_calls": status_calls,
            "polls": [r["PollCount"] for r in packages],
            "elapsed": (finished - start).total_seconds(),
            "violations": stack.emu.admin.violations,
            "events_raised": sum(
                1 for s in sent if (s.get("response") or {}).get("results", [{}])[0].get("result") == "raised"
            ),
            "wall": time.monotonic() - wall,
        }


def main() -> str:
    with Azurite() as az:
        polling = run(az, "benchpoll", events=False)
        pushed = run(az, "benchevents", events=True)
    n = PER_PROJECT * len(DURATIONS)

    def row(label: str, f) -> str:
        return f"| {label} | {f(polling)} | {f(pushed)} |"

    ok = max(pushed["delays"]) < TARGET_DELAY and pushed["status_calls"] <= polling["status_calls"]
    lines = [
        "## Inbound: pushed completion (F&O business event) vs polling",
        "",
        f"`bench/events.py`: {len(DURATIONS)} data projects × {PER_PROJECT} packages (F&O durations "
        f"{', '.join(f'{d}s' for d in DURATIONS.values())}), all dropped at once, imported one at a time; the "
        f"same workload polled (initial interval {INITIAL:.0f}s, learned durations) and with the emulator posting "
        f"the DMF import-status business event (fallback poll every {FALLBACK:.0f}s). F&O-clock seconds "
        f"(virtual clock). Wall time {polling['wall']:.0f}s + {pushed['wall']:.0f}s.",
        "",
        "| measure | polling alone (baseline) | events on |",
        "|---|---|---|",
        row("packages imported (statuses)", lambda r: f"{r['packages']} of {n} ({', '.join(r['statuses'])})"),
        row("parallel-import violations", lambda r: r["violations"]),
        row("F&O finished → outcome row: mean", lambda r: f"{statistics.mean(r['delays']):.1f}s"),
        row(
            "F&O finished → outcome row: max (target < 5 s with events)",
            lambda r: f"**{max(r['delays']):.1f}s**",
        ),
        row("status calls, total (target: events ≤ polling)", lambda r: f"**{r['status_calls']}**"),
        row(
            "status calls per import: mean / max",
            lambda r: f"{statistics.mean(r['polls']):.2f} / {max(r['polls'])}",
        ),
        row("business events that woke an import", lambda r: r["events_raised"]),
        row("first drop → last outcome", lambda r: f"{r['elapsed']:.0f}s"),
        "",
        f"Targets met: **{'yes' if ok else 'NO'}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    text = main()
    print(text)
    out = ROOT / "bench" / "results" / "events.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
