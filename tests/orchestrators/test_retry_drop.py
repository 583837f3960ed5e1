"""``retry_drop`` at generator level: the plan's packages imported again in order, then finalised."""

from __future__ import annotations

from dmf.pipeline.ids import package_instance_id
from orchestrators import retry_drop as mod
from tests.orchestrators.fake_context import Script, user_function

orchestrator = user_function(mod.retry_drop)

RETRY_ID = "drop-abc-r01"
ROUTE = {"environment": "main", "data_project": "CustomerGroups-Import", "legal_entity": "USMF"}
PKG = {
    "staged": "staging/drop-abc/002-01.zip",
    "entities": ["CustGroup"],
    "rows": 5,
    "source": "inbound/g.zip",
}
PLAN = {
    "drop_id": "drop-abc",
    "retry_id": RETRY_ID,
    "day": "20261129",
    "source": "inbound/g.zip",
    "sha256": "ab12",
    "route": ROUTE,
    "packages": [PKG | {"seq": 2}, PKG | {"seq": 3}],
}


def test_packages_imported_in_order_under_the_retry_then_finalised() -> None:
    subs = [{"seq": 2, "status": "Succeeded"}, {"seq": 3, "status": "Failed"}]
    s = Script(
        dict(PLAN),
        instance_id=RETRY_ID,
        subs={"import_package": list(subs)},
        activities={"finalize_retry": [lambda inp: {"status": "PartiallySucceeded"}]},
    )
    out = s.run(orchestrator)
    assert [c.instance_id for c in s.calls("import_package")] == [
        package_instance_id(RETRY_ID, 2),
        package_instance_id(RETRY_ID, 3),
    ]
    assert s.inputs("import_package")[0] == {
        "drop_id": RETRY_ID,
        "day": "20261129",
        "seq": 2,
        "staged": PKG["staged"],
        "entities": ["CustGroup"],
        "rows": 5,
        "source": "inbound/g.zip",
        "route": ROUTE,
    }
    # the plan without its packages, with the retry's results
    final = {k: v for k, v in PLAN.items() if k != "packages"} | {"results": subs}
    assert s.inputs("finalize_retry") == [final]
    assert s.statuses[0] == {"stage": "importing", "package": 1, "of": 2, "seq": 2, "retry_of": "drop-abc"}
    assert s.statuses[-1] == {"stage": "done", "status": "PartiallySucceeded"}
    assert out == {"status": "PartiallySucceeded"}
    s.assert_script_used()
