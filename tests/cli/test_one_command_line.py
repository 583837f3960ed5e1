"""``python -m dmf`` carries every command: pre-flight (validate, metadata-snapshot) and the operators' set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from local.azurite import free_port

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmf", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_every_command_is_reachable_from_python_m_dmf() -> None:
    out = _run("--help").stdout
    for command in ("validate", "metadata-snapshot", "status", "show", "retry", "cancel", "pause", "resume",
                    "drain-now", "export-now", "check", "build"):  # fmt: skip
        assert command in out


def test_an_operators_command_runs_through_python_m_dmf() -> None:
    # Nothing listens there: the operators' handler runs and says so with its connection-error exit code.
    done = _run("status", "--url", f"http://127.0.0.1:{free_port()}", "--key", "k")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "k" not in done.stdout.split()  # the key is never echoed
