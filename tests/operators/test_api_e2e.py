"""The operators' API end to end on the embedded stack (Azurite + F&O emulator + local runner, keys checked).

Every action is exercised through HTTP with a function key: listing and paging a day's drops, a drop's detail
with F&O's errors and working short-lived error-file links, a file's history from the index, retry (only
Failed/TimedOut packages, new execution ids, through the gate), cancel at the gate, pause/resume, outbound
lists, and the deep health check naming a failing token endpoint.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from tests.e2e_support import Stack, customer_groups_csv, customer_groups_package

PROJECT = "USMF/CustomerGroups-Import"


@pytest.fixture
def stack(azurite, unique_name):
    with Stack(azurite, unique_name) as s:
        yield s
    assert s.loop_blocks == [], "client functions blocked the event loop"


def api(stack: Stack, method: str, path: str, **kw) -> requests.Response:
    headers = {"x-functions-key": stack.runner.function_key, **kw.pop("headers", {})}
    return requests.request(
        method, f"{stack.runner.http_base_url}/api/{path}", headers=headers, timeout=60, **kw
    )


def _batch(parts: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _imports(stack: Stack) -> list[str]:
    return sorted(e["executionId"] for e in stack.emu.admin.executions() if e["kind"] == "import")


def _wait(cond, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_routes_need_a_function_key(stack: Stack) -> None:
    base = stack.runner.http_base_url
    for path in ("drops", "files?path=a/b", "gates", "openapi.json", "console", "outbound/drains"):
        assert requests.get(f"{base}/api/{path}", timeout=30).status_code == 401, path
    assert requests.post(f"{base}/api/gates/main/pause", timeout=30).status_code == 401
    assert not api(stack, "GET", "gates").json()["gates"][0]["paused"]


def test_list_detail_links_and_file_history(stack: Stack, caplog) -> None:
    stack.drop(f"{PROJECT}/Customer groups__good.csv", customer_groups_csv(["A1", "A2"]))
    stack.drop(f"{PROJECT}/Customer groups__bad.csv", customer_groups_csv([], bad_rows=3))
    stack.settle()
    good, bad = stack.drop_row("Customer groups__good.csv"), stack.drop_row("Customer groups__bad.csv")
    day = bad["PartitionKey"]

    listed = api(stack, "GET", f"drops?day={day}").json()
    assert {d["id"] for d in listed["items"]} == {good["RowKey"], bad["RowKey"]}
    assert listed["continuationToken"] is None
    failed = api(stack, "GET", f"drops?day={day}&status=Failed&legalEntity=usmf&environment=MAIN").json()
    assert [d["id"] for d in failed["items"]] == [bad["RowKey"]]
    assert api(stack, "GET", f"drops?day={day}&project=Nope").json()["items"] == []
    src = api(
        stack,
        "GET",
        f"drops?day={day}&source={stack.names['INBOUND_CONTAINER']}/{PROJECT}/Customer groups__g",
    )
    assert [d["id"] for d in src.json()["items"]] == [good["RowKey"]]
    # Paging: one a page, the token leads to the other and then ends.
    first = api(stack, "GET", f"drops?day={day}&top=1").json()
    assert len(first["items"]) == 1 and first["continuationToken"]
    second = api(stack, "GET", f"drops?day={day}&top=1&continuationToken={first['continuationToken']}").json()
    assert {first["items"][0]["id"], second["items"][0]["id"]} == {good["RowKey"], bad["RowKey"]}
    assert api(stack, "GET", "drops?day=2026-11").status_code == 400
    assert api(stack, "GET", f"drops?day={day}&continuationToken=%%%").status_code == 400

    detail = api(stack, "GET", f"drops/{bad['RowKey']}")
    assert detail.status_code == 200, detail.text
    d = detail.json()
    assert d["status"] == "Failed" and d["day"] == day and d["retriable"] == [1]
    (pkg,) = d["packages"]
    assert pkg["status"] == "Failed" and pkg["errorCount"] == 3
    assert "longer than 10 characters" in pkg["errorSummary"]
    assert d["live"]["runtimeStatus"] == "Completed"
    assert pkg["errorFiles"]
    for f in pkg["errorFiles"]:
        expires = datetime.fromisoformat(f["expires"])
        assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 15 * 60
        q = parse_qs(urlparse(f["url"]).query)
        assert q["sp"] == ["r"] and "sig" in q  # read-only, signed
        body = requests.get(f["url"], timeout=30)
        assert body.status_code == 200 and body.content, f["path"]
        tampered = f["url"].replace("sp=r", "sp=rw")
        assert requests.get(tampered, timeout=30).status_code == 403
    assert api(stack, "GET", "drops/drop-nope").status_code == 404
    assert api(stack, "GET", "drops/not-a-drop").status_code == 400

    # The same name dropped again (new content): the file's history lists both drops, newest first.
    path = f"{stack.names['INBOUND_CONTAINER']}/{PROJECT}/Customer groups__good.csv"
    time.sleep(1.1)
    stack.drop(f"{PROJECT}/Customer groups__good.csv", customer_groups_csv(["A3"]))
    stack.settle()
    hist = api(stack, "GET", "files", params={"path": path}).json()
    assert [h["status"] for h in hist["drops"]] == ["Succeeded", "Succeeded"]
    assert hist["drops"][1]["id"] == good["RowKey"] and hist["drops"][0]["id"] != good["RowKey"]
    assert hist["drops"][0]["receivedAt"] > hist["drops"][1]["receivedAt"]
    assert api(stack, "GET", "files", params={"path": path + "x"}).json()["drops"] == []
    bad_path = f"{stack.names['INBOUND_CONTAINER']}/{PROJECT}/Customer groups__bad.csv"
    (bad_hist,) = api(stack, "GET", "files", params={"path": bad_path}).json()["drops"]
    assert bad_hist["id"] == bad["RowKey"] and bad_hist["status"] == "Failed"
    assert "longer than 10 characters" in bad_hist["reason"]
    assert api(stack, "GET", "files", params={"path": "nocontainer"}).status_code == 400
    # No SAS signature or key landed in any stored row or log line.
    assert "sig=" not in json.dumps(stack.outcomes(), default=str)
    assert "sig=" not in caplog.text and stack.runner.function_key not in caplog.text


def test_retry_imports_only_the_failed_package_again_under_a_new_execution_id(stack: Stack) -> None:
    batch = _batch(
        {"1-good.zip": customer_groups_package(["G1"]), "2-bad.zip": customer_groups_package([], bad_rows=2)}
    )
    stack.drop("USRT/CustomerGroups-Import/two.zip", batch)
    stack.settle()
    drop = stack.drop_row("two.zip")
    assert drop["Status"] == "PartiallySucceeded", drop
    before = _imports(stack)
    assert len(before) == 2

    r = api(stack, "POST", f"drops/{drop['RowKey']}/retry")
    assert r.status_code == 202, r.text
    check = r.json()
    assert check["id"] == f"{drop['RowKey']}-r01" and check["statusQueryGetUri"]
    # While it runs, a second retry is refused.
    stack.settle()
    status = requests.get(check["statusQueryGetUri"], timeout=30).json()
    assert status["runtimeStatus"] == "Completed", status
    after = _imports(stack)
    new = sorted(set(after) - set(before))
    # One new import, of package 2 only, under the retry's own execution id; package 1 was not touched.
    assert new == [f"CustomerGroups-Import-{drop['RowKey']}-r01-p002"], new
    d = api(stack, "GET", f"drops/{drop['RowKey']}").json()
    (retry,) = d["retries"]
    assert retry["status"] == "Failed" and [p["seq"] for p in retry["packages"]] == [2]
    assert retry["packages"][0]["executionId"] == new[0] and retry["packages"][0]["errorFiles"]
    assert d["retriable"] == [2] and d["effectiveStatus"] == "PartiallySucceeded"
    two = f"{stack.names['INBOUND_CONTAINER']}/USRT/CustomerGroups-Import/two.zip"
    (hist,) = api(stack, "GET", "files", params={"path": two}).json()["drops"]
    assert hist["status"] == "PartiallySucceeded" and hist["effectiveStatus"] == "PartiallySucceeded"
    assert {r["CUSTOMERGROUPID"] for r in stack.emu.admin.data("USRT", "Customer groups")} == {"G1"}

    # A second retry again imports only package 2; a drop that fully succeeded has nothing to retry.
    assert api(stack, "POST", f"drops/{drop['RowKey']}/retry").json()["id"].endswith("-r02")
    stack.settle()
    assert len(_imports(stack)) == 4
    assert all("-p001" not in e for e in set(_imports(stack)) - set(before))
    stack.drop(f"{PROJECT}/Customer groups__ok.csv", customer_groups_csv(["OK"]))
    stack.settle()
    ok = stack.drop_row("Customer groups__ok.csv")
    refused = api(stack, "POST", f"drops/{ok['RowKey']}/retry")
    assert refused.status_code == 409 and "no Failed or TimedOut package" in refused.json()["error"]
    assert len(_imports(stack)) == 5
    assert stack.emu.admin.violations == 0


def test_a_failed_drop_retried_after_the_fault_is_fixed_succeeds(stack: Stack) -> None:
    with stack.runner.hold_clock():  # F&O's (virtual) time stands still until the status is overridden
        stack.drop(f"{PROJECT}/Customer groups.csv", customer_groups_csv(["F1"]))
        row = _wait(lambda: [r for r in stack.drops() if r.get("ContentSha256")])[0]
        exec_id = f"CustomerGroups-Import-{row['RowKey']}-p001"
        # F&O reports the first import Failed (as when a required setup was missing in F&O).
        _wait(lambda: any(e["executionId"] == exec_id for e in stack.emu.admin.executions()))
        stack.emu.admin.override_status(exec_id, "Failed")
    stack.settle()
    assert stack.drop_row("Customer groups.csv")["Status"] == "Failed"
    r = api(stack, "POST", f"drops/{row['RowKey']}/retry")
    assert r.status_code == 202, r.text
    stack.settle()
    d = api(stack, "GET", f"drops/{row['RowKey']}").json()
    assert d["retries"][0]["status"] == "Succeeded" and d["effectiveStatus"] == "Succeeded"
    assert d["retriable"] == []
    assert api(stack, "POST", f"drops/{row['RowKey']}/retry").status_code == 409


def test_pause_holds_imports_resume_lets_them_in_and_cancel_frees_a_waiter(stack: Stack) -> None:
    paused = api(stack, "POST", "gates/main/pause", json={"reason": "F&O maintenance"})
    assert (
        paused.status_code == 200
        and paused.json()["paused"]
        and paused.json()["pause_reason"] == "F&O maintenance"
    )
    assert api(stack, "POST", "gates/nope/pause").status_code == 404
    with stack.runner.hold_clock():
        stack.drop(f"{PROJECT}/Customer groups__held.csv", customer_groups_csv(["H1"]))
        stack.drop(f"{PROJECT}/Customer groups__cancel.csv", customer_groups_csv(["C1"]))
        gates = _wait(lambda: (g := api(stack, "GET", "gates").json()["gates"][0])["waiters"][1:] and g)
        assert gates["paused"] and not gates["holders"]
        time.sleep(2)  # (with the clock held the runner is never idle: a waiter's recheck timer is pending)
        assert _imports(stack) == []  # nothing imports while paused
        held = stack.drop_row("Customer groups__held.csv")
        to_cancel = stack.drop_row("Customer groups__cancel.csv")
        d = api(stack, "GET", f"drops/{held['RowKey']}").json()
        assert d["live"]["stage"] == "importing" and d["live"]["current"]["stage"] == "waiting-for-gate"
        assert d["live"]["current"]["paused"] is True
        # Cancel one waiting drop: it ends Canceled without any F&O call.
        c = api(stack, "POST", f"drops/{to_cancel['RowKey']}/cancel")
        assert c.status_code == 202, c.text
        assert c.json()["canceled"] == [f"{to_cancel['RowKey']}-p001"]
        _wait(lambda: stack.drop_row("Customer groups__cancel.csv")["Status"] == "Canceled")
        assert api(stack, "POST", f"drops/{to_cancel['RowKey']}/cancel").status_code == 409
        health = api(stack, "GET", "health?deep=1").json()
        assert any("paused" in w for w in health["warnings"]), health
        assert api(stack, "POST", "gates/main/resume").json()["paused"] is False
        _wait(lambda: len(_imports(stack)) == 1)  # woken by the resume, not by a recheck timer
    stack.settle()
    assert stack.drop_row("Customer groups__held.csv")["Status"] == "Succeeded"
    assert _imports(stack) == [f"CustomerGroups-Import-{held['RowKey']}-p001"]
    # Once imported, there is nothing at the gate to cancel.
    late = api(stack, "POST", f"drops/{held['RowKey']}/cancel")
    assert late.status_code == 409 and "not waiting at the import gate" in late.json()["error"]


def test_outbound_lists_show_drains_messages_and_exports(azurite, unique_name) -> None:
    exports = [
        {"name": "groups", "environment": "main", "activity_id": "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"}
    ]
    jobs = [
        {
            "name": "nightly",
            "environment": "main",
            "data_project": "CustomerGroups-Export",
            "legal_entity": "USMF",
            "schedule": "0 0 2 * * *",
        }
    ]
    with Stack(
        azurite, unique_name, RECURRING_EXPORTS=json.dumps(exports), EXPORT_JOBS=json.dumps(jobs)
    ) as stack:
        stack.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "X1", "DESCRIPTION": "x"}])
        for _ in range(2):
            stack.emu.admin.seed_outbound(exports[0]["activity_id"], legal_entity="USMF")
        r = api(stack, "POST", "outbound/drains/groups")
        assert r.status_code == 202 and r.json()["id"] and r.json()["statusQueryGetUri"]
        stack.settle()
        r = api(stack, "POST", "outbound/exports/nightly")
        assert r.status_code == 202 and r.json()["statusQueryGetUri"]
        stack.settle()
        days = {row["PartitionKey"] for row in stack.outcomes() if row.get("Kind") in ("drain", "export")}
        drains, messages, runs = [], [], []
        for day in days:
            drains += api(stack, "GET", f"outbound/drains?day={day}").json()["items"]
            messages += api(stack, "GET", f"outbound/messages?day={day}").json()["items"]
            runs += api(stack, "GET", f"outbound/exports?day={day}").json()["items"]
        assert len(drains) == 1 and drains[0]["export"] == "groups" and drains[0]["messages"] == 2
        assert len(messages) == 2 and all(m["acked"] for m in messages)
        assert (
            len(runs) == 1
            and runs[0]["status"] == "Succeeded"
            and runs[0]["project"] == "CustomerGroups-Export"
        )
    assert stack.loop_blocks == []


def test_deep_health_names_a_failing_token_endpoint(stack: Stack) -> None:
    cheap = api(stack, "GET", "health")
    assert cheap.status_code == 200 and "checks" not in cheap.json()
    calls = len(stack.emu.admin.calls("token"))
    assert len(stack.emu.admin.calls("token")) == calls  # the cheap check asks nobody
    ok = api(stack, "GET", "health?deep=1")
    assert ok.status_code == 200, ok.text
    assert ok.json()["checks"]["environments"]["main"]["token"] is True
    assert ok.json()["checks"]["storage"]["ok"] is True
    assert ok.json()["checks"]["gates"]["main"]["paused"] is False
    stack.emu.admin.inject_fault("token", "503", rate=1.0)
    bad = api(stack, "GET", "health?deep=1")
    assert bad.status_code == 503, bad.text
    body = bad.json()
    assert body["status"] == "unhealthy" and body["checks"]["environments"]["main"]["token"] is False
    assert any(p.startswith("environment main: no token") for p in body["problems"]), body["problems"]
    assert stack.settings["FNO_MAIN_CLIENT_SECRET"] not in bad.text
    stack.emu.admin.clear_faults()
    assert api(stack, "GET", "health?deep=1").status_code == 200


def test_retry_is_refused_when_the_same_content_was_imported_since_by_another_drop(stack: Stack) -> None:
    data = customer_groups_csv(["K1"])
    with stack.runner.hold_clock():
        stack.drop(f"{PROJECT}/Customer groups__first.csv", data)
        first = _wait(lambda: [r for r in stack.drops() if r.get("ContentSha256")])[0]
        exec_id = f"CustomerGroups-Import-{first['RowKey']}-p001"
        _wait(lambda: any(e["executionId"] == exec_id for e in stack.emu.admin.executions()))
        stack.emu.admin.override_status(exec_id, "Failed")
    stack.settle()
    assert stack.drop_row("Customer groups__first.csv")["Status"] == "Failed"  # its content claim is released
    stack.drop(f"{PROJECT}/Customer groups__again.csv", data)  # the same bytes: this drop claims and imports
    stack.settle()
    again = stack.drop_row("Customer groups__again.csv")
    assert again["Status"] == "Succeeded"
    imports = len(stack.import_calls())
    refused = api(stack, "POST", f"drops/{first['RowKey']}/retry")
    assert refused.status_code == 409 and again["RowKey"] in refused.json()["error"], refused.text
    stack.settle()
    assert len(stack.import_calls()) == imports
    assert api(stack, "GET", f"drops/{first['RowKey']}").json()["retries"] == []


def test_a_retry_whose_orchestration_was_terminated_does_not_block_the_next(stack: Stack) -> None:
    stack.drop(f"{PROJECT}/Customer groups__bad.csv", customer_groups_csv([], bad_rows=1))
    stack.settle()
    drop = stack.drop_row("Customer groups__bad.csv")["RowKey"]
    assert api(stack, "POST", "gates/main/pause").status_code == 200
    with stack.runner.hold_clock():
        assert api(stack, "POST", f"drops/{drop}/retry").json()["id"] == f"{drop}-r01"
        _wait(lambda: api(stack, "GET", "gates").json()["gates"][0]["waiters"])
        # While it runs, another retry is refused.
        busy = api(stack, "POST", f"drops/{drop}/retry")
        assert busy.status_code == 409 and "still Running" in busy.json()["error"]
        stack.runner.terminate(f"{drop}-r01", "operator test")
        stack.runner.terminate(f"{drop}-r01-p001", "operator test")
        _wait(lambda: stack.runner.get_status(f"{drop}-r01")["runtimeStatus"] == "Terminated")
        again = api(stack, "POST", f"drops/{drop}/retry")
        assert again.status_code == 202 and again.json()["id"] == f"{drop}-r02", again.text
    stack.runner.fire_timer("gate_sweeper")  # evicts the terminated waiter, as its timer would
    assert api(stack, "POST", "gates/main/resume").status_code == 200
    stack.settle()
    d = api(stack, "GET", f"drops/{drop}").json()
    r01, r02 = d["retries"]
    assert r01["status"] == "Failed" and "ended without recording" in r01["reason"]
    assert r02["status"] == "Failed" and [p["executionId"] for p in r02["packages"]] == [
        f"CustomerGroups-Import-{drop}-r02-p001"
    ]
    assert f"CustomerGroups-Import-{drop}-r01-p001" not in _imports(stack)
