"""``import_package`` at generator level: gate, start, polling timers, release, errors, outcome."""

from __future__ import annotations

from typing import Any

from dmf.gate.events import wake_event
from dmf.pipeline.ids import execution_id
from orchestrators import import_package as mod
from orchestrators.retries import MAX_START_RETRIES
from tests.orchestrators.fake_context import NEVER, Script, iso, user_function

orchestrator = user_function(mod.import_package)

INSTANCE = "drop-abc-p001"
ROUTE = {"environment": "main", "data_project": "CustomerGroups-Import", "legal_entity": "USMF"}
INPUT = {
    "drop_id": "drop-abc",
    "day": "20261129",
    "seq": 1,
    "staged": "staging/drop-abc/001-01.zip",
    "entities": ["CustGroup"],
    "rows": 10,
    "source": "inbound/USMF/CustomerGroups-Import/groups.zip",
    "route": ROUTE,
}
EXEC = execution_id("CustomerGroups-Import", INSTANCE)
REQ = INPUT | {"instance_id": INSTANCE, "execution_id": EXEC}
GATE = {"environment": "main", "ticket": INSTANCE, "instance_id": INSTANCE, "execution_id": EXEC}
POLL = {"initial": 15, "factor": 2, "max_interval": 300, "deadline": 3600, "not_found_grace": 60}
CFG = {"poll": POLL, "gate_recheck_seconds": 30, "gate_lease_seconds": 600}
GRANTED = {"granted": True, "position": 0, "holders": 1}
STARTED = {"state": "started", "confirmed": True}


def check(status: str, **extra: Any) -> dict:
    return {"status": status, **extra}


def script(**answers: list) -> Script:
    """The usual world: config, enqueue, granted at once, started, released, recorded as reported."""
    base = {
        "pipeline_config": [CFG],
        "gate_enqueue": [None],
        "gate_try_acquire": [GRANTED],
        "start_import": [STARTED],
        "gate_release": [None],
        "record_import_result": [lambda inp: {"status": inp["status"]}],
    }
    return Script(dict(INPUT), instance_id=INSTANCE, activities=base | answers)


def check_input(t: float) -> dict:
    return {"environment": "main", "execution_id": EXEC, "ticket": INSTANCE, "now": iso(t)}


def record_input(**fields: Any) -> dict:
    return {
        **{k: INPUT[k] for k in ("drop_id", "day", "seq", "route")},
        "execution_id": EXEC,
        "status": None,
        "reason": None,
        "last_status": None,
        "polls": None,
        "started_at": iso(0),
        "finished_at": None,
        "confirmed_start_at": None,
        "observed_seconds": None,
        "errors": None,
    } | fields


def test_succeeded_after_two_polls_full_sequence() -> None:
    s = script(check_import=[check("Executing"), check("Succeeded")])
    out = s.run(orchestrator)
    assert s.trace() == [
        ("activity", "pipeline_config", None),
        ("activity", "gate_enqueue", GATE | {"now": iso(0)}),
        ("activity", "gate_try_acquire", GATE | {"now": iso(0)}),
        ("activity", "start_import", REQ | {"allow_recall": False, "now": iso(0)}),
        ("timer", 15.0),  # initial interval
        ("activity", "check_import", check_input(15)),
        ("timer", 45.0),  # then backs off by the factor: 30 s after the first check
        ("activity", "check_import", check_input(45)),
        ("activity", "gate_release", GATE | {"now": iso(45), "maybe_running": False}),
        (
            "activity",
            "record_import_result",
            record_input(
                status="Succeeded",
                last_status="Succeeded",
                polls=2,
                finished_at=iso(45),
                confirmed_start_at=iso(0),
                observed_seconds=30.0,  # ended between the two checks
            ),
        ),
    ]
    assert out == {
        "seq": 1,
        "status": "Succeeded",
        "execution_id": EXEC,
        "records": 10,
        "error_count": None,
        "error_summary": None,
        "polls": 2,
    }
    assert s.statuses[-1] == {"stage": "done", "status": "Succeeded", "execution_id": EXEC}
    assert all(c.retry is mod.RETRY for c in s.yielded if c.kind == "activity" and c.retry is not None)
    assert s.calls("pipeline_config")[0].retry is None
    s.assert_script_used()


