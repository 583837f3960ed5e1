"""``inbound_drop`` at generator level: plan, prepare in parallel, import in order, finalise."""

from __future__ import annotations

from dmf.pipeline.ids import package_instance_id
from orchestrators import inbound_drop as mod
from tests.orchestrators.fake_context import Script, user_function

orchestrator = user_function(mod.inbound_drop)

DROP_ID = "drop-0123456789abcdef"
DROP = {
    "container": "inbound",
    "name": "USMF/CustomerGroups-Import/groups.zip",
    "etag": "0x8D1",
    "day": "20261129",
}
PLAN_INPUT = DROP | {"instance_id": DROP_ID}
FINAL = {
    "instance_id": DROP_ID,
    "day": "20261129",
    "source": "inbound/USMF/CustomerGroups-Import/groups.zip",
    "etag": "0x8D1",
}
ROUTE = {"environment": "main", "data_project": "CustomerGroups-Import", "legal_entity": "USMF"}


def finalized(inp: dict) -> dict:
    return {"status": "finalised", "action": inp["action"]}


def script(**answers: list) -> Script:
    return Script(dict(DROP), instance_id=DROP_ID, activities={"finalize_drop": [finalized]} | answers)


def test_planning_failure_still_finalises_the_drop() -> None:
    s = script(plan_drop=[RuntimeError("storage unavailable")])
    out = s.run(orchestrator)
    assert s.trace() == [
        ("activity", "plan_drop", PLAN_INPUT),
        (
            "activity",
            "finalize_drop",
            FINAL | {"action": "error", "reason": "planning the drop failed: storage unavailable"},
        ),
    ]
    assert all(t.retry is mod.RETRY for t in s.yielded)
    assert out == {"status": "finalised", "action": "error"}
    s.assert_script_used()


def test_gone_or_already_done_ends_without_finalising() -> None:
    for action in ("gone", "already-done"):
        s = Script(
            dict(DROP), instance_id=DROP_ID, activities={"plan_drop": [{"action": action, "reason": "why"}]}
        )
        assert s.run(orchestrator) == {"status": action, "reason": "why"}
        assert s.names() == ["plan_drop"]


def test_rejected_drop_is_finalised_with_its_reason() -> None:
    plan = {"action": "reject", "reason": "not a zip", "sha256": "ab12", "members": [], "items": []}
    s = script(plan_drop=[plan])
    out = s.run(orchestrator)
    assert s.trace()[1] == (
        "activity",
        "finalize_drop",
        FINAL
        | {"sha256": "ab12", "members": [], "action": "reject", "reason": "not a zip", "duplicate_of": None},
    )
    assert s.statuses[-1] == {"stage": "finalising", "status": "reject"}
    assert out["action"] == "reject"


def test_duplicate_drop_names_the_first_drop() -> None:
    plan = {"action": "duplicate", "reason": "same content", "duplicate_of": "drop-first", "sha256": "ab12"}
    s = script(plan_drop=[plan])
    s.run(orchestrator)
    final = s.inputs("finalize_drop")[0]
    assert final["action"] == "duplicate" and final["duplicate_of"] == "drop-first" and final["members"] == []


def test_enqueue_route_runs_the_recurring_enqueue_sub_orchestration() -> None:
    plan = {"action": "enqueue", "route": ROUTE, "sha256": "ab12", "items": []}
    sub_result = {"seq": 1, "status": "Succeeded", "message_id": "m-1"}
    s = script(plan_drop=[plan])
    s.subs = {"recurring_enqueue": [sub_result]}
    s.run(orchestrator)
    assert s.trace()[1] == (
        "sub",
        "recurring_enqueue",
        {"drop": PLAN_INPUT, "route": ROUTE, "source": FINAL["source"], "day": "20261129"},
        f"{DROP_ID}-enqueue",
    )
    assert s.inputs("finalize_drop") == [
        FINAL | {"sha256": "ab12", "members": [], "action": "import", "results": [sub_result]}
    ]
    s.assert_script_used()


def _items() -> list[dict]:
    return [
        {"seq": 1, "kind": "raw", "source": "inbound/a.csv", "entity": "CustGroup"},
        {"seq": 2, "kind": "package", "source": "inbound/b.zip", "entity": None},
        {"seq": 3, "kind": "package", "source": "inbound/c.zip", "entity": None},
    ]


