"""Orchestrations replayed by the SDK's own orchestrator handle, with history in Azurite Table Storage."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from local.functions_runner import LocalRunner, VirtualClock
from tests.runner.apps import durable_app

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@pytest.fixture
def runner(make_runner) -> LocalRunner:
    durable_app.CALLS.clear()
    return make_runner(durable_app.app, clock=VirtualClock(START))


def calls(name: str) -> list[object]:
    return [v for n, v in durable_app.CALLS if n == name]


def test_sequence_history_is_in_table_storage(runner: LocalRunner, azurite) -> None:
    iid = runner.start_new("sequence", None, 4)
    status = runner.wait_for_instance(iid)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == 16
    assert calls("double") == [1, 2, 4, 8]

    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    rows = list(
        tables.get_table_client(f"{runner.task_hub}History").query_entities(f"PartitionKey eq '{iid}'")
    )
    assert len(rows) >= 4 * 4  # four episodes of OrchestratorStarted/.../OrchestratorCompleted at least
    inst = tables.get_table_client(f"{runner.task_hub}Instances").get_entity(iid, "")
    assert inst["status"] == "Completed"
    events = runner.history(iid)
    assert events[1]["EventType"] == 0 and events[1]["Version"] == ""  # ExecutionStarted carries Version
    scheduled = [e["EventId"] for e in events if e["EventType"] == 4]
    completed = [e["TaskScheduledId"] for e in events if e["EventType"] == 5]
    assert scheduled == completed == [0, 1, 2, 3]


def test_fan_out_with_out_of_order_completions(runner: LocalRunner) -> None:
    n = 24
    iid = runner.start_new("many_tracked", None, n)
    status = runner.wait_for_instance(iid)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == list(range(n))  # results in scheduling order
    finished = calls("tracked")
    assert sorted(finished) == list(range(n))
    assert finished != sorted(finished)  # completions really arrived out of order
    completed = [e["TaskScheduledId"] for e in runner.history(iid) if e["EventType"] == 5]
    assert completed != sorted(completed)


def test_fan_out_with_async_activity(runner: LocalRunner) -> None:
    iid = runner.start_new("fan_out", None, 10)
    status = runner.wait_for_instance(iid)
    assert status["runtimeStatus"] == "Completed"
    assert [r["sq"] for r in status["output"]["results"]] == [i * i for i in range(10)]
    assert status["output"]["echo"] == {"echo": {"count": 10}}


def test_activity_failure_caught_inside_orchestrator(runner: LocalRunner) -> None:
    status = runner.wait_for_instance(runner.start_new("catches_failure"))
    assert status["runtimeStatus"] == "Completed"
    assert "boom on x" in status["output"]["caught"]
    assert status["output"]["after"] == 42


def test_uncaught_failure_fails_the_orchestration(runner: LocalRunner) -> None:
    status = runner.wait_for_instance(runner.start_new("fails"))
    assert status["runtimeStatus"] == "Failed"
    assert status["output"].startswith("Orchestrator function 'fails' failed:")
    assert "boom on y" in status["output"]


def test_call_activity_with_retry(runner: LocalRunner) -> None:
    iid = runner.start_new("retries")
    status = runner.wait_for_instance(iid)
    assert status["output"] == {"flaky": "ok after 3", "after": 10}
    assert calls("flaky") == [1, 2, 3]
    events = runner.history(iid)
    # attempt 0 fails, retry timer 1, attempt 2 fails, timer 3, attempt 4 succeeds, then 'double' is 5
    assert [e["TaskScheduledId"] for e in events if e["EventType"] == 6] == [0, 2]
    assert [e["TimerId"] for e in events if e["EventType"] == 11] == [1, 3]
    assert [e["EventId"] for e in events if e["EventType"] == 4] == [0, 2, 4, 5]


def test_retry_exhausted_is_raised_in_orchestrator(runner: LocalRunner) -> None:
    status = runner.wait_for_instance(runner.start_new("retries_exhausted"))
    assert status["output"] == {"gave_up": True}
    assert calls("boom") == ["r", "r"]


def test_virtual_clock_fires_half_hour_timers_at_once_and_in_order(runner: LocalRunner) -> None:
    t0 = time.monotonic()
    iid = runner.start_new("polls_with_timers")
    status = runner.wait_for_instance(iid, timeout=10)
    assert time.monotonic() - t0 < 5
    seen = [datetime.fromisoformat(s) for s in status["output"]]
    assert seen[1] - seen[0] == timedelta(minutes=30) and seen[2] - seen[1] == timedelta(minutes=30)
    assert runner.clock.now() >= START + timedelta(minutes=90)
    assert status["customStatus"] == {"poll": 2}


def test_external_event_wins_over_timeout(runner: LocalRunner) -> None:
    with runner.hold_clock():  # keep the one-hour timeout from firing while the test raises the event
        iid = runner.start_new("approval")
        deadline = time.monotonic() + 5
        while (runner.get_status(iid) or {}).get("customStatus") != "waiting":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        runner.raise_event(iid, "approve", {"by": "ops"})
        status = runner.wait_for_instance(iid)
    assert status["output"] == {"approved": {"by": "ops"}}
    assert status["customStatus"] == "approved"
    assert runner.clock.now() < START + timedelta(hours=1)  # the cancelled timer did not move time


def test_timeout_wins_when_no_event_arrives(runner: LocalRunner) -> None:
    status = runner.wait_for_instance(runner.start_new("approval"))
    assert status["output"] == {"approved": None}
    assert runner.clock.now() >= START + timedelta(hours=1)
    with pytest.raises(Exception, match="is gone"):
        runner.raise_event(status["instanceId"], "approve", 1)


def test_sub_orchestrations(runner: LocalRunner) -> None:
    iid = runner.start_new("parent")
    status = runner.wait_for_instance(iid)
    assert status["output"] == {"a": 4, "b": 8, "child_failed": True}
    child = runner.get_status(f"{iid}-child")
    assert child and child["runtimeStatus"] == "Completed" and child["output"] == 8


def test_continue_as_new(runner: LocalRunner) -> None:
    iid = runner.start_new("counter")
    status = runner.wait_for_instance(iid)
    assert status["output"] == {"n": 3, "runs": [2, 4, 6]}
    history = runner.history(iid)
    assert sum(1 for e in history if e["EventType"] == 0) == 1  # only the last execution's history is kept
    assert history[1]["Input"] and '"n": 2' in history[1]["Input"]


def test_start_new_refused_while_running_then_allowed(runner: LocalRunner) -> None:
    with runner.hold_clock():
        iid = runner.start_new("approval", "singleton")
        with pytest.raises(Exception, match="already exists"):
            runner.start_new("approval", "singleton")
        runner.terminate(iid, "operator stop")
        status = runner.wait_for_instance(iid)
    assert status["runtimeStatus"] == "Terminated"
    assert status["output"] == "operator stop"
    assert runner.start_new("sequence", "singleton", 1) == "singleton"  # non-running: overridable
    assert runner.wait_for_instance("singleton")["output"] == 2


def test_client_queries_and_purge(runner: LocalRunner) -> None:
    ids = [runner.start_new("sequence", f"q-{i}", 1) for i in range(3)]
    for i in ids:
        runner.wait_for_instance(i)
    client = runner.client()
    from azure.durable_functions import OrchestrationRuntimeStatus as S

    found = runner.run(client.get_status_by(runtime_status=[S.Completed]))
    assert set(ids) <= {s.instance_id for s in found}
    one = runner.run(client.get_status("q-0", show_input=True))
    assert one.runtime_status == S.Completed and one.output == 2 and one.input_ == 1
    missing = runner.run(client.get_status("nope"))
    assert not missing
    purged = runner.run(client.purge_instance_history("q-0"))
    assert purged.instances_deleted == 1
    assert runner.get_status("q-0") is None
    assert runner.history("q-0") == []


def test_nondeterminism_is_reported_with_orchestration_and_step(make_runner) -> None:
    runner = make_runner(durable_app.app)  # real clock: the replay happens ~1.5 s after the first episode
    status = runner.wait_for_instance(runner.start_new("slow_then_branch"), timeout=20)
    assert status["runtimeStatus"] == "Failed"
    assert "Non-deterministic workflow detected in orchestration 'slow_then_branch'" in status["output"]
    assert "at step 0" in status["output"]
    assert "activity 'sleepy'" in status["output"] and "activity 'async_echo'" in status["output"]
    assert any("slow_then_branch" in e for e in runner.engine.errors)


def test_activity_concurrency_limit_from_host_json(make_runner) -> None:
    durable_app.ACTIVE.update(now=0, max=0)
    runner = make_runner(durable_app.app, max_concurrent_activities=3)
    status = runner.wait_for_instance(runner.start_new("many_tracked", None, 12))
    assert status["runtimeStatus"] == "Completed"
    assert durable_app.ACTIVE["max"] == 3


def test_host_json_limits_are_read(runner: LocalRunner) -> None:
    assert runner.durable.max_activities == 8 and runner.durable.max_orchestrators == 4
    assert runner.durable.overridable_states == "NonRunningStates"


def test_activity_logs_carry_instance_id(runner: LocalRunner, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="local.functions_runner")
    iid = runner.start_new("catches_failure")
    runner.wait_for_instance(iid)
    failures = [r for r in caplog.records if "boom on x" in r.getMessage()]
    assert failures and all(getattr(r, "instance_id", None) == iid for r in failures)


def test_purge_by_time_and_status_and_get_status_all(runner: LocalRunner) -> None:
    from azure.durable_functions import OrchestrationRuntimeStatus as S

    done = runner.start_new("sequence", "old-1", 1)
    runner.wait_for_instance(done)
    with runner.hold_clock():
        running = runner.start_new("approval", "still-running")
        client = runner.client()
        everything = runner.run(client.get_status_all())
        assert {"old-1", "still-running"} <= {s.instance_id for s in everything}
        result = runner.run(
            client.purge_instance_history_by(
                created_time_from=START - timedelta(days=1),
                created_time_to=START + timedelta(days=1),
                runtime_status=[S.Completed, S.Running],
            )
        )
        assert result.instances_deleted == 1  # running instances are never purged
        assert runner.get_status("old-1") is None
        assert runner.get_status(running)["runtimeStatus"] == "Running"
        runner.terminate(running, "done")


def test_long_timer_is_split_like_azure_storage(runner: LocalRunner) -> None:
    iid = runner.start_new("long_wait")
    status = runner.wait_for_instance(iid)
    assert status["output"] == 10 * 86400
    fire_times = [e["FireAt"] for e in runner.history(iid) if e["EventType"] == 10]
    # 3-day steps while more than 6 days remain, then the final timer
    assert fire_times == [
        "2026-01-08T08:00:00.000000Z",
        "2026-01-11T08:00:00.000000Z",
        "2026-01-15T08:00:00.000000Z",
    ]


def test_activity_with_durable_client_binding_raises_event(runner: LocalRunner) -> None:
    with runner.hold_clock():
        waiting = runner.start_new("approval", "waits-for-activity")
        deadline = time.monotonic() + 5
        while (runner.get_status(waiting) or {}).get("customStatus") != "waiting":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert runner.wait_for_instance(runner.start_new("waker", None, waiting))["output"] == waiting
        assert runner.wait_for_instance(waiting)["output"] == {"approved": {"by": "activity"}}


def test_waiting_instance_resumes_in_a_new_runner(make_runner) -> None:
    first = make_runner(durable_app.app)  # real clock: the one-hour timeout stays pending
    iid = first.start_new("approval", "survives-restart")
    deadline = time.monotonic() + 5
    while (first.get_status(iid) or {}).get("customStatus") != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.stop()
    second = make_runner(durable_app.app)
    assert second.engine.pending_orchestration_timers() == 1  # the timeout timer was re-armed from storage
    second.raise_event(iid, "approve", "after restart")
    status = second.wait_for_instance(iid)
    assert status["output"] == {"approved": "after restart"}
    second.wait_until_idle()
    assert second.engine.pending_orchestration_timers() == 0  # cancelled with the instance's completion


def test_recovery_skips_messages_already_applied(make_runner) -> None:
    first = make_runner(durable_app.app)
    iid = first.start_new("two_events", "dedupe")
    first.raise_event(iid, "a", 1)
    deadline = time.monotonic() + 5
    while (first.get_status(iid) or {}).get("customStatus") != "got a":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.wait_until_idle()
    applied = next(e for e in first.history(iid) if e["EventType"] == 15)
    first.stop()
    # as if killed after committing the episode but before deleting the message it applied
    first.store.put_pending(
        iid, applied["RunnerMessageId"], {"event": applied, "special": None, "exec": None}
    )
    second = make_runner(durable_app.app)
    assert second.store.load_pending(iid) == []
    second.raise_event(iid, "b", 2)
    assert second.wait_for_instance(iid)["output"] == [1, 2]
    assert sum(1 for e in second.history(iid) if e["EventType"] == 15) == 2


def test_any_state_override_replaces_a_running_instance(make_runner, tmp_path) -> None:
    import json

    from tests.runner.conftest import ROOT

    host = json.loads((ROOT / "host.json").read_text())
    host["extensions"]["durableTask"]["overridableExistingInstanceStates"] = "AnyState"
    (tmp_path / "host.json").write_text(json.dumps(host))
    runner = make_runner(durable_app.app, host_json=tmp_path / "host.json", clock=VirtualClock(START))
    with runner.hold_clock():
        runner.start_new("approval", "replace-me", {"v": 1})
        runner.start_new("approval", "replace-me", {"v": 2})
        runner.raise_event("replace-me", "approve", "second")
        status = runner.wait_for_instance("replace-me")
    assert status["input"] == {"v": 2} and status["output"] == {"approved": "second"}


def test_orchestrator_concurrency_limit(make_runner) -> None:
    durable_app.ORCH_ACTIVE.update(now=0, max=0)
    runner = make_runner(durable_app.app, max_concurrent_orchestrators=2, in_memory=True)
    ids = [runner.start_new("busy_orchestrator") for _ in range(8)]
    for iid in ids:
        assert runner.wait_for_instance(iid)["output"] == 2
    assert durable_app.ORCH_ACTIVE["max"] == 2


def test_custom_status_over_16_kb_of_utf16_fails_as_on_the_host(runner: LocalRunner) -> None:
    # 8,000 characters are 16,004 bytes of UTF-16 JSON: allowed. Outputs have no such limit (large messages).
    ok = runner.start_new("big_payloads", None, {"status_chars": 8000, "output_chars": 300_000})
    status = runner.wait_for_instance(ok)
    assert status["runtimeStatus"] == "Completed" and status["output"] == 300_000
    assert status["customStatus"] == "x" * 8000
    big = runner.start_new("big_payloads", None, {"status_chars": 9000, "output_chars": 10})
    status = runner.wait_for_instance(big)
    assert status["runtimeStatus"] == "Failed"
    assert "must not exceed 16 KB. The current payload size is 18 KB" in json.dumps(status["output"])


def test_an_ended_instance_is_kept_in_storage_not_in_memory(runner: LocalRunner) -> None:
    """A long-lived runner must not grow with every orchestration it ever ran (the soak's runner did, by
    ~3 MiB per 1,000): once ended, an instance is answered from its row, exactly as after a restart."""
    iid = runner.start_new("sequence", "ends-then-restarts", 2)
    assert runner.wait_for_instance(iid)["output"] == 4
    runner.wait_until_idle(timeout=10)
    assert iid not in runner.engine.instances
    assert runner.engine.raise_event(iid, "approve", None) == 410  # gone, not unknown
    assert runner.engine.terminate(iid, "late") == 410
    assert runner.engine.raise_event("never-started", "approve", None) == 404
    runner.start_new("sequence", iid, 3)  # re-created from its row: the default override states allow it
    assert runner.wait_for_instance(iid)["output"] == 8
    assert [e["Input"] for e in runner.history(iid) if e["EventType"] == 0] == ["3"]