def test_waits_for_the_gate_event_then_the_recheck_timer() -> None:
    s = script(
        gate_try_acquire=[
            {"granted": False, "position": 2, "holders": 1},
            {"granted": False, "position": 1, "holders": 1},
            GRANTED,
        ],
        check_import=[check("Succeeded")],
    )
    # Handed over after 10 s; then the event is lost. Each wait has its own event name (see _wait_for_gate).
    s.events = {wake_event(1): [10.0], wake_event(2): [NEVER]}
    s.run(orchestrator)
    assert s.names()[:7] == [
        "pipeline_config",
        "gate_enqueue",
        "gate_try_acquire",
        "any(gate_open_1, timer)",
        "gate_try_acquire",
        "any(gate_open_2, timer)",
        "gate_try_acquire",
    ]
    first, second = (t for t in s.yielded if t.kind == "any")
    # Recheck timers: base 30 s x (1 + position), from the time each wait began.
    assert first.children[1].summary() == ("timer", 90.0)
    assert first.children[1].cancelled  # the event won: its safety-net timer is cancelled
    assert second.children[1].summary() == ("timer", 10.0 + 60.0)
    assert not second.children[1].cancelled  # the timer fired
    assert s.inputs("gate_try_acquire") == [GATE | {"now": iso(t)} for t in (0, 10, 70)]
    assert s.statuses[:2] == [
        {"stage": "waiting-for-gate", "position": 2, "holders": 1, "paused": False, "wake": "gate_open_1"},
        {"stage": "waiting-for-gate", "position": 1, "holders": 1, "paused": False, "wake": "gate_open_2"},
    ]
    assert s.inputs("start_import") == [REQ | {"allow_recall": False, "now": iso(70)}]
    s.assert_script_used()


def test_start_retries_back_off_then_poll_from_the_real_start() -> None:
    s = script(
        start_import=[{"state": "retry"}, {"state": "retry"}, STARTED],
        check_import=[check("Succeeded")],
    )
    out = s.run(orchestrator)
    assert s.names()[3:] == [
        "start_import",
        "timer@30",  # initial x 2
        "start_import",
        "timer@90",  # initial x 4
        "start_import",
        "timer@105",  # first poll 15 s after the start that went through
        "check_import",
        "gate_release",
        "record_import_result",
    ]
    assert [i["now"] for i in s.inputs("start_import")] == [iso(0), iso(30), iso(90)]
    assert s.inputs("record_import_result")[0]["confirmed_start_at"] == iso(90)
    assert out["status"] == "Succeeded" and out["polls"] == 1
    s.assert_script_used()


def test_start_retries_are_capped_by_half_the_lease() -> None:
    cfg = CFG | {"gate_lease_seconds": 100}
    s = script(
        pipeline_config=[cfg], start_import=[{"state": "retry"}, STARTED], check_import=[check("Failed")]
    )
    s.activities["collect_errors"] = [{"error_count": 0, "messages": [], "files": []}]
    s.run(orchestrator)
    assert s.timers()[0].wait == 30.0  # min(15 x 2, 100 / 2)
    s2 = script(
        pipeline_config=[CFG | {"gate_lease_seconds": 40}],
        start_import=[{"state": "retry"}, STARTED],
        check_import=[check("Succeeded")],
    )
    s2.run(orchestrator)
    assert s2.timers()[0].wait == 20.0  # the permit's lease must outlive the wait


