"""The runner's task-hub writes survive a crash between them and a storage outage under them.

- An episode writes its history rows, then the instance row (its records, sequence numbers, status). A
  process killed between the two writes must not strand the instance: recovery discards the uncommitted
  history and runs that episode again.
- Azurite going away for longer than the storage SDK's own retries (about 5 s) must not lose an activity's
  result or an episode's commit: the runner retries its task-hub calls until storage answers again.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from local.azurite import Azurite
from local.functions_runner import LocalRunner, VirtualClock
from tests.runner.apps import durable_app, restart_app

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


class _Killed(Exception):
    """The simulated process death: from here on, this runner reaches storage no more."""


class _DiesBetweenWrites:
    """A Store that dies right after the ``at``-th episode of ``instance_id`` wrote its history, before the
    instance row: what a SIGKILL between the two writes leaves in storage."""

    def __init__(self, inner: Any, instance_id: str, at: int) -> None:
        self._inner, self._iid, self._at = inner, instance_id, at
        self.commits = 0
        self.dead = False

    def put_instance(self, row: dict[str, Any]) -> None:
        if self.dead:
            raise _Killed
        if row["instance_id"] == self._iid and row["status"] != "Pending":  # an episode's commit
            self.commits += 1
            if self.commits == self._at:
                self.dead = True
                raise _Killed("killed between the history write and the instance row")
        self._inner.put_instance(row)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            if self.dead:
                raise _Killed
            return attr(*a, **kw)

        return call


def _wait(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("at", [1, 2, 3])
def test_killed_between_history_and_instance_row_the_instance_still_completes(make_runner, at: int) -> None:
    durable_app.CALLS.clear()
    first: LocalRunner = make_runner(durable_app.app, clock=VirtualClock(START))
    dying = _DiesBetweenWrites(first.engine.store, "crashme", at)
    first.engine.store = dying
    first.start_new("sequence", "crashme", 4)
    _wait(lambda: dying.dead)
    first.stop()
    # storage now holds the history of an episode whose instance row was never written
    row = first.store.get_instance("crashme")
    committed = json.loads(row["engine_state"])["history_len"]
    assert len(first.store.load_history("crashme", row["execution_id"])) > committed

    second: LocalRunner = make_runner(durable_app.app, clock=VirtualClock(START))
    status = second.wait_for_instance("crashme")
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == 16
    events = second.history("crashme")
    scheduled = [e["EventId"] for e in events if e["EventType"] == 4]
    completed = [e["TaskScheduledId"] for e in events if e["EventType"] == 5]
    assert scheduled == completed == [0, 1, 2, 3]  # nothing scheduled or applied twice
    assert sum(1 for e in events if e["EventType"] == 0) == 1  # one ExecutionStarted
    _wait(lambda: second.store.load_pending("crashme") == [])  # applied messages cleared once it ended


def test_an_activity_result_survives_azurite_going_away(tmp_path: Path, hub: str) -> None:
    """Azurite stops while an activity runs and stays away longer than the SDK's own retries; the
    activity's result and the episodes after it wait for storage and the instance completes."""
    marker, block = tmp_path / "marker.txt", tmp_path / "block"
    block.touch()
    (tmp_path / "azurite").mkdir()
    az = Azurite(location=tmp_path / "azurite").start()  # its own data dir: a restart keeps the data
    runner = None
    try:
        runner = LocalRunner(
            app=restart_app.app, storage_connection_string=az.connection_string, task_hub=hub,
            host_json=Path(__file__).resolve().parents[2] / "host.json",
            settings={"TASKHUB_NAME": hub, "RUNNER_MARKER_FILE": str(marker), "RUNNER_BLOCK_FILE": str(block)},
        ).start()  # fmt: skip
        iid = runner.start_new("three_steps", "outage", None)
        _wait(lambda: "start 2" in (marker.read_text() if marker.exists() else ""))
        az.stop()
        block.unlink()  # step 2 finishes while storage is away: its result has nowhere to go yet
        _wait(lambda: "done 2" in marker.read_text())
        time.sleep(7)  # past the storage SDK's own retries
        assert runner.store.outage, "the runner should be waiting for storage"
        az.start()
        status = runner.wait_for_instance(iid, timeout=60)
        assert status["runtimeStatus"] == "Completed", status
        assert status["output"] == [10, 20, 30]
        assert runner.store.outages >= 1
        assert marker.read_text().splitlines()[-2:] == ["start 3", "done 3"]
    finally:
        if runner is not None:
            runner.stop()
        az.stop()
