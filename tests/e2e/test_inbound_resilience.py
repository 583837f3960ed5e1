"""Inbound under stress: injected F&O faults, a terminated gate holder, and a runner killed mid-poll."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from local.embedded_stack import Stack, app_settings, reset_app_caches
from local.fno_emulator import Emulator, EmulatorConfig
from local.fno_emulator.config import DataProject, ProjectEntity
from local.samples import customer_groups_csv

ROOT = Path(__file__).resolve().parents[2]


def _executions_per_id(emu: Emulator) -> Counter:
    return Counter(e["executionId"] for e in emu.admin.executions() if e["kind"] == "import")


def test_twenty_percent_faults_on_every_endpoint_still_import_exactly_once(azurite, unique_name) -> None:
    cfg = EmulatorConfig()
    cfg.fault_seed = 20261125  # the same faults on every run
    with Stack(azurite, unique_name, emulator_config=cfg, POLL_NOT_FOUND_GRACE_SECONDS="120") as stack:
        for kind in ("429", "500", "502", "503"):
            stack.emu.admin.inject_fault("*", kind, rate=0.05)
        expected = set()
        for n in range(8):
            ids = [f"Z{n}{i}" for i in range(5)]
            expected |= set(ids)
            stack.drop(f"USMF/CustomerGroups-Import/Customer groups__{n}.csv", customer_groups_csv(ids))
        stack.settle(timeout=300)
        faults = [c for c in stack.emu.admin.calls() if c["fault"]]
        calls = stack.emu.admin.calls()
        assert len(faults) >= 0.1 * len(calls), f"only {len(faults)} of {len(calls)} calls faulted"
        assert {f["endpoint"] for f in faults} & {
            "ImportFromPackageAsync",
            "GetExecutionSummaryStatus",
            "token",
        }
        drops = stack.drops()
        assert len(drops) == 8
        assert all(d["Status"] == "Succeeded" for d in drops), [
            (d["SourceBlob"], d["Status"], d.get("Reason")) for d in drops
        ]
        per_id = _executions_per_id(stack.emu)
        assert len(per_id) == 8 and set(per_id.values()) == {1}, per_id
        assert {r["CUSTOMERGROUPID"] for r in stack.emu.admin.data("USMF", "Customer groups")} == expected
        assert stack.emu.admin.violations == 0


def test_a_terminated_holder_frees_the_gate_once_fno_is_done(azurite, unique_name) -> None:
    cfg = EmulatorConfig()
    cfg.data_projects = [
        DataProject(
            name="Slow-Import",
            entities=[ProjectEntity(entity="Customer groups")],
            base_seconds=3600,
            per_row_seconds=0,
        ),
        DataProject(name="CustomerGroups-Import", entities=[ProjectEntity(entity="Customer groups")]),
    ]
    with Stack(azurite, unique_name, emulator_config=cfg) as stack:
        runner = stack.runner
        with runner.hold_clock():  # keep virtual time still while we set the scene
            stack.drop("USMF/Slow-Import/Customer groups.csv", customer_groups_csv(["S1"]))
            holder = _wait_for_holder(stack)
            stack.drop("USMF/CustomerGroups-Import/Customer groups.csv", customer_groups_csv(["N1"]))
            _wait_for(lambda: len(_gate(stack)["waiters"]) == 1)
            runner.terminate(holder, "operator stopped it")
            _wait_for(lambda: runner.get_status(holder)["runtimeStatus"] == "Terminated")
            # The sweeper's timer fires (every minute in Azure): F&O still imports, so the permit stays.
            assert runner.fire_timer("gate_sweeper") is None
            assert [h["instance_id"] for h in _gate(stack)["holders"]] == [holder]
        stack.settle()
        rows = {d["DataProject"]: d for d in stack.drops()}
        assert rows["CustomerGroups-Import"]["Status"] == "Succeeded"
        assert rows["Slow-Import"]["Status"] == "Failed"
        assert "orchestration failed" in rows["Slow-Import"]["Reason"]
        # The terminated orchestration never recorded its package: the sweeper did, not left "Importing".
        (package,) = stack.packages(rows["Slow-Import"])
        assert package["Status"] == "Failed", package
        assert "Terminated" in package["Reason"] and "without recording" in package["Reason"]
        # The second import waited for F&O to finish the first: never two in flight.
        assert stack.emu.admin.violations == 0
        assert _gate(stack)["holders"] == [] and _gate(stack)["waiters"] == []


def _gate(stack: Stack) -> dict:
    from azure.data.tables import TableServiceClient

    from dmf.gate import ImportGate

    table = TableServiceClient.from_connection_string(stack.az.connection_string).get_table_client(
        stack.names["GATES_TABLE"]
    )
    return ImportGate(table, "main").snapshot()


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _wait_for_holder(stack: Stack) -> str:
    holders: list = []

    def has_holder() -> bool:
        try:
            holders[:] = _gate(stack)["holders"]
        except Exception:
            return False
        return bool(holders) and any(
            c["endpoint"].startswith("ImportFromPackage") for c in stack.emu.admin.calls()
        )

    _wait_for(has_holder)
    return holders[0]["instance_id"]


def _start_runner_process(settings_file: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.functions_runner",
            "--settings",
            str(settings_file),
            "--port",
            "0",
            "--blob-poll-interval",
            "0.3",
        ],
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_runner_killed_mid_poll_resumes_without_a_second_import(azurite, unique_name, tmp_path) -> None:
    cfg = EmulatorConfig()
    cfg.blob_container = f"{unique_name}-dmf"
    cfg.data_projects = [
        DataProject(
            name="CustomerGroups-Import",
            entities=[ProjectEntity(entity="Customer groups")],
            base_seconds=8,
            per_row_seconds=0,
        )
    ]
    with Emulator(cfg, storage_connection_string=azurite.connection_string).start() as emu:
        names = Stack(azurite, unique_name).names
        values = app_settings(azurite, emu, **names, POLL_INITIAL_SECONDS="1", GATE_RECHECK_SECONDS="2")
        settings_file = tmp_path / "local.settings.json"
        settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        from azure.storage.blob import BlobServiceClient

        blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
        inbound = blobs.create_container(names["INBOUND_CONTAINER"])
        for n in range(2):
            inbound.upload_blob(
                f"USMF/CustomerGroups-Import/Customer groups__{n}.csv", customer_groups_csv([f"K{n}"])
            )
        log = tmp_path / "runner.log"
        proc = _start_runner_process(settings_file, log)
        try:
            # Kill it hard once the first import is being polled.
            _wait_for(
                lambda: any(c["endpoint"] == "GetExecutionSummaryStatus" for c in emu.admin.calls()),
                timeout=90,
            )
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            imports_before = len(_executions_per_id(emu))
            assert imports_before >= 1
            proc = _start_runner_process(settings_file, log)
            from azure.data.tables import TableServiceClient

            outcomes = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
                names["OUTCOMES_TABLE"]
            )

            def both_done() -> bool:
                rows = [e for e in outcomes.list_entities() if e.get("Kind") == "drop"]
                return len(rows) == 2 and all(r["Status"] == "Succeeded" for r in rows)

            _wait_for(both_done, timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            reset_app_caches()
        per_id = _executions_per_id(emu)
        assert len(per_id) == 2 and set(per_id.values()) == {1}, (per_id, log.read_text()[-3000:])
        assert emu.admin.violations == 0
        assert {r["CUSTOMERGROUPID"] for r in emu.admin.data("USMF", "Customer groups")} == {"K0", "K1"}