def test_start_still_retrying_after_five_retries_fails_with_its_reason() -> None:
    s = script(start_import=[{"state": "retry", "error": "F&O busy (429)"}] * 6)
    out = s.run(orchestrator)
    assert [t.wait for t in s.timers()] == [30.0, 60.0, 120.0, 240.0, 300.0]  # last one capped at lease / 2
    assert len(s.calls("start_import")) == 1 + MAX_START_RETRIES
    assert "check_import" not in s.names()
    assert s.inputs("gate_release") == [GATE | {"now": iso(750), "maybe_running": False}]
    assert s.inputs("record_import_result") == [
        record_input(status="Failed", reason="F&O busy (429)", polls=0, finished_at=iso(750))
    ]
    assert out["status"] == "Failed" and out["error_summary"] == "F&O busy (429)" and out["polls"] == 0
    s.assert_script_used()


def test_start_refused_fails_without_polling_or_error_collection() -> None:
    s = script(start_import=[{"state": "failed", "error": "definition group not found"}])
    out = s.run(orchestrator)
    assert s.names() == [
        "pipeline_config",
        "gate_enqueue",
        "gate_try_acquire",
        "start_import",
        "gate_release",
        "record_import_result",
    ]
    assert s.inputs("gate_release")[0]["maybe_running"] is False
    assert out["status"] == "Failed" and out["error_summary"] == "definition group not found"
    s.assert_script_used()


def test_lost_gate_permit_queues_again_before_importing() -> None:
    s = script(
        gate_enqueue=[None, None],
        gate_try_acquire=[GRANTED, GRANTED],
        start_import=[{"state": "lost-gate"}, STARTED],
        check_import=[check("Succeeded")],
    )
    out = s.run(orchestrator)
    assert s.names()[:8] == [
        "pipeline_config",
        "gate_enqueue",
        "gate_try_acquire",
        "start_import",
        "gate_enqueue",  # back in the queue: never import without the permit
        "gate_try_acquire",
        "start_import",
        "timer@15",
    ]
    assert {"stage": "gate-lost", "execution_id": EXEC} in s.statuses
    assert len(s.calls("gate_release")) == 1
    assert out["status"] == "Succeeded"
    s.assert_script_used()


def test_timed_out_keeps_the_permit_marked_maybe_running() -> None:
    poll = POLL | {"deadline": 100}
    s = script(pipeline_config=[CFG | {"poll": poll}], check_import=[check("Executing")] * 3)
    out = s.run(orchestrator)
    # Each wait counts from its check's time; the last is cut to the deadline.
    assert [t.wait for t in s.timers()] == [15, 30, 55]
    assert s.names()[4:10] == [
        "timer@15",
        "check_import",
        "timer@45",
        "check_import",
        "timer@100",  # the last wait is cut to the deadline
        "check_import",
    ]
    # F&O may still be importing: the release says so (the gate keeps it until F&O settles).
    assert s.inputs("gate_release") == [GATE | {"now": iso(100), "maybe_running": True}]
    rec = s.inputs("record_import_result")[0]
    assert rec["status"] == "TimedOut" and rec["polls"] == 3 and rec["last_status"] == "Executing"
    assert rec["reason"] == "no terminal status after 2 minutes (last: Executing)"
    assert rec["errors"] is None  # no error collection for an import that may still run
    assert out["status"] == "TimedOut" and out["error_summary"] == rec["reason"]
    s.assert_script_used()


def test_recall_after_an_ambiguous_start_that_f_and_o_never_saw() -> None:
    s = script(
        start_import=[{"state": "ambiguous", "confirmed": False}, STARTED],
        check_import=[check("NotFound")] * 3 + [check("Succeeded")],
    )
    out = s.run(orchestrator)
    assert s.names()[3:] == [
        "start_import",
        "timer@15",
        "check_import",
        "timer@45",
        "check_import",
        "timer@105",
        "check_import",  # NotFound 105 s after the call, past the 60 s grace: call again
        "start_import",
        "timer@120",  # polling restarts from the recall
        "check_import",
        "gate_release",
        "record_import_result",
    ]
    assert s.inputs("start_import") == [
        REQ | {"allow_recall": False, "now": iso(0)},
        REQ | {"allow_recall": True, "now": iso(105)},
    ]
    rec = s.inputs("record_import_result")[0]
    assert rec["confirmed_start_at"] == iso(105) and rec["polls"] == 1 and rec["observed_seconds"] == 7.5
    assert out["status"] == "Succeeded"
    s.assert_script_used()


