"""The recurring enqueue route at the domain level: enqueue once, status to terminal, execution and errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dmf.pipeline import outbound_enqueue as enq
from dmf.routing import ResolvedRoute
from tests.e2e_support import customer_groups_csv

from .conftest import DAY, IMPORT_ACTIVITY, Env

DROP = "drop-0123456789abcdef"


def _route(legal_entity: str = "USMF", **kw) -> dict:
    return ResolvedRoute(
        route="xslt-groups", environment="main", mode="enqueue", kind="raw", data_project=None,
        legal_entity=legal_entity, entity="Customer groups", source_format="CSV-Unicode", execute=True,
        overwrite=True, allow_duplicate_content=False, activity_id=IMPORT_ACTIVITY, **kw,
    ).model_dump()  # fmt: skip


def _unicode_csv(ids: list[str], bad_rows: int = 0) -> bytes:
    return b"\xff\xfe" + customer_groups_csv(ids, bad_rows=bad_rows, encoding="utf-16-le")


def _put(env: Env, name: str, data: bytes) -> str:
    container = env.svc.settings.inbound_container + "x"
    env.svc.blob(container, name).upload_blob(data, overwrite=True)
    return f"{container}/{name}"


def _run(env: Env, source: str, route: dict) -> dict:
    req = {"drop_id": DROP, "day": DAY, "route": route, "source": source, "instance_id": DROP + "-enqueue"}
    started = datetime.now(UTC).isoformat()
    sent = enq.enqueue_source(env.svc, req)
    status = None
    polls = 0
    if sent["state"] == "enqueued":
        for _ in range(40):
            env.emu.admin.advance(10)
            chk = enq.check_message(env.svc, {"environment": "main", "message_id": sent["message_id"]})
            polls += 1
            if chk["terminal"]:
                status = chk["status"]
                break
    return enq.record_enqueue(
        env.svc,
        req | {"message_id": sent.get("message_id"), "message_status": status, "polls": polls,
               "status": None if sent["state"] == "enqueued" else "Failed", "reason": sent.get("error"),
               "started_at": started, "finished_at": datetime.now(UTC).isoformat()},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("ids", "bad", "le", "message_status", "status"),
    [
        (["E1", "E2"], 0, "USMF", "Processed", "Succeeded"),
        (["E3"], 2, "USMF", "ProcessedWithErrors", "PartiallySucceeded"),
        (["E4"], 0, "NOPE", "PreProcessingError", "Failed"),
    ],
)
def test_enqueue_reaches_terminal_status_and_is_recorded(
    env: Env, ids, bad, le, message_status, status
) -> None:
    source = _put(env, "xslt/groups.csv", _unicode_csv(ids, bad))
    res = _run(env, source, _route(le))
    assert res["status"] == status and res["message_status"] == message_status, res
    assert res["message_id"] and res["seq"] == 1
    row = env.svc.outcomes.get(DAY, f"{DROP}~001")
    assert row["Kind"] == "enqueue" and row["Status"] == status and row["MessageStatus"] == message_status
    assert row["MessageId"] == res["message_id"] and row["SourceBlob"] == source
    enq_calls = env.emu.admin.calls("enqueue")
    assert len(enq_calls) == 1
    if status == "Succeeded":
        assert res["execution_id"] and not res["error_count"]
        assert {r["CUSTOMERGROUPID"] for r in env.emu.admin.data("USMF", "Customer groups")} >= set(ids)
    if status == "PartiallySucceeded":
        assert res["execution_id"] and res["error_count"] == 2 and res["error_summary"]
    if status == "Failed":
        assert "PreProcessingError" in res["error_summary"]


def test_external_identifier_and_company_are_sent(env: Env) -> None:
    source = _put(env, "xslt/sub/file one.csv", _unicode_csv(["X1"]))
    req = {"drop_id": DROP, "day": DAY, "route": _route("USRT"), "source": source}
    sent = enq.enqueue_source(env.svc, req)
    assert sent["state"] == "enqueued"
    msg = env.emu.app.recurring.inbound[sent["message_id"]]
    assert msg.external_id == "xslt/sub/file one.csv"
    assert msg.legal_entity == "USRT"


def test_enqueue_is_never_sent_twice(env: Env) -> None:
    source = _put(env, "xslt/once.csv", _unicode_csv(["O1"]))
    req = {"drop_id": DROP, "day": DAY, "route": _route(), "source": source}
    first = enq.enqueue_source(env.svc, req)
    assert enq.enqueue_source(env.svc, req) == first  # retried activity: the recorded message id
    assert len(env.emu.admin.calls("enqueue")) == 1


def test_ambiguous_enqueue_is_not_repeated(env: Env) -> None:
    source = _put(env, "xslt/ambiguous.csv", _unicode_csv(["A1"]))
    req = {"drop_id": DROP, "day": DAY, "route": _route(), "source": source}
    env.emu.admin.inject_fault("enqueue", "502", next_n=1)
    first = enq.enqueue_source(env.svc, req)
    assert first["state"] == "failed" and "not repeated" in first["error"]
    again = enq.enqueue_source(env.svc, req)
    assert again["state"] == "failed" and "external identifier 'xslt/ambiguous.csv'" in again["error"]
    assert [c["status"] for c in env.emu.admin.calls("enqueue")] == [502]


def test_throttled_enqueue_may_be_retried(env: Env) -> None:
    source = _put(env, "xslt/throttled.csv", _unicode_csv(["T1"]))
    req = {"drop_id": DROP, "day": DAY, "route": _route(), "source": source}
    env.emu.admin.inject_fault("enqueue", "429", next_n=5, retry_after=300)  # longer than the client waits
    assert enq.enqueue_source(env.svc, req)["state"] == "retry"
    env.emu.admin.clear_faults()
    assert enq.enqueue_source(env.svc, req)["state"] == "enqueued"


def test_on_premises_environment_fails_validation_clearly(make_env) -> None:
    env = make_env(FNO_MAIN_DEPLOYMENT="onprem")
    source = _put(env, "xslt/onprem.csv", _unicode_csv(["P1"]))
    res = enq.enqueue_source(env.svc, {"drop_id": DROP, "day": DAY, "route": _route(), "source": source})
    assert res["state"] == "failed"
    assert "on-premises" in res["error"] and "Recurring Integration API does not exist there" in res["error"]
    assert env.emu.admin.calls("enqueue") == []
    assert env.svc.outcomes.get(DAY, f"{DROP}~001")["Status"] == "Failed"


def test_a_token_failure_sends_nothing_and_may_be_retried(env: Env) -> None:
    """The token endpoint down: the file never left, so the step may be retried (not 'outcome unknown')."""
    source = _put(env, "xslt/no-token.csv", _unicode_csv(["N1"]))
    req = {"drop_id": DROP, "day": DAY, "route": _route(), "source": source}
    env.emu.admin.revoke_tokens()
    env.emu.admin.inject_fault("token", "drop", rate=1.0)
    from dmf.fno.clients import reset_clients

    reset_clients()  # no cached token: the next call must fetch one
    first = enq.enqueue_source(env.svc, req)
    assert first["state"] == "retry", first
    assert env.emu.admin.calls("enqueue") == []
    env.emu.admin.clear_faults()
    assert enq.enqueue_source(env.svc, req)["state"] == "enqueued"
    assert [c["status"] for c in env.emu.admin.calls("enqueue")] == [200]
