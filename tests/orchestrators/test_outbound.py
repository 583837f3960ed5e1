"""Outbound orchestrations at generator level: recurring drains, scheduled exports, the enqueue route."""

from __future__ import annotations

import pytest

from orchestrators import outbound as mod
from tests.orchestrators.fake_context import Script, iso, user_function

drain = user_function(mod.recurring_drain)
export = user_function(mod.scheduled_export)
enqueue = user_function(mod.recurring_enqueue)

POLL = {"initial": 15, "factor": 2, "max_interval": 300, "deadline": 3600, "not_found_grace": 60}
CFG = {"poll": POLL, "batch_messages": 4, "batch_seconds": 120, "workers": 2}


def recorded(inp: dict) -> dict:
    return {"status": "Recorded", "warnings": ["w"]}


# -- recurring_drain ------------------------------------------------------------------------------------

EXPORT = {"activity_id": "act-1", "environment": "main"}
DRAIN_IN = {
    "export": EXPORT,
    "run_id": "run-1",
    "day": "20261129",
    "guard": "guard-1",
    "guard_token": "tok",
    "max_messages": 10,
    "max_seconds": 600,
}
BASE = {"export": EXPORT, "run_id": "run-1", "day": "20261129"}
ZERO = {"archived": 0, "duplicate": 0, "failed": 0, "not_acked": 0, "taken": 0}


def drain_script(batches: list, durations: dict | None = None, **inp) -> Script:
    return Script(
        DRAIN_IN | inp,
        instance_id="drain-act-1",
        activities={
            "outbound_config": [CFG],
            "drain_start": [None],
            "drain_batch": batches,
            "drain_record": [recorded],
        },
        durations=durations,
    )


def batch_in(n: int, secs: float, workers: int = 2) -> dict:
    return BASE | {"max_messages": n, "max_seconds": secs, "workers": workers}


def test_drain_until_the_queue_is_empty() -> None:
    s = drain_script(
        [
            {"taken": 4, "archived": 3, "duplicate": 1, "failures": [{"id": "m9"}]},
            {"taken": 2, "archived": 2, "empty": True},
        ]
    )
    out = s.run(drain)
    totals = ZERO | {"archived": 5, "duplicate": 1, "taken": 6}
    assert s.trace() == [
        ("activity", "outbound_config", None),
        ("activity", "drain_start", BASE | {"started_at": iso(0), "instance_id": "drain-act-1"}),
        ("activity", "drain_batch", batch_in(4, 120)),
        ("activity", "drain_batch", batch_in(4, 120)),
        (
            "activity",
            "drain_record",
            BASE
            | {
                "totals": totals,
                "failures": [{"id": "m9"}],
                "errors": [],
                "stop_reason": "queue empty",
                "started_at": iso(0),
                "finished_at": iso(0),
                "guard": "guard-1",
                "guard_token": "tok",
            },
        ),
    ]
    assert s.calls("drain_batch")[0].retry is mod.BATCH_RETRY
    assert s.calls("drain_record")[0].retry is mod.RETRY
    assert out == {"status": "Recorded", "stop_reason": "queue empty", **totals}
    s.assert_script_used()


def test_drain_stops_at_the_count_budget_asking_only_for_what_is_left() -> None:
    s = drain_script([{"taken": 4}, {"taken": 1}], max_messages=5, workers=8)
    out = s.run(drain)
    assert s.inputs("drain_batch") == [batch_in(4, 120, workers=8), batch_in(1, 120, workers=8)]
    assert out["stop_reason"] == "count budget of 5 messages reached" and out["taken"] == 5


def test_drain_stops_at_the_time_budget_and_shrinks_the_last_batch() -> None:
    s = drain_script([{"taken": 1}] * 3, durations={"drain_batch": 250}, max_seconds=600)
    out = s.run(drain)
    assert [i["max_seconds"] for i in s.inputs("drain_batch")] == [120, 120, 100]  # 600 - 2 x 250
    assert out["stop_reason"] == "time budget of 600s reached"
    assert s.inputs("drain_record")[0]["finished_at"] == iso(750)


