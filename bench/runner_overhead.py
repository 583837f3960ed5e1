"""Benchmark: local Functions runner overhead per activity call and per replay episode.

Run:  .venv/bin/python bench/runner_overhead.py [--n 200] [--repeat 2]
Writes bench/results/runner.md. Two orchestrations over the same trivial activity: a 200-activity fan-out
(``task_all``) and a 200-step sequence (200 replays of a growing history), each run with in-memory state
and with Table Storage persistence in Azurite. The baseline, measured in the same run, is calling the same
activity function directly 200 times; overhead = (orchestration wall time - direct time) / activity calls.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import azure.durable_functions as df  # noqa: E402
import azure.functions as func  # noqa: E402

from local.azurite import Azurite  # noqa: E402
from local.functions_runner import LocalRunner  # noqa: E402
from local.functions_runner.app_loader import index_functions  # noqa: E402

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="item")
def bump(item: dict) -> dict:
    return {"i": item["i"], "v": item["v"] + 1}


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    n = context.get_input()
    results = yield context.task_all([context.call_activity("bump", {"i": i, "v": i}) for i in range(n)])
    return len(results)


@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    n = context.get_input()
    item = {"i": 0, "v": 0}
    for i in range(n):
        item = yield context.call_activity("bump", {"i": i, "v": item["v"]})
    return item["v"]


def direct(n: int) -> float:
    fn = index_functions(app)["bump"].func  # the same callable the runner invokes
    t = time.perf_counter()
    item = {"i": 0, "v": 0}
    for i in range(n):
        item = fn({"i": i, "v": item["v"]})
    return time.perf_counter() - t


def run_case(runner: LocalRunner, name: str, n: int) -> dict[str, float]:
    episodes0, calls0 = runner.engine.episodes, runner.engine.activity_calls
    replay0 = runner.engine.replay_seconds
    t = time.perf_counter()
    iid = runner.start_new(name, f"{name}-{uuid.uuid4().hex[:8]}", n)
    status = runner.wait_for_instance(iid, timeout=600)
    wall = time.perf_counter() - t
    assert status["runtimeStatus"] == "Completed", status
    runner.wait_until_idle(60)  # the last episode's bookkeeping ends just after its status is written
    return {
        "wall": wall,
        "episodes": runner.engine.episodes - episodes0,
        "calls": runner.engine.activity_calls - calls0,
        "sdk": runner.engine.replay_seconds - replay0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    ns = ap.parse_args()
    n = ns.n
    # the direct baseline is sub-millisecond: take the median of many runs
    base = statistics.median(direct(n) for _ in range(50))
    rows = []
    with Azurite() as az:
        for storage in ("memory", "azurite"):
            runner = LocalRunner(
                app=app,
                host_json=ROOT / "host.json",
                settings={"TASKHUB_NAME": "benchhub"},
                task_hub="bench" + uuid.uuid4().hex[:8],
                storage_connection_string=az.connection_string,
                in_memory=storage == "memory",
            ).start()
            try:
                for case in ("fan_out", "sequence"):
                    results = [run_case(runner, case, n) for _ in range(ns.repeat)]
                    best = min(results, key=lambda r: r["wall"])
                    per_call = (best["wall"] - base) / best["calls"]
                    per_episode = best["wall"] / best["episodes"]
                    # what the runner adds around the SDK: wall time minus the SDK replay and the direct calls
                    best["own"] = max(0.0, best["wall"] - best["sdk"] - base) / best["calls"]
                    rows.append((case, storage, best, per_call, per_episode))
                    print(f"{case:9s} {storage:8s} wall {best['wall']:.3f}s episodes {best['episodes']:.0f} "
                          f"overhead/call {per_call * 1000:.2f} ms per-episode {per_episode * 1000:.2f} ms")  # fmt: skip
            finally:
                runner.stop()

    lines = [
        "## Local Functions runner (issue 4)",
        "",
        "`bench/runner_overhead.py`: a trivial activity (`bump`, returns a dict) called "
        f"{n} times by a fan-out (`task_all`) and by a {n}-step sequence, through the runner "
        "(SDK orchestrator handle, worker converters, thread pool limits from `host.json`).",
        f"Baseline, same run: calling the activity function directly {n} times = "
        f"{base * 1e6:.0f} µs in total ({base / n * 1e6:.2f} µs per call).",
        "",
        "| orchestration | state | wall time | episodes (replays) | ratio to direct | overhead per activity call"
        " | wall time per episode | of which SDK replay | runner's own cost per call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, storage, best, per_call, per_episode in rows:
        lines.append(
            f"| {case} ({n}) | {storage} | {best['wall'] * 1000:.0f} ms | {best['episodes']:.0f} | "
            f"{best['wall'] / base:,.0f}× | {per_call * 1000:.2f} ms | {per_episode * 1000:.2f} ms | "
            f"{best['sdk'] / best['wall']:.0%} | {best['own'] * 1000:.2f} ms |"
        )
    lines += [
        "",
        "Columns: *overhead per activity call* = (wall − direct baseline) / calls; *of which SDK replay* = share",
        "of wall time spent inside azure-functions-durable's orchestrator handle (mostly `dateutil` parsing every",
        "history timestamp, which the Python worker pays in Azure too); *runner's own cost* = wall time minus the",
        "SDK replay and the baseline, per call (scheduling, pools, history bookkeeping, storage writes).",
        "",
        "Reading: the sequence replays a growing history once per step (O(n²) events through the SDK), which is",
        "inherent to Durable replay; the fan-out needs few episodes because completions are batched into each",
        "episode. With Azurite, every episode writes its events in one Table transaction plus the instance row,",
        "and every activity result is persisted before it is acknowledged.",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {platform.system()}; "
        f"best of {ns.repeat} runs per row.",
        "",
    ]
    out = ROOT / "bench" / "results" / "runner.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
