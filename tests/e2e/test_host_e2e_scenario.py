"""The real-host end-to-end job (scripts/host-e2e.sh), run in the suite with the local runner as the host.

``local.host_e2e`` does everything but the host: Azurite, the F&O emulator, the staged app with its
local.settings.json, the demo's drops, waiting for and checking the outcome rows, teardown. The script gives it
``func start --port {port}``; this test gives it ``python -m local.functions_runner`` — the only difference.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from local.host_e2e import HostE2E, check, demo_drops, expectations, main, report
from local.samples import customer_groups_csv, customer_groups_package

ROOT = Path(__file__).resolve().parents[2]
RUNNER_HOST = "{python} -m local.functions_runner --settings {settings} --port {port}"
SCRIPT = ROOT / "scripts" / "host-e2e.sh"


@pytest.mark.timeout(150)
def test_demo_drops_reach_the_outcomes_their_files_call_for() -> None:
    host = HostE2E(RUNNER_HOST, timeout=90, startup_timeout=60)
    result = host.run(demo_drops())
    report(result, out=print)
    assert result.problems == []
    assert result.health["status"] == "ok"
    # Guards the guard: the demo covers every kind of outcome, and the rows really were read back.
    assert {e.status for e in result.expected} == {"Succeeded", "PartiallySucceeded", "Rejected", "Duplicate"}
    drops = [r for r in result.outcomes if r.get("Kind") == "drop"]
    assert len(drops) == len(result.expected) == 6
    assert not host.work.exists(), "a passing run leaves nothing behind"


def test_only_the_host_command_differs_from_the_script() -> None:
    script = SCRIPT.read_text()
    (line,) = [ln for ln in script.splitlines() if ln.startswith("exec ")]
    argv = shlex.split(line)
    assert argv[:5] == ["exec", ".venv/bin/python", "-m", "local.host_e2e", "run"]
    assert argv[5:7] == ["--host-cmd", "func start --port {port}"]
    assert os.access(SCRIPT, os.X_OK)
    host = HostE2E(RUNNER_HOST)
    host.port = 7777
    assert host.host_argv()[1:] == ["-m", "local.functions_runner", "--settings", str(host.settings_path),
                                    "--port", "7777"]  # fmt: skip
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "host-e2e.yml").read_text())
    runs = " ".join(s.get("run", "") for s in workflow["jobs"]["host-e2e"]["steps"])
    assert "azure-functions-core-tools@4" in runs and "bash scripts/host-e2e.sh" in runs
    assert "bash scripts/setup.sh" in runs  # Azurite from npm into local/node_modules


def test_script_without_core_tools_says_so_and_fails(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with what the script needs before its check, and no func
    bin_dir.mkdir()
    (bin_dir / "dirname").symlink_to("/usr/bin/dirname")
    out = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    assert "Core Tools ('func') is not on PATH" in out.stderr
    assert "npm install -g azure-functions-core-tools@4" in out.stderr


def test_cli_requires_a_host_command() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2


# What each file is, and what checking catches (no services) ------------------------------------------------


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_expected_outcomes_follow_from_the_files() -> None:
    p = "USMF/CustomerGroups-Import/"
    ok = customer_groups_package(["A1", "A2"])
    drops = {
        p + "ok.zip": ok,
        p + "Customer groups__mixed.csv": customer_groups_csv(["B1"], bad_rows=1),
        p + "Customer groups__all-bad.csv": customer_groups_csv([], bad_rows=2),
        p + "batch.zip": _zip(
            {"1.zip": customer_groups_package(["C1"]), "2.zip": customer_groups_package(["C2"])}
        ),
        p + "batch-with-junk.zip": _zip({"1.zip": customer_groups_package(["D1"]), "2.zip": b"not a zip"}),
        p + "package-with-bad-row.zip": customer_groups_package(["E1"], bad_rows=1),
        p + "again.zip": ok,  # the same bytes under another name
    }
    got = {e.name.removeprefix(p): (e.kind, e.status, e.good, e.packages) for e in expectations(drops)}
    assert got == {
        "ok.zip": ("package", "Succeeded", ["A1", "A2"], 1),
        "Customer groups__mixed.csv": ("raw", "PartiallySucceeded", ["B1"], 1),
        "Customer groups__all-bad.csv": ("raw", "Failed", [], 1),
        "batch.zip": ("batch", "Succeeded", ["C1", "C2"], 2),
        "batch-with-junk.zip": ("broken", "Rejected", [], 0),
        "package-with-bad-row.zip": ("package", "PartiallySucceeded", ["E1"], 1),
        "again.zip": ("duplicate", "Duplicate", [], 0),
    }


def _perfect_world(expected):
    """Outcome rows, blobs and F&O data exactly as the expectations describe them."""
    rows, blobs, fno = [], {}, {}
    for n, e in enumerate(expected):
        key = f"drop-{n:03d}"
        rows.append({"Kind": "drop", "RowKey": key, "Status": e.status, "SourceBlob": f"inbound/{e.name}"})
        for i in range(e.packages):
            status = "Succeeded" if e.status == "Succeeded" else e.status
            rows.append({"Kind": "package", "RowKey": f"{key}~{i + 1:03d}", "Status": status})
        blobs.setdefault(e.container, []).append(e.name)
        fno.setdefault(e.legal_entity, set()).update(e.good)
    return rows, blobs, fno


def test_check_passes_the_expected_world_and_names_each_difference() -> None:
    expected = expectations(demo_drops())
    rows, blobs, fno = _perfect_world(expected)
    assert check(expected, rows, blobs, fno, 0) == []

    def problems_after(change) -> list[str]:
        r, b, f = _perfect_world(expected)
        violations = change(r, b, f) or 0
        return check(expected, r, b, f, violations)

    def wrong_status(r, b, f):
        next(x for x in r if x["Kind"] == "drop" and x["Status"] == "Duplicate")["Status"] = "Succeeded"

    def lost_package(r, b, f):
        r.remove(next(x for x in r if x["RowKey"].endswith("~003")))

    def blob_left_behind(r, b, f):
        b["REJECTED_CONTAINER"].pop()

    def extra_row_in_fno(r, b, f):
        f["USMF"].add("SURPRISE")

    def second_drop_row(r, b, f):
        r.append(dict(next(x for x in r if x["Kind"] == "drop")))

    assert any("expected 'Duplicate'" in p for p in problems_after(wrong_status))
    assert any("2 packages imported, expected 3" in p for p in problems_after(lost_package))
    assert any("not in REJECTED_CONTAINER" in p for p in problems_after(blob_left_behind))
    assert any("F&O USMF" in p for p in problems_after(extra_row_in_fno))
    assert any("2 drop rows" in p for p in problems_after(second_drop_row))
    assert any("in parallel" in p for p in problems_after(lambda r, b, f: 1))


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("import sys; sys.exit(3)", "exited with 3"),
        ("print('Worker failed to load function: on_inbound_blob', flush=True); import time; time.sleep(60)",
         "failed to start"),
    ],
)  # fmt: skip
def test_a_host_that_cannot_start_fails_fast(tmp_path: Path, script: str, message: str) -> None:
    host = HostE2E(f"{{python}} -c {shlex.quote(script)}", startup_timeout=30)
    host.work, host.app_dir, host.log_path = tmp_path, tmp_path / "app", tmp_path / "host.log"
    host.app_dir.mkdir()
    host.port = 9  # nothing answers there
    with pytest.raises(RuntimeError, match=message):
        host.start_host()
    pid = host.proc.pid
    host.stop_host()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone


def test_readiness_waits_for_the_apps_own_health_route() -> None:
    """A host answering 404 (routes not indexed yet) or an HTML page is not ready; the app's JSON is, even a 500."""
    import http.server
    import threading

    answers = iter([(404, b""), (200, b"<html>Functions host</html>"), (500, b'{"status": "misconfigured"}')])
    keys_sent: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys_sent.append(self.headers.get("x-functions-key"))
            code, body = next(answers)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/health"
        probe = HostE2E.__new__(HostE2E)  # only the health probe, no stack
        probe.function_key = "k"
        assert probe._health(url) is None
        assert probe._health(url) is None
        assert probe._health(url) == {"status": "misconfigured"}
        assert keys_sent == ["k", "k", "k"]  # /api/health is FUNCTION-level: the probe sends a key
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_taken_before_the_host_binds_it_is_retried_on_another(tmp_path: Path) -> None:
    fake_host = tmp_path / "fake_host.py"  # first start: port taken; second: serves the app's health route
    fake_host.write_text(
        "import http.server, json, pathlib, sys\n"
        f"marker = pathlib.Path({str(tmp_path / 'tried')!r})\n"
        "if not marker.exists():\n"
        "    marker.write_text('x'); print('OSError: [Errno 98] Address already in use', flush=True); sys.exit(1)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(json.dumps({'status': 'ok'}).encode())\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    host = HostE2E(f"{{python}} {fake_host} {{port}}", startup_timeout=30)
    host.work, host.app_dir, host.log_path = tmp_path, tmp_path / "app", tmp_path / "host.log"
    host.app_dir.mkdir()
    from local.azurite import free_port

    host.port = first = free_port()
    try:
        assert host.start_host_on_a_free_port() == {"status": "ok"}
        assert host.port != first
    finally:
        host.stop_host()