@pytest.mark.parametrize(
    ("batch", "stop"),
    [
        ({"taken": 2, "archived": 1, "errors": ["F&O 500 on dequeue"]}, "stopped on an F&O error"),
        ({"taken": 0}, "no progress"),
    ],
)
def test_drain_stops_on_errors_or_no_progress(batch: dict, stop: str) -> None:
    s = drain_script([batch])
    out = s.run(drain)
    assert s.names() == ["outbound_config", "drain_start", "drain_batch", "drain_record"]
    rec = s.inputs("drain_record")[0]
    assert rec["stop_reason"] == stop and rec["errors"] == batch.get("errors", [])
    assert out["stop_reason"] == stop


def test_drain_failure_still_records_the_run_and_frees_the_guard() -> None:
    s = drain_script([{"taken": 3, "archived": 3}, RuntimeError("queue unreachable")])
    out = s.run(drain)
    rec = s.inputs("drain_record")[0]
    assert rec["stop_reason"] == "error"
    assert rec["errors"] == ["drain orchestration failed: queue unreachable"]
    assert rec["guard"] == "guard-1" and rec["guard_token"] == "tok"
    assert out == {"status": "Recorded", "stop_reason": "error", **ZERO, "archived": 3, "taken": 3}


# -- scheduled_export -----------------------------------------------------------------------------------

JOB = {"name": "cust-export", "environment": "main", "data_project": "Customers-Export"}
EXPORT_IN = {
    "job": JOB,
    "run_id": "run-7",
    "day": "20261129",
    "execution_id": "exp-7",
    "package_name": "cust.zip",
    "guard": "g",
    "guard_token": "t",
}
EXP_REQ = EXPORT_IN | {"instance_id": "export-cust-export"}
FETCH_IN = {k: EXPORT_IN[k] for k in ("job", "run_id", "day", "execution_id", "package_name")}
CHECK_IN = {"environment": "main", "execution_id": "exp-7"}
READY = {"ready": True, "archived": "archive/cust.zip", "size": 123, "method": "server"}


def export_script(**answers: list) -> Script:
    base = {
        "outbound_config": [CFG],
        "export_start": [{"state": "started"}],
        "export_record": [recorded],
    }
    return Script(dict(EXPORT_IN), instance_id="export-cust-export", activities=base | answers)


def record_in(**fields) -> dict:
    return {
        **{k: EXP_REQ[k] for k in ("job", "run_id", "day", "execution_id", "package_name", "instance_id")},
        "guard": "g",
        "guard_token": "t",
        "status": None,
        "reason": None,
        "polls": None,
        "started": None,
        "archived": None,
        "size": None,
        "method": None,
        "started_at": iso(0),
        "finished_at": None,
    } | fields


def test_export_succeeds_and_the_package_is_archived() -> None:
    s = export_script(
        export_check=[{"status": "Executing"}, {"status": "Succeeded"}],
        export_fetch=[{"ready": False}, {"ready": False}, READY],
    )
    out = s.run(export)
    assert s.trace() == [
        ("activity", "outbound_config", None),
        ("activity", "export_start", EXP_REQ | {"allow_recall": False}),
        ("timer", 15.0),
        ("activity", "export_check", CHECK_IN),
        ("timer", 45.0),
        ("activity", "export_check", CHECK_IN),
        ("activity", "export_fetch", FETCH_IN),
        ("timer", 60.0),  # the URL is not handed out yet: wait initial x 2**n
        ("activity", "export_fetch", FETCH_IN),
        ("timer", 90.0),
        ("activity", "export_fetch", FETCH_IN),
        (
            "activity",
            "export_record",
            record_in(
                status="Succeeded",
                polls=2,
                started=True,
                archived="archive/cust.zip",
                size=123,
                method="server",
                finished_at=iso(90),
            ),
        ),
    ]
    assert out == {
        "status": "Recorded",
        "execution_id": "exp-7",
        "archived": "archive/cust.zip",
        "warnings": ["w"],
    }
    s.assert_script_used()


