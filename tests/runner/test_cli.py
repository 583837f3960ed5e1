"""The CLI loads settings before importing the app and serves it on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from local.azurite import free_port
from local.functions_runner.__main__ import DEV_STORAGE

ROOT = Path(__file__).resolve().parents[2]


def test_cli_serves_the_real_function_app(azurite, tmp_path: Path, hub: str) -> None:
    settings = tmp_path / "local.settings.json"
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    values = {k: (azurite.connection_string if v == DEV_STORAGE else v) for k, v in example["Values"].items()}
    values["TASKHUB_NAME"] = hub
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    port = free_port()
    log = tmp_path / "cli.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.functions_runner", "--settings", str(settings), "--port", str(port),
         "--virtual-clock", "--key-file", str(tmp_path / "keys.json")],
        cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "Functions runner ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert f"http://127.0.0.1:{port}" in log.read_text()
        key = json.loads((tmp_path / "keys.json").read_text())["function_key"]
        assert key and key not in log.read_text()  # the key is in its file, never in the log
        url = f"http://127.0.0.1:{port}/api/health"
        try:  # FUNCTION-level, as in Azure: no key, no answer
            urllib.request.urlopen(url)
            raise AssertionError("a FUNCTION-level route answered without a key")
        except urllib.error.HTTPError as err:
            assert err.code == 401
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"x-functions-key": key})) as r:
                code, body = r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:  # a 500 still proves the route ran with the settings loaded
            code, body = err.code, json.loads(err.read())
        assert code in (200, 500)
        assert body["status"] in ("ok", "misconfigured")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0, log.read_text()
