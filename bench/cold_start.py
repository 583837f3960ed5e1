"""Cold start: ``import function_app`` against a bare ``DFApp`` with one orchestrator and one activity.

What the Python worker pays before the first invocation of a new instance is, first of all, importing the
app's module. Each measurement runs in a fresh interpreter (nothing cached in ``sys.modules``); the variants
are interleaved and each reports its median over ``--runs`` runs:

* time: ``import <module>`` measured inside the child around the import (interpreter start-up, the same for
  both, is left out): wall time, and CPU time (user + system), which a shared, loaded machine disturbs far
  less; the target is judged on CPU time when the wall times spread widely;
* memory: the child's peak RSS (``ru_maxrss``) after the import, and that minus its RSS before the import.

Baseline (same run): a module holding only ``df.DFApp`` with one orchestrator and one activity, i.e. the
``azure.functions`` and ``azure.durable_functions`` imports every Durable app pays.

Run: ``.venv/bin/python -m bench.cold_start [--runs 15] [--app-dir .] [--out bench/results/cold_start.md]``
(``--app-dir`` imports ``function_app`` from another checkout, e.g. an exported older commit, for a
before/after comparison with the same interpreter). ``--modules`` lists the heavy packages each variant
loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BARE_APP = textwrap.dedent(
    """
    import azure.durable_functions as df
    import azure.functions as func

    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


    @app.orchestration_trigger(context_name="context")
    def orchestrator(context: df.DurableOrchestrationContext):
        return (yield context.call_activity("activity", {}))


    @app.activity_trigger(input_name="payload")
    def activity(payload: dict) -> dict:
        return payload
    """
)

# The bare app plus the blob SDK-type binding extension that triggers/inbound_blob.py imports at module level
# (azure.storage.blob, azure.identity, msal, cryptography): the share of the app's cost it alone sets.
BLOB_APP = "import azurefunctions.extensions.bindings.blob  # noqa: F401\n" + BARE_APP

PROBE = textwrap.dedent(
    """
    import json, resource, sys, time

    def rss_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    before = rss_kib()
    c0, t0 = time.process_time(), time.perf_counter()
    __import__(sys.argv[1])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    heavy = ("azure.identity", "msal", "pydantic", "pydantic_settings", "azure.storage.blob",
             "azure.data.tables", "requests", "cryptography", "croniter", "opentelemetry", "azure.monitor")
    print(json.dumps({
        "seconds": seconds,
        "cpu": cpu,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "added_kib": rss_kib() - before,
        "modules": len(sys.modules),
        "heavy": [m for m in heavy if m in sys.modules],
    }))
    """
)

# Settings the app reads at import (logging); nothing is contacted.
APP_ENV = {
    "DATA_STORAGE": "UseDevelopmentStorage=true",
    "FNO_MAIN_BASE_URL": "https://fno.example.com",
    "FNO_MAIN_AUTH_MODE": "managed_identity",
}


NOTES = """
Reading: what the app adds on top of the bare DFApp is mostly loaded by modules that import it at module level
for their decorators and type names: the blob SDK-type binding extension of `triggers/inbound_blob.py` (its own
row above: azure.storage.blob, azure-core with requests, azure.identity, msal, cryptography), azure.data.tables
(first imported by `dmf.pipeline.outbound_housekeeping`, which a timer module imports), and the pydantic models
that the triggers import for their decorators (`dmf.routing`, settings). The F&O client no longer loads at import
(the gate activities import the gate service, which loads it on first use); requests still does, through
azure-core's transport under the extension. The app's own modules import pydantic-settings, croniter,
azure-identity's credentials, the package builders/validators and the F&O client on first use
(`tests/test_cold_start.py` keeps them off the import path). 1.5× is not reachable while the extension alone costs
more than that, and the extension cannot be deferred: the worker binds the SDK-typed `BlobClient` parameter by its
annotation object when it indexes the app, so the module must be imported with the trigger. The ratio moves with
the machine's load (2.16× to 2.99× across runs on 2026-11-29). Left to defer: azure.data.tables and the triggers'
pydantic models (together under 0.5× of the baseline, by the rows above).
""".strip()


def measure(module: str, path: Path) -> dict:
    env = {**os.environ, **APP_ENV, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module], cwd=path, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(runs: int, app_dir: Path, before: Path | None) -> dict[str, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bare_app.py").write_text(BARE_APP, encoding="utf-8")
        (Path(tmp) / "blob_app.py").write_text(BLOB_APP, encoding="utf-8")
        variants = {
            "app": ("function_app", app_dir),
            "bare": ("bare_app", Path(tmp)),
            "blob": ("blob_app", Path(tmp)),
        }
        if before is not None:
            variants["before"] = ("function_app", before)
        results: dict[str, list[dict]] = {k: [] for k in variants}
        # One warm-up each (the OS file cache, .pyc files), then interleaved measured runs.
        for module, path in variants.values():
            measure(module, path)
        for _ in range(runs):
            for k, (module, path) in variants.items():
                results[k].append(measure(module, path))
    return results


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _row(label: str, rows: list[dict], bare: list[dict]) -> str:
    c, t, p, a = (median(rows, k) for k in ("cpu", "seconds", "peak_kib", "added_kib"))
    cb, tb, pb = (median(bare, k) for k in ("cpu", "seconds", "peak_kib"))
    return (
        f"| {label} | {c * 1000:.0f} ms ({c / cb:.2f}×) | {t * 1000:.0f} ms ({t / tb:.2f}×) |"
        f" {p / 1024:.1f} MiB ({p / pb:.2f}×) | {a / 1024:.1f} MiB | {median(rows, 'modules'):.0f} |"
    )


def report(
    results: dict[str, list[dict]], runs: int, app_dir: Path, before: Path | None, show_modules: bool
) -> str:
    app, bare = results["app"], results["bare"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = "" if app_dir.resolve() == ROOT else f" --app-dir {app_dir}"
    where += f" --before {before}" if before is not None else ""
    lines = [
        "# Cold start (import of the app module)",
        "",
        f"Run {when} on {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()};"
        f" `.venv/bin/python -m bench.cold_start --runs {runs}{where}`. Each import in a fresh interpreter,"
        " variants interleaved; medians. Baseline: a bare `DFApp` with one orchestrator and one activity.",
        "Target: `import function_app` within 1.5× the baseline's time.",
        "",
        "| variant | import CPU time (× baseline) | import wall time (× baseline) | peak RSS (× baseline) |"
        " RSS added by the import | modules loaded |",
        "|---|---:|---:|---:|---:|---:|",
        _row("`import function_app`", app, bare),
        *([_row("`import function_app` before (`--before`)", results["before"], bare)] if before else []),
        _row(
            "bare DFApp + blob binding extension (as `triggers/inbound_blob.py` imports it)",
            results["blob"],
            bare,
        ),
        _row("baseline: bare DFApp", bare, bare),
        "",
        f"Heavy packages loaded by `import function_app`: {', '.join(app[-1]['heavy']) or 'none'}.",
    ]
    if show_modules:
        for name, rows in results.items():
            wall = sorted(round(r["seconds"] * 1000) for r in rows)
            cpu = sorted(round(r["cpu"] * 1000) for r in rows)
            lines.append(f"Spread, {name} (ms): wall {wall}; CPU {cpu}.")
    return "\n".join([*lines, "", NOTES]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--app-dir", type=Path, default=ROOT, help="the checkout whose function_app is imported")
    ap.add_argument(
        "--before", type=Path, help="another checkout measured in the same run, e.g. before a change"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/cold_start.md")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--modules", action="store_true", help="also list the spread of the app's import times")
    ns = ap.parse_args()
    text = report(run(ns.runs, ns.app_dir, ns.before), ns.runs, ns.app_dir, ns.before, ns.modules)
    print(text)
    if not ns.no_write:
        ns.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