def test_export_start_retries_honour_retry_after() -> None:
    s = export_script(
        export_start=[{"state": "retry", "retry_after": 120}, {"state": "retry"}, {"state": "started"}],
        export_check=[{"status": "Failed"}],
    )
    s.run(export)
    assert s.names()[:7] == [
        "outbound_config",
        "export_start",
        "timer@120",  # F&O's Retry-After beats initial x 2
        "export_start",
        "timer@180",  # initial x 4
        "export_start",
        "timer@195",
    ]
    assert "export_fetch" not in s.names()  # nothing to fetch from a failed export
    assert s.inputs("export_record")[0]["status"] == "Failed"


def test_export_start_refused_fails() -> None:
    s = export_script(export_start=[{"state": "failed", "error": "no such project"}])
    out = s.run(export)
    assert s.names() == ["outbound_config", "export_start", "export_record"]
    assert s.inputs("export_record")[0] == record_in(
        status="Failed", reason="no such project", polls=0, finished_at=iso(0)
    )
    assert out["archived"] is None


def test_export_times_out() -> None:
    s = export_script(export_check=[{"status": "Executing"}] * 3)
    s.activities["outbound_config"] = [CFG | {"poll": POLL | {"deadline": 100}}]
    s.run(export)
    assert [t.wait for t in s.timers()] == [15, 30, 55]
    rec = s.inputs("export_record")[0]
    assert rec["status"] == "TimedOut" and rec["polls"] == 3 and rec["started"] is True
    assert rec["reason"] == "no terminal status after 2 minutes (last: Executing)"


def test_export_recalled_once_when_f_and_o_never_saw_it() -> None:
    s = export_script(
        export_start=[{"state": "ambiguous"}, {"state": "started"}],
        export_check=[{"status": "NotFound"}] * 3 + [{"status": "Succeeded"}],
        export_fetch=[READY],
    )
    s.run(export)
    assert s.inputs("export_start") == [EXP_REQ | {"allow_recall": False}, EXP_REQ | {"allow_recall": True}]
    assert s.names()[8:10] == ["export_start", "timer@120"]
    assert s.inputs("export_record")[0]["status"] == "Succeeded"
    s.assert_script_used()


def test_export_not_found_after_the_recalls_fails() -> None:
    s = export_script(
        export_start=[{"state": "ambiguous"}] * (1 + mod.MAX_RECALLS),
        export_check=[{"status": "NotFound"}] * (3 * (1 + mod.MAX_RECALLS)),
    )
    s.run(export)
    rec = s.inputs("export_record")[0]
    assert rec["status"] == "Failed" and rec["reason"] == "F&O has no record of execution exp-7 after 105s"
    assert [i["allow_recall"] for i in s.inputs("export_start")] == [False] + [True] * mod.MAX_RECALLS
    s.assert_script_used()


@pytest.mark.parametrize(
    ("fetches", "reason", "tries"),
    [
        ([{"error": "403 from SAS", "permanent": True}], "403 from SAS", 1),
        ([{"error": "timeout"}] * mod.MAX_FETCH_FAILURES, "timeout", mod.MAX_FETCH_FAILURES),
        ([{"ready": False}] * 10, "F&O handed out no package URL after 10 tries", 10),
    ],
)
def test_export_package_never_fetched_fails_with_the_reason(fetches: list, reason: str, tries: int) -> None:
    s = export_script(export_check=[{"status": "PartiallySucceeded"}], export_fetch=fetches)
    out = s.run(export)
    assert len(s.calls("export_fetch")) == tries
    waits = [t.wait for t in s.timers()[1:]]
    assert waits == [min(15 * 2**n, 300) for n in range(len(waits))]
    rec = s.inputs("export_record")[0]
    assert rec["status"] == "Failed" and rec["reason"] == reason and rec["polls"] == 1
    assert out["archived"] is None
    s.assert_script_used()


def test_export_unexpected_failure_is_recorded() -> None:
    s = export_script(export_check=[RuntimeError("boom")])
    s.run(export)
    rec = s.inputs("export_record")[0]
    assert rec["status"] == "Failed" and rec["reason"] == "export orchestration failed: boom"


# -- recurring_enqueue ----------------------------------------------------------------------------------

ROUTE = {"environment": "main", "data_project": "CustGroups-RIS", "activity_id": "act-9"}
ENQ_IN = {
    "drop": {"instance_id": "drop-x", "day": "20261129"},
    "route": ROUTE,
    "source": "inbound/g.csv",
    "day": "20261129",
}
ENQ_BASE = {"drop_id": "drop-x", "day": "20261129", "route": ROUTE, "source": "inbound/g.csv"}