def test_not_found_after_a_confirmed_start_fails_without_recalling() -> None:
    s = script(check_import=[check("NotFound")] * 3)
    out = s.run(orchestrator)
    assert len(s.calls("start_import")) == 1
    rec = s.inputs("record_import_result")[0]
    assert rec["status"] == "Failed" and rec["last_status"] == "NotFound" and rec["polls"] == 3
    assert rec["reason"] == f"F&O has no record of execution {EXEC} after 105s"
    assert s.inputs("gate_release")[0]["maybe_running"] is False
    assert out["error_summary"] == rec["reason"]
    s.assert_script_used()


def test_recalls_are_limited() -> None:
    ambiguous = {"state": "ambiguous", "confirmed": False}
    s = script(
        start_import=[ambiguous] * (1 + mod.MAX_RECALLS),
        check_import=[check("NotFound")] * (3 * (1 + mod.MAX_RECALLS)),
    )
    out = s.run(orchestrator)
    assert [i["allow_recall"] for i in s.inputs("start_import")] == [False] + [True] * mod.MAX_RECALLS
    assert out["status"] == "Failed" and "has no record" in out["error_summary"]
    s.assert_script_used()


def test_learned_duration_one_long_timer_with_the_lease_renewed_first() -> None:
    s = script(
        start_import=[STARTED | {"expected_seconds": 1000}],
        check_import=[check("Succeeded")],
        gate_renew=[None],
    )
    out = s.run(orchestrator)
    assert s.trace()[4:6] == [
        (
            "activity",
            "gate_renew",
            {
                "environment": "main",
                "ticket": INSTANCE,
                "instance_id": INSTANCE,
                "now": iso(0),
                "lease_seconds": 900 + 600,  # the planned wait plus a lease
            },
        ),
        ("timer", 900.0),  # just before the usual duration (90 %)
    ]
    assert s.inputs("record_import_result")[0]["observed_seconds"] == 0.9 * 900
    assert out["polls"] == 1
    s.assert_script_used()


def test_lost_lease_keeps_polling_and_shows_in_the_custom_status() -> None:
    s = script(check_import=[check("Executing", lease_ok=False), check("Succeeded", lease_ok=True)])
    out = s.run(orchestrator)
    polling = [st for st in s.statuses if st.get("stage") == "polling"]
    assert polling == [
        {"stage": "polling", "status": "Executing", "polls": 1, "execution_id": EXEC, "lease_lost": True},
        {"stage": "polling", "status": "Succeeded", "polls": 2, "execution_id": EXEC, "lease_lost": True},
    ]
    assert out["status"] == "Succeeded"


def test_failed_import_collects_errors_and_waits_for_target_keys() -> None:
    base = {"environment": "main", "execution_id": EXEC, "drop_id": "drop-abc", "seq": 1}
    s = script(
        check_import=[check("Failed")],
        collect_errors=[
            {
                "error_count": 3,
                "messages": ["row 2: bad group"],
                "files": ["e/staging.csv"],
                "pending_target_keys": ["CustGroup"],
            }
        ],
        fetch_target_error_keys=[
            {"files": [], "pending": ["CustGroup"]},
            {"files": ["e/keys.csv"], "pending": []},
        ],
    )
    out = s.run(orchestrator)
    assert s.names()[6:] == [
        "gate_release",  # released before collecting errors: other imports need not wait
        "collect_errors",
        "timer@30",
        "fetch_target_error_keys",
        "timer@60",
        "fetch_target_error_keys",
        "record_import_result",
    ]
    assert s.trace()[7] == ("activity", "collect_errors", base | {"entities": ["CustGroup"]})
    assert s.inputs("fetch_target_error_keys") == [base | {"entities": ["CustGroup"]}] * 2
    errors = {"error_count": 3, "messages": ["row 2: bad group"], "files": ["e/staging.csv", "e/keys.csv"]}
    assert s.inputs("record_import_result")[0]["errors"] == errors
    assert {"stage": "collecting-errors", "execution_id": EXEC} in s.statuses
    assert out["error_count"] == 3 and out["error_summary"] == "row 2: bad group"
    s.assert_script_used()