def _pkg(staged: str, rows: int | None) -> dict:
    return {"staged": staged, "entities": ["CustGroup"], "rows": rows}


def test_items_prepared_in_parallel_rejected_kept_apart_packages_imported_in_order() -> None:
    plan = {"action": "import", "route": ROUTE, "sha256": "ab12", "members": ["m"], "items": _items()}
    prepared = {
        1: {
            "ok": True,
            "seq": 1,
            "problems": [],
            "packages": [_pkg("stg/1-1.zip", 100), _pkg("stg/1-2.zip", 50)],
        },
        2: {"ok": False, "seq": 2, "problems": ["Manifest.xml missing"], "packages": []},
        3: {"ok": True, "seq": 3, "problems": [], "packages": [_pkg("stg/3-1.zip", None)]},
    }
    s = script(plan_drop=[plan], prepare_item=[lambda inp: prepared[inp["item"]["seq"]]] * 3)
    s.subs = {
        "import_package": [
            {"seq": 1, "status": "Succeeded"},
            RuntimeError("orchestration terminated"),
            {"seq": 3, "status": "Failed"},
        ]
    }
    out = s.run(orchestrator)
    fan_out = s.yielded[1]
    assert fan_out.kind == "all"
    assert [c.summary() for c in fan_out.children] == [
        ("activity", "prepare_item", {"drop_id": DROP_ID, "day": "20261129", "item": it, "route": ROUTE})
        for it in _items()
    ]
    subs = [t.summary() for t in s.yielded if t.kind == "sub"]
    expect = [
        (1, "stg/1-1.zip", 100, "inbound/a.csv"),
        (2, "stg/1-2.zip", 50, "inbound/a.csv"),
        (3, "stg/3-1.zip", None, "inbound/c.zip"),
    ]
    assert subs == [
        (
            "sub",
            "import_package",
            {
                "drop_id": DROP_ID,
                "day": "20261129",
                "seq": n,
                "staged": staged,
                "entities": ["CustGroup"],
                "rows": rows,
                "source": source,
                "route": ROUTE,
            },
            package_instance_id(DROP_ID, n),
        )
        for n, staged, rows, source in expect
    ]
    assert s.names()[-1] == "finalize_drop"
    final = s.inputs("finalize_drop")[0]
    assert final == FINAL | {
        "sha256": "ab12",
        "members": ["m"],
        "action": "import",
        "results": [
            {"seq": 1, "status": "Succeeded"},
            # F&O may or may not have imported it: Unknown keeps the content claim.
            {
                "seq": 2,
                "status": "Unknown",
                "reason": "import orchestration failed: orchestration terminated",
            },
            {"seq": 3, "status": "Failed"},
        ],
        "rejected": [{"seq": 2, "problems": ["Manifest.xml missing"], "source": "inbound/b.zip"}],
    }
    assert {"stage": "preparing", "items": 3} in s.statuses
    assert {"stage": "importing", "package": 3, "of": 3, "rejected": 1} in s.statuses
    assert out == {"status": "finalised", "action": "import"}
    s.assert_script_used()


def test_every_item_rejected_imports_nothing() -> None:
    plan = {"action": "import", "route": ROUTE, "sha256": "ab12", "items": _items()[:1]}
    s = script(plan_drop=[plan], prepare_item=[{"ok": False, "seq": 1, "problems": ["bad"], "packages": []}])
    s.run(orchestrator)
    assert s.names() == ["plan_drop", "all(prepare_item)", "finalize_drop"]
    final = s.inputs("finalize_drop")[0]
    assert final["results"] == [] and final["rejected"] == [
        {"seq": 1, "problems": ["bad"], "source": "inbound/a.csv"}
    ]


def test_prepare_failure_finalises_the_drop_as_an_error() -> None:
    plan = {"action": "import", "route": ROUTE, "sha256": "ab12", "items": _items()[:2]}
    s = script(
        plan_drop=[plan],
        prepare_item=[{"ok": True, "seq": 1, "problems": [], "packages": []}, OSError("disk full")],
    )
    out = s.run(orchestrator)
    assert s.names() == ["plan_drop", "all(prepare_item, prepare_item)", "finalize_drop"]
    final = s.inputs("finalize_drop")[0]
    assert final["action"] == "error" and final["reason"] == "preparing the drop failed: disk full"
    assert "results" not in final
    assert out["action"] == "error"
