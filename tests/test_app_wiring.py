"""The deployed entry point imports cleanly and registers its functions."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_function_app_imports_and_lists_functions() -> None:
    code = (
        "import json, function_app\n"
        "print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    names = json.loads(out.strip().splitlines()[-1])
    assert "health" in names


def test_host_json_durable_settings() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    dt = host["extensions"]["durableTask"]
    assert dt["hubName"] == "%TASKHUB_NAME%"
    assert dt["overridableExistingInstanceStates"] == "NonRunningStates"
    assert dt.get("extendedSessionsEnabled", False) is False


def test_runtime_requirements_are_pinned_ranges_without_worker() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines
    for ln in lines:
        assert ">=" in ln and "<" in ln, f"{ln} needs a version range"
        assert not ln.startswith("azure-functions-worker")
