"""A runner process killed with SIGKILL mid-orchestration resumes from Azurite when started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from local.azurite import free_port

ROOT = Path(__file__).resolve().parents[2]


def _spawn(settings: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "local.functions_runner", "--settings", str(settings), "--port", str(port),
         "--app", "tests.runner.apps.restart_app", "--host-json", str(ROOT / "host.json"),
         "--key-file", str(settings.parent / "keys.json")],
        cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait_ready(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        if "Functions runner ready" in log.read_text():
            return
        time.sleep(0.05)
    raise TimeoutError(log.read_text())


def _status(port: int, instance_id: str, keys: Path) -> dict:
    code = json.loads(keys.read_text())["system_key"]  # the Durable webhooks' key, as in Azure
    url = f"http://127.0.0.1:{port}/runtime/webhooks/durabletask/instances/{instance_id}?code={code}"
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read())


def test_kill_mid_orchestration_then_resume(azurite, tmp_path: Path, hub: str) -> None:
    marker, block = tmp_path / "marker.txt", tmp_path / "block"
    block.touch()
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {
        "AzureWebJobsStorage": azurite.connection_string, "TASKHUB_NAME": hub,
        "RUNNER_MARKER_FILE": str(marker), "RUNNER_BLOCK_FILE": str(block),
    }}))  # fmt: skip
    log = tmp_path / "runner.log"
    port = free_port()
    first = _spawn(settings, port, log)
    try:
        _wait_ready(port, first, log)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/start/three_steps?id=killme", method="POST"
        )
        with urllib.request.urlopen(req) as r:
            assert r.status == 202
        deadline = time.monotonic() + 20
        while "start 2" not in (marker.read_text() if marker.exists() else ""):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # no chance to clean up: as a host crash
        first.wait(10)
    assert marker.read_text().splitlines() == ["start 1", "done 1", "start 2"]

    block.unlink()
    port = free_port()
    log = tmp_path / "runner2.log"
    second = _spawn(settings, port, log)
    try:
        _wait_ready(port, second, log)
        deadline = time.monotonic() + 30
        while (status := _status(port, "killme", tmp_path / "keys.json"))["runtimeStatus"] != "Completed":
            assert time.monotonic() < deadline, (status, log.read_text())
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    assert status["output"] == [10, 20, 30]
    lines = marker.read_text().splitlines()
    # step 1 completed before the kill and is not re-run; step 2 was in flight and runs again (at-least-once)
    assert lines == ["start 1", "done 1", "start 2", "start 2", "done 2", "start 3", "done 3"]
    assert second.returncode == 0
