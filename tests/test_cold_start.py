"""Importing the app loads no dependency the modules only need once they work (see bench/cold_start.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Loaded on first use by dmf (settings reading, NCRONTAB, package building and validation).
DEFERRED = ("pydantic_settings", "croniter", "dmf.package.build", "dmf.package.inspect", "dmf.package.batch")


def _loaded_after(imports: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after ``import <imports>``."""
    probe = f"import json, sys, {imports}; print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_STORAGE": "UseDevelopmentStorage=true"}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_function_app_defers_what_it_first_needs_at_work() -> None:
    assert _loaded_after("function_app", DEFERRED) == []


def test_the_gate_activities_and_triggers_load_no_fno_client() -> None:
    """The gate service asks F&O only when a permit's holder may still be importing: its client (and
    ``requests``) load then, not when the worker imports the gate's activities and triggers."""
    mods = ("dmf.fno.clients", "dmf.fno.package_api", "requests")
    assert _loaded_after("activities.gate, triggers.gate_watch", mods) == []