def test_target_keys_never_ready_are_reported() -> None:
    s = script(
        check_import=[check("PartiallySucceeded")],
        collect_errors=[
            {"error_count": 1, "messages": [], "files": [], "pending_target_keys": ["CustGroup"]}
        ],
        fetch_target_error_keys=[{"files": [], "pending": ["CustGroup"]}] * mod.TARGET_KEY_TRIES,
    )
    out = s.run(orchestrator)
    assert [t.wait for t in s.timers()[1:]] == [15, 30, 60, 120, 240, 480]
    assert out["error_summary"] == "target error keys not ready for: CustGroup"
    s.assert_script_used()


def test_refused_target_key_fetches_are_waited_out_not_counted() -> None:
    # A 429 storm refused every other fetch: six refusals used to spend the six tries and lose the file.
    refused = {"files": [], "pending": ["CustGroup"], "refused": True, "retry_after": 7}
    not_yet, ready = {"files": [], "pending": ["CustGroup"]}, {"files": ["e/keys.csv"], "pending": []}
    s = script(
        check_import=[check("PartiallySucceeded")],
        collect_errors=[
            {"error_count": 1, "messages": [], "files": [], "pending_target_keys": ["CustGroup"]}
        ],
        fetch_target_error_keys=[refused, not_yet] * (mod.TARGET_KEY_TRIES - 1) + [refused, ready],
    )
    out = s.run(orchestrator)
    waits = [t.wait for t in s.timers()[1:]]
    assert waits == [15, 7, 30, 7, 60, 7, 120, 7, 240, 7, 480, 7]  # Retry-After, then the try's backoff
    assert s.inputs("record_import_result")[0]["errors"]["files"] == ["e/keys.csv"]
    assert "not ready" not in (out["error_summary"] or "")
    s.assert_script_used()


def test_refusals_past_their_budget_count_as_tries() -> None:
    refused = {"files": [], "pending": ["CustGroup"], "refused": True, "retry_after": 400}
    s = script(
        check_import=[check("PartiallySucceeded")],
        collect_errors=[
            {"error_count": 1, "messages": [], "files": [], "pending_target_keys": ["CustGroup"]}
        ],
        fetch_target_error_keys=[refused] * (3 + mod.TARGET_KEY_TRIES),
    )
    out = s.run(orchestrator)
    waits = [t.wait for t in s.timers()[1:]]
    assert waits[:4] == [15, 400, 400, 100]  # TARGET_KEY_REFUSALS.deadline: 900 s of refusals in all
    assert out["error_summary"] == "target error keys not ready for: CustGroup"
    s.assert_script_used()


def test_error_collection_failure_does_not_fail_an_imported_package() -> None:
    s = script(check_import=[check("PartiallySucceeded")], collect_errors=[RuntimeError("blob gone")])
    out = s.run(orchestrator)
    assert s.inputs("record_import_result")[0]["errors"] == {
        "error_count": None,
        "messages": ["could not collect errors: blob gone"],
        "files": [],
    }
    assert out["status"] == "PartiallySucceeded"


def test_unexpected_failure_still_releases_the_gate_and_records() -> None:
    s = script(check_import=[RuntimeError("table storage down")])
    out = s.run(orchestrator)
    assert s.names()[-2:] == ["gate_release", "record_import_result"]
    assert s.inputs("gate_release")[0]["maybe_running"] is False
    rec = s.inputs("record_import_result")[0]
    assert rec["status"] == "Failed" and rec["reason"] == "import step failed: table storage down"
    assert out["status"] == "Failed"


def test_release_failure_is_shown_and_the_outcome_still_recorded() -> None:
    s = script(check_import=[check("Succeeded")], gate_release=[RuntimeError("gate table down")])
    out = s.run(orchestrator)
    assert {"stage": "gate-release-failed"} in s.statuses
    assert s.names()[-1] == "record_import_result"
    assert out["status"] == "Succeeded"
