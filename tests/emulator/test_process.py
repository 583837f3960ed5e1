"""The emulator run apart (``local/fno_emulator/process.py``), as the soak runs it: a real child process on
the session's Azurite, following the runner's virtual clock, with ``admin`` answered from the child."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from local.azurite import Azurite
from local.fno_emulator import EmulatorConfig
from local.fno_emulator.process import EmulatorProcess
from local.functions_runner import VirtualClock

from .conftest import Client
from .packages import customer_groups_package

GOOD = [["10", "Wholesale", "Net30"], ["20", "Retail", "Net10"]]


def test_an_import_runs_in_the_child_on_the_runners_virtual_clock(azurite: Azurite) -> None:
    clock = VirtualClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    cfg = EmulatorConfig(blob_container="dmf" + uuid.uuid4().hex[:12])
    with EmulatorProcess(cfg, azurite.connection_string, clock=clock) as emu:
        child = psutil.Process(emu.pid)
        assert emu.pid != os.getpid() and child.ppid() == os.getpid()
        assert emu.admin.now() == clock.now()
        client = Client(emu)  # type: ignore[arg-type]  # the same surface as Emulator
        eid = client.import_package(client.upload_package(customer_groups_package(GOOD)))
        clock.advance(timedelta(seconds=1.5))
        assert emu.admin.now() == clock.now()
        assert client.status(eid) == "NotRun"  # F&O's times follow the runner's clock, not the wall's
        clock.advance(timedelta(hours=1))
        assert client.status(eid) == "Succeeded"
        assert sorted(r["CUSTOMERGROUPID"] for r in emu.admin.data("USMF", "Customer groups")) == ["10", "20"]
        assert emu.admin.peak_concurrent_imports == 1  # a property, read in the child
        assert [c["endpoint"] for c in emu.admin.calls("ImportFromPackage")] == ["ImportFromPackage"]
        with pytest.raises(RuntimeError, match="inject_fault"):
            emu.admin.inject_fault("*", "no-such-kind")
        assert emu.admin.server_errors() == []
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_it_runs_on_real_time_without_a_virtual_clock(azurite: Azurite) -> None:
    cfg = EmulatorConfig(blob_container="dmf" + uuid.uuid4().hex[:12])
    with EmulatorProcess(cfg, azurite.connection_string) as emu:
        assert abs((emu.admin.now() - datetime.now(UTC)).total_seconds()) < 5