def enqueue_script(**answers: list) -> Script:
    base = {
        "outbound_config": [CFG],
        "enqueue_record": [lambda inp: {"status": inp["status"] or "Processed"}],
    }
    return Script(dict(ENQ_IN), instance_id="drop-x-enqueue", activities=base | answers)


def enq_record(**fields) -> dict:
    return (
        ENQ_BASE
        | {
            "message_id": None,
            "message_status": None,
            "status": None,
            "reason": None,
            "polls": 0,
            "started_at": iso(0),
            "finished_at": None,
        }
        | fields
    )


def test_enqueue_polls_the_message_until_terminal() -> None:
    s = enqueue_script(
        enqueue_send=[{"state": "enqueued", "message_id": "m-1"}],
        enqueue_check=[{"status": "Queued", "terminal": False}, {"status": "Processed", "terminal": True}],
    )
    out = s.run(enqueue)
    check_in = {"environment": "main", "message_id": "m-1"}
    assert s.trace() == [
        ("activity", "outbound_config", None),
        ("activity", "enqueue_send", ENQ_BASE | {"instance_id": "drop-x-enqueue"}),
        ("timer", 15.0),
        ("activity", "enqueue_check", check_in),
        ("timer", 45.0),
        ("activity", "enqueue_check", check_in),
        (
            "activity",
            "enqueue_record",
            enq_record(message_id="m-1", message_status="Processed", polls=2, finished_at=iso(45)),
        ),
    ]
    assert out == {"status": "Processed"}
    s.assert_script_used()


def test_enqueue_retried_then_refused() -> None:
    s = enqueue_script(
        enqueue_send=[{"state": "retry", "retry_after": 5}, {"state": "failed", "error": "401 from F&O"}]
    )
    s.run(enqueue)
    assert s.names() == ["outbound_config", "enqueue_send", "timer@30", "enqueue_send", "enqueue_record"]
    assert s.inputs("enqueue_record") == [
        enq_record(status="Failed", reason="401 from F&O", finished_at=iso(30))
    ]


def test_enqueue_message_never_processed_times_out() -> None:
    s = enqueue_script(
        enqueue_send=[{"state": "enqueued", "message_id": "m-2"}],
        enqueue_check=[{"status": "Queued", "terminal": False}] * 3,
    )
    s.activities["outbound_config"] = [CFG | {"poll": POLL | {"deadline": 100}}]
    s.run(enqueue)
    rec = s.inputs("enqueue_record")[0]
    assert rec["status"] == "TimedOut" and rec["polls"] == 3 and rec["message_status"] == "Queued"
    assert rec["reason"] == "message m-2 not processed after 2 minutes"


def test_enqueue_unexpected_failure_is_recorded() -> None:
    s = enqueue_script(enqueue_send=[RuntimeError("blob missing")])
    out = s.run(enqueue)
    assert s.inputs("enqueue_record") == [
        enq_record(status="Failed", reason="enqueue orchestration failed: blob missing", finished_at=iso(0))
    ]
    assert out == {"status": "Failed"}


def test_a_refused_package_url_is_waited_out_not_counted_as_a_failure() -> None:
    """The fault matrix's 429 storm lost a scheduled export: six refused GetExportedPackageUrl calls in a
    row used up MAX_FETCH_FAILURES. A refusal says "not done": wait its Retry-After and ask again."""
    refused = {"refused": True, "retry_after": 7, "error": "GetExportedPackageUrl (HTTP 429)"}
    s = export_script(
        export_check=[{"status": "Succeeded"}],
        export_fetch=[refused] * (mod.MAX_FETCH_FAILURES + 2) + [READY],
    )
    out = s.run(export)
    assert len(s.calls("export_fetch")) == mod.MAX_FETCH_FAILURES + 3
    waits = [t.wait for t in s.timers()[1:]]
    assert waits == [7.0] * (mod.MAX_FETCH_FAILURES + 2)
    assert s.inputs("export_record")[0]["status"] == "Succeeded" and out["archived"]
    s.assert_script_used()
