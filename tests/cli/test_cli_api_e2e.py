"""The CLI's online commands end to end: ``dmf.cli`` against the app on the embedded stack (Azurite + F&O
emulator + local runner, function keys checked), asserting what the app then did (imports in the emulator,
outcome rows), the printed tables, the ``--json`` answers and the exit codes (0 ok, 1 refused, 2 usage or
connection)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import wait
from tests.e2e_support import Stack, customer_groups_csv

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "USMF/CustomerGroups-Import"


def _imports(stack: Stack) -> list[str]:
    return sorted(e["executionId"] for e in stack.emu.admin.executions() if e["kind"] == "import")


def test_status_show_and_retry(stack: Stack, cli) -> None:
    stack.drop(f"{PROJECT}/Customer groups__good.csv", customer_groups_csv(["A1", "A2"]))
    stack.drop(f"{PROJECT}/Customer groups__bad.csv", customer_groups_csv([], bad_rows=3))
    stack.settle()
    good, bad = stack.drop_row("Customer groups__good.csv"), stack.drop_row("Customer groups__bad.csv")
    day, bad_id = bad["PartitionKey"], bad["RowKey"]

    # status: healthy, the gate, the day's counts and only the failed drop listed.
    r = cli(stack, "status", "--day", day)
    assert r.rc == 0, r.err
    assert "health: ok" in r.out and "main" in r.out and "open" in r.out
    assert "1 Failed, 1 Succeeded" in r.out
    assert bad_id in r.out and good["RowKey"] not in r.out
    s = cli(stack, "status", "--day", day, "--json").json()
    assert s["healthy"] is True and s["drops"] == {"Failed": 1, "Succeeded": 1}
    assert [f["id"] for f in s["failures"]] == [bad_id]
    assert s["health"]["checks"]["environments"]["main"]["token"] is True

    # show: a drop's packages with F&O's errors; the error files' SAS links only with --links.
    r = cli(stack, "show", bad_id)
    assert r.rc == 0, r.err
    assert f"CustomerGroups-Import-{bad_id}-p001" in r.out and "longer than 10 characters" in r.out
    assert "retriable" in r.out and "package 1" in r.out and "sig=" not in r.out
    d = cli(stack, "show", bad_id, "--json").json()
    assert d["status"] == "Failed" and d["retriable"] == [1]
    files = d["packages"][0]["errorFiles"]
    assert files and all("url" not in f for f in files)
    assert "sig=" not in json.dumps(d) and "statusQueryGetUri" not in json.dumps(d)
    linked = cli(stack, "show", bad_id, "--json", "--links").json()
    assert all("sig=" in f["url"] for f in linked["packages"][0]["errorFiles"])
    # show <container>/<name>: the file's history, from the app's index.
    path = f"{stack.names['INBOUND_CONTAINER']}/{PROJECT}/Customer groups__bad.csv"
    r = cli(stack, "show", path)
    assert r.rc == 0 and bad_id in r.out and "Failed" in r.out and "1 drop(s)" in r.out
    assert cli(stack, "show", path, "--json").json()["drops"][0]["id"] == bad_id
    nope = cli(stack, "show", "drop-nope")
    assert nope.rc == 1 and "no drop 'drop-nope'" in nope.err
    assert cli(stack, "show", "not-a-drop").rc == 2  # 400: not a drop id

    # retry: the failed package imports again under the retry's execution id.
    before = _imports(stack)
    r = cli(stack, "retry", bad_id, "--json")
    assert r.rc == 0, r.err
    assert r.json() == {"started": True, "id": f"{bad_id}-r01", "drop": bad_id}
    stack.settle()
    assert sorted(set(_imports(stack)) - set(before)) == [f"CustomerGroups-Import-{bad_id}-r01-p001"]
    r = cli(stack, "show", bad_id)
    assert f"retry {bad_id}-r01: Failed" in r.out
    # A drop that succeeded has nothing to retry: refused, exit 1, nothing imported.
    n = len(_imports(stack))
    refused = cli(stack, "retry", good["RowKey"])
    assert refused.rc == 1 and "no Failed or TimedOut package" in refused.err
    stack.settle()
    assert len(_imports(stack)) == n
    # --wait follows the retry to its end: F&O fails the same rows again, so it ends Failed (exit 1).
    r = cli(stack, "retry", bad_id, "--wait", "--json")
    assert r.rc == 1, r.err
    assert r.json()["id"] == f"{bad_id}-r02" and r.json()["runtimeStatus"] == "Completed"
    assert r.json()["status"] == "Failed" and "longer than 10 characters" in r.json()["reason"]
    assert f"CustomerGroups-Import-{bad_id}-r02-p001" in _imports(stack)

    # Keys and connections: a wrong or missing key and an unreachable app are exit 2.
    wrong = cli(stack, "status", "--day", day, key="not-the-key")
    assert wrong.rc == 2 and "function key" in wrong.err and "not-the-key" not in wrong.out + wrong.err
    down = cli(None, "retry", bad_id, "--url", "http://127.0.0.1:9", "--key", "k")
    assert down.rc == 2 and "cannot reach http://127.0.0.1:9" in down.err

    # The console entry point, configured from the environment (DMF_API_URL, DMF_FUNCTION_KEY).
    env = {
        **os.environ,
        "DMF_API_URL": stack.runner.http_base_url,
        "DMF_FUNCTION_KEY": stack.runner.function_key,
    }
    p = subprocess.run(
        [sys.executable, "-m", "dmf.cli", "show", bad_id, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["id"] == bad_id and stack.runner.function_key not in p.stdout + p.stderr
    env.pop("DMF_FUNCTION_KEY")
    p = subprocess.run(
        [sys.executable, "-m", "dmf.cli", "show", bad_id], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and "function key" in p.stderr

    # An unhealthy app: status names the problem and exits 1.
    stack.emu.admin.inject_fault("token", "503", rate=1.0)
    sick = cli(stack, "status", "--day", day)
    assert sick.rc == 1 and "health: unhealthy" in sick.out
    assert "problem: environment main: no token" in sick.out
    assert stack.settings["FNO_MAIN_CLIENT_SECRET"] not in sick.out
    stack.emu.admin.clear_faults()


def test_pause_cancel_and_resume(stack: Stack, cli) -> None:
    r = cli(stack, "pause", "main", "--reason", "F&O servicing")
    assert r.rc == 0 and "gate main: paused (F&O servicing)" in r.out, r.out + r.err
    nope = cli(stack, "pause", "nope")
    assert nope.rc == 1 and "no F&O environment 'nope'" in nope.err
    with stack.runner.hold_clock():
        stack.drop(f"{PROJECT}/Customer groups__held.csv", customer_groups_csv(["H1"]))
        stack.drop(f"{PROJECT}/Customer groups__cancel.csv", customer_groups_csv(["C1"]))
        wait(lambda: len(cli(stack, "status", "--json").json()["gates"][0]["waiters"]) == 2)
        status = cli(stack, "status")
        assert status.rc == 0 and "PAUSED" in status.out and "F&O servicing" in status.out
        assert "warning: gate main: paused" in status.out
        time.sleep(1)
        assert _imports(stack) == []  # nothing imports while paused
        held = stack.drop_row("Customer groups__held.csv")["RowKey"]
        victim = stack.drop_row("Customer groups__cancel.csv")["RowKey"]
        assert "waiting-for-gate" in cli(stack, "show", held).out
        r = cli(stack, "cancel", victim)
        assert r.rc == 0 and f"{victim}-p001" in r.out, r.err
        wait(lambda: stack.drop_row("Customer groups__cancel.csv")["Status"] == "Canceled")
        again = cli(stack, "cancel", victim, "--json")
        assert again.rc == 1 and "not waiting at the import gate" in again.json()["error"]
        r = cli(stack, "resume", "main", "--json")
        assert r.rc == 0 and r.json()["paused"] is False
        wait(lambda: len(_imports(stack)) == 1)  # woken by the resume
    stack.settle()
    assert stack.drop_row("Customer groups__held.csv")["Status"] == "Succeeded"
    assert _imports(stack) == [f"CustomerGroups-Import-{held}-p001"]
    assert cli(stack, "cancel", held).rc == 1  # imported: nothing waits


def test_drain_now_and_export_now(azurite, unique_name, cli) -> None:
    exports = [
        {"name": "groups", "environment": "main", "activity_id": "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"}
    ]
    jobs = [
        {"name": "nightly", "environment": "main", "data_project": "CustomerGroups-Export",
         "legal_entity": "USMF", "schedule": "0 0 2 * * *"}
    ]  # fmt: skip
    with Stack(
        azurite, unique_name, RECURRING_EXPORTS=json.dumps(exports), EXPORT_JOBS=json.dumps(jobs)
    ) as stack:
        stack.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "X1", "DESCRIPTION": "x"}])
        for _ in range(2):
            stack.emu.admin.seed_outbound(exports[0]["activity_id"], legal_entity="USMF")
        r = cli(stack, "drain-now", "groups", "--wait")
        assert r.rc == 0 and r.out.startswith("drain of groups started: "), r.err
        assert "ended Completed" in r.out and "code=" not in r.out
        stack.settle()
        drains = [row for row in stack.outcomes() if row.get("Kind") == "drain"]
        assert len(drains) == 1 and drains[0]["Messages"] == 2
        unknown = cli(stack, "drain-now", "nope")
        assert unknown.rc == 1 and "no recurring export named 'nope'" in unknown.err

        with stack.runner.hold_clock():  # the export polls F&O on durable timers: it stays Running
            r = cli(stack, "export-now", "nightly", "--json")
            assert r.rc == 0 and r.json()["started"] is True and "Uri" not in r.out, r.err
            busy = cli(stack, "export-now", "nightly")
            assert busy.rc == 1 and "still Running" in busy.err, busy.err
        stack.settle()
        runs = [row for row in stack.outcomes() if row.get("Kind") == "export"]
        assert len(runs) == 1 and runs[0]["Status"] == "Succeeded"
        assert cli(stack, "export-now", "nope").rc == 1
    assert stack.loop_blocks == []


def test_help_documents_every_command() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "dmf.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0
    for cmd in (
        "status",
        "show",
        "retry",
        "cancel",
        "pause",
        "resume",
        "drain-now",
        "export-now",
        "check",
        "build",
    ):
        assert f"\n    {cmd}" in p.stdout, cmd
    assert "DMF_API_URL" in p.stdout and "exit codes" in p.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "dmf.cli", "retry"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "DROP_ID" in usage.stderr
