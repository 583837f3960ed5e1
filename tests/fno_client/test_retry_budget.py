"""The retry budget (docs/RETRIES.md) at the activity and HTTP layers, under a fault storm.

Each logical step runs through the app's own activity code against the F&O emulator while every call to one
endpoint fails, and must make exactly the calls the budget states: the number is derived from the code
(``RetryPolicy.attempts``, ``orchestrators/retries.py``) and the docs table must say the same. A layer that
repeats a call its caller also repeats (a stacked retry) shows up here as more calls. The orchestrator
loops on top are measured in ``tests/orchestrators/test_retry_budget.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from dmf.fno.clients import package_api, recurring_api
from dmf.fno.errors import FnoError, TransientFnoError
from dmf.fno.http import SENT_ONCE, RetryPolicy
from dmf.pipeline import imports, metadata, outbound_enqueue, outbound_exports
from dmf.routing import ResolvedRoute
from dmf.settings import ExportJob
from local.azurite import Azurite
from local.samples import customer_groups_csv, customer_groups_package
from tests.retry_budget import (
    DAY,
    DOC,
    EXPORT_ACTIVITY,
    HTTP,
    IMPORT_ACTIVITY,
    LOOPED,
    Storm,
    attempts,
    budget,
    code_budget,
    doc_budget,
    sent_once_endpoints,
    storm_env,
)

ENTITY = "Customer groups"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP layer's backoff sleeps are not what is measured: the count of calls is."""
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt: 0.0)


@pytest.fixture
def storm(azurite: Azurite, unique_name: str) -> Iterator[Storm]:
    with storm_env(azurite, unique_name) as s:
        yield s


# -- the table ----------------------------------------------------------------------------------------------


def test_the_docs_table_states_what_the_code_does() -> None:
    stated, derived = doc_budget(), code_budget()
    assert stated == derived
    # Every call the HTTP layer leaves to a caller's loop is in the table, and not as an HTTP-layer row.
    assert sent_once_endpoints() <= set(stated)
    rows = {
        cells[1].strip("`"): cells[2]
        for cells in (
            [c.strip() for c in line.strip("|").split("|")] for line in DOC.read_text().splitlines()
        )
        if len(cells) == 6
    }
    for endpoint in sent_once_endpoints():
        assert "HTTP layer" not in rows[endpoint], endpoint
    # One layer: what a loop repeats, the HTTP layer sends once (a stacked retry fails here first).
    assert {a: attempts(a) for a in LOOPED} == dict.fromkeys(LOOPED, 1)
    assert all(attempts(a) == 1 for a in SENT_ONCE)
    assert attempts("GetExecutionErrors") > 1  # the storms below would prove nothing otherwise
    # The HTTP layer's time bound as the table states it.
    assert f"{HTTP.worst_wait():.0f} s of waits" in DOC.read_text(encoding="utf-8")


# -- HTTP layer: safe calls made once per step -----------------------------------------------------------------


def _errors_req(execution_id: str, entities: list[str]) -> dict:
    return {
        "environment": "main",
        "execution_id": execution_id,
        "drop_id": "d1",
        "seq": 1,
        "entities": entities,
    }


def _imported(storm: Storm) -> str:
    """A finished import with target errors, through the app's own F&O client."""
    api = package_api(storm.svc.settings, "main")
    data = customer_groups_package(["A1"], bad_rows=1)
    url = api.upload_package("budget.zip", data, len(data))
    exec_id = api.import_from_package(
        url.blob_url, "CustomerGroups-Import", "budget-1", legal_entity_id="USMF"
    )
    for _ in range(60):
        if api.get_execution_summary_status(exec_id).value in ("Succeeded", "PartiallySucceeded", "Failed"):
            return exec_id
        storm.emu.admin.advance(5)
    raise AssertionError("import never finished")


def test_execution_errors(storm: Storm) -> None:
    storm.fail("GetExecutionErrors")
    res = imports.collect_errors(storm.svc, _errors_req("x-1", []))
    assert storm.calls("GetExecutionErrors") == budget("GetExecutionErrors")
    assert res["messages"] and "could not read execution errors" in res["messages"][0]


def test_summary_page_link(storm: Storm) -> None:
    storm.fail("GetExecutionSummaryPageUrl")
    res = imports.collect_errors(storm.svc, _errors_req("x-1", []))
    assert storm.calls("GetExecutionSummaryPageUrl") == budget("GetExecutionSummaryPageUrl")
    assert res["summary_page_url"] is None


def test_staging_error_file_url_per_entity(storm: Storm) -> None:
    exec_id = _imported(storm)
    storm.fail("GetImportStagingErrorFileUrl")
    res = imports.collect_errors(storm.svc, _errors_req(exec_id, [ENTITY, ENTITY]))
    assert storm.calls("GetImportStagingErrorFileUrl") == 2 * budget("GetImportStagingErrorFileUrl")
    assert sum("could not fetch error files" in m for m in res["messages"]) == 2


def test_generate_target_error_keys_per_entity(storm: Storm) -> None:
    exec_id = _imported(storm)
    storm.fail("GenerateImportTargetErrorKeysFile")
    res = imports.collect_errors(storm.svc, _errors_req(exec_id, [ENTITY]))
    assert storm.calls("GetImportStagingErrorFileUrl") == 1  # answered: no repeat
    assert storm.calls("GenerateImportTargetErrorKeysFile") == budget("GenerateImportTargetErrorKeysFile")
    assert res["pending_target_keys"] == []


def _enqueue_route() -> dict:
    return ResolvedRoute(
        route="xslt-groups", environment="main", mode="enqueue", kind="raw", data_project=None,
        legal_entity="USMF", entity=ENTITY, source_format="CSV-Unicode", execute=True, overwrite=True,
        allow_duplicate_content=False, activity_id=IMPORT_ACTIVITY,
    ).model_dump()  # fmt: skip


def _record_enqueue(storm: Storm) -> dict:
    now = datetime.now(UTC).isoformat()
    req = {"drop_id": "drop-b1", "day": DAY, "route": _enqueue_route(), "source": "inbound/x.csv",
           "message_id": "m-1", "message_status": "ProcessedWithErrors", "status": None, "reason": None,
           "polls": 1, "started_at": now, "finished_at": now}  # fmt: skip
    return outbound_enqueue.record_enqueue(storm.svc, req)


def test_execution_id_by_message_id(storm: Storm) -> None:
    storm.fail("GetExecutionIdByMessageId")
    res = _record_enqueue(storm)
    assert storm.calls("GetExecutionIdByMessageId") == budget("GetExecutionIdByMessageId")
    assert "could not read the execution id" in res["error_summary"]


def test_preflight_metadata(storm: Storm) -> None:
    storm.fail("metadata")
    with pytest.raises(FnoError):
        metadata.entity_for(storm.svc.settings, "main", ENTITY, storm.svc.catalogue)
    assert storm.calls("metadata") == budget("metadata")


def test_dequeue(storm: Storm) -> None:
    storm.fail("dequeue")
    with pytest.raises(TransientFnoError):
        recurring_api(storm.svc.settings, "main").dequeue(EXPORT_ACTIVITY)
    assert storm.calls("dequeue") == budget("dequeue")


def test_download_and_ack(storm: Storm) -> None:
    """The ack path counts as HTTP layer only (drain.py's own ack loop is being removed, docs/RETRIES.md)."""
    storm.emu.admin.seed_outbound(EXPORT_ACTIVITY, b"payload")
    api = recurring_api(storm.svc.settings, "main")
    msg = api.dequeue(EXPORT_ACTIVITY)
    assert msg is not None
    storm.fail("download")
    with pytest.raises(TransientFnoError), api.download(msg):
        pass
    assert storm.calls("download") == budget("download")
    storm.fail("ack")
    with pytest.raises(TransientFnoError):
        api.ack(EXPORT_ACTIVITY, msg)
    assert storm.calls("ack") == budget("ack")


# -- sent once: the caller's durable loop is the retry layer (one call per activity run) ---------------------


def test_status_checks(storm: Storm) -> None:
    """Status polls and checks: the HTTP layer (the poll schedule is not a retry layer)."""
    storm.fail("GetExecutionSummaryStatus")
    now = datetime.now(UTC).isoformat()
    chk = imports.check_import(
        storm.svc, {"environment": "main", "execution_id": "x-1", "ticket": "t", "now": now}
    )
    assert chk["status"] == "Unreachable"
    export = outbound_exports.check_export(storm.svc, {"environment": "main", "execution_id": "x-1"})
    assert export["status"] == "Unreachable"
    assert storm.calls("GetExecutionSummaryStatus") == 2 * budget("GetExecutionSummaryStatus")


def test_message_status(storm: Storm) -> None:
    storm.fail("GetMessageStatus")
    chk = outbound_enqueue.check_message(storm.svc, {"environment": "main", "message_id": "m-1"})
    assert chk == {"status": "Unreachable", "terminal": False, "error": chk["error"]}
    assert storm.calls("GetMessageStatus") == budget("GetMessageStatus")


def test_target_error_keys_file_url_is_one_call_per_try(storm: Storm) -> None:
    storm.fail("GetImportTargetErrorKeysFileUrl")
    req = _errors_req("x-1", [ENTITY, ENTITY])
    got = imports.fetch_target_error_keys(storm.svc, req)
    assert got == {"files": [], "pending": [ENTITY, ENTITY]}
    # One try per activity run; the orchestrator's loop makes TARGET_KEY_TRIES of them.
    assert storm.calls("GetImportTargetErrorKeysFileUrl") == 2 * attempts("GetImportTargetErrorKeysFileUrl")


def test_a_refused_target_keys_url_answers_refused_and_asks_no_further(storm: Storm) -> None:
    storm.fail("GetImportTargetErrorKeysFileUrl", "429", retry_after=30)
    got = imports.fetch_target_error_keys(storm.svc, _errors_req("x-1", [ENTITY, "Other entity"]))
    assert got == {"files": [], "pending": [ENTITY, "Other entity"], "refused": True, "retry_after": 30}
    assert storm.calls("GetImportTargetErrorKeysFileUrl") == 1  # the loop waits it out, then asks for both


def _export_req() -> dict:
    job = ExportJob.model_validate(
        {"name": "budget", "environment": "main", "data_project": "CustomerGroups-Export",
         "legal_entity": "USMF", "schedule": "0 0 2 * * *", "package_name": "{job}-{timestamp}"}
    )  # fmt: skip
    due = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
    run_id = outbound_exports.export_run_id(job.name, due)
    return {
        "job": job.model_dump(),
        "run_id": run_id,
        "day": DAY,
        "execution_id": outbound_exports.export_execution_id(job.data_project, run_id),
        "package_name": outbound_exports.package_name(job, due),
        "instance_id": outbound_exports.export_instance_id(job.name),
    }


def test_exported_package_url_is_one_call_per_try(storm: Storm) -> None:
    storm.fail("GetExportedPackageUrl")
    got = outbound_exports.fetch_export(storm.svc, _export_req())
    assert got["ready"] is False and got["error"] and got["permanent"] is False
    assert storm.calls("GetExportedPackageUrl") == attempts("GetExportedPackageUrl")


def test_a_refused_package_url_answers_refused_with_its_retry_after(storm: Storm) -> None:
    storm.fail("GetExportedPackageUrl", "429", retry_after=120)
    got = outbound_exports.fetch_export(storm.svc, _export_req())
    assert got["ready"] is False and got["refused"] is True and got["retry_after"] == 120
    assert storm.calls("GetExportedPackageUrl") == 1  # sent once: the fetch loop waits it out


def test_export_start_refused_is_one_call(storm: Storm) -> None:
    storm.fail("ExportToPackageAsync", "429", retry_after=300)
    st = outbound_exports.start_export(storm.svc, _export_req())
    assert st["state"] == "throttled" and st["retry_after"] == 300
    assert storm.calls("ExportToPackageAsync") == budget("ExportToPackageAsync")


def _import_req(storm: Storm) -> dict:
    """``start_import``'s input without ``now`` (no gate renewal: the gate is not what is measured here)."""
    staged = f"{storm.svc.settings.staging_container}/drop-b1/001.zip"
    data = customer_groups_package(["B1"])
    storm.svc.blob_at(staged).upload_blob(data, overwrite=True)
    route = {"environment": "main", "data_project": "CustomerGroups-Import", "legal_entity": "USMF"}
    return {"drop_id": "drop-b1", "day": DAY, "seq": 1, "staged": staged, "entities": [ENTITY], "rows": 1,
            "route": route, "instance_id": "drop-b1-p001", "execution_id": "CustomerGroups-Import-b1"}  # fmt: skip


def test_write_url_is_one_call_per_start(storm: Storm) -> None:
    req = _import_req(storm)
    storm.fail("GetAzureWriteUrl")
    st = imports.start_import(storm.svc, req)
    assert st["state"] == "retry"
    assert storm.calls("GetAzureWriteUrl") == attempts("GetAzureWriteUrl") == 1
    assert storm.calls("ImportFromPackageAsync") == 0


def test_a_refused_write_url_is_a_wait_not_a_failed_try(storm: Storm) -> None:
    """429 on GetAzureWriteUrl says "not done": waited out (``throttled``, bounded by the poll deadline), not
    one of ``MAX_START_RETRIES`` (the fault matrix's 429 storm lost a package after six refusals in a row)."""
    req = _import_req(storm)
    storm.fail("GetAzureWriteUrl", "429", retry_after=7)
    st = imports.start_import(storm.svc, req)
    assert st["state"] == "throttled" and st["retry_after"] == 7
    assert storm.calls("GetAzureWriteUrl") == 1
    assert storm.calls("ImportFromPackageAsync") == 0


@pytest.mark.parametrize(("kind", "state"), [("429", "throttled"), ("503", "ambiguous")])
def test_import_start_is_one_call(storm: Storm, kind: str, state: str) -> None:
    req = _import_req(storm)
    storm.fail("ImportFromPackageAsync", kind, **({"retry_after": 300} if kind == "429" else {}))
    st = imports.start_import(storm.svc, req)
    assert st["state"] == state
    assert storm.calls("ImportFromPackageAsync") == budget("ImportFromPackageAsync")
    # An ambiguous start asks F&O once whether it started; a refused one does not ask.
    assert storm.calls("GetExecutionSummaryStatus") == (1 if state == "ambiguous" else 0)


def _enqueue_req(storm: Storm) -> dict:
    source = f"{storm.svc.settings.inbound_container}x/xslt/budget.csv"
    container, _, name = source.partition("/")
    storm.svc.blob(container, name).upload_blob(
        b"\xff\xfe" + customer_groups_csv(["E1"], encoding="utf-16-le"), overwrite=True
    )
    return {"drop_id": "drop-e1", "day": DAY, "route": _enqueue_route(), "source": source}


@pytest.mark.parametrize(("kind", "state"), [("429", "retry"), ("503", "failed")])
def test_enqueue_is_one_call(storm: Storm, kind: str, state: str) -> None:
    req = _enqueue_req(storm)
    storm.fail("enqueue", kind)
    st = outbound_enqueue.enqueue_source(storm.svc, req)
    assert st["state"] == state  # 503 after the body left: outcome unknown, never sent again
    assert storm.calls("enqueue") == attempts("Enqueue", idempotent=False) == 1


# -- the token is part of the call -----------------------------------------------------------------------------


def test_token_storm_is_retried_by_azure_identity_only(storm: Storm) -> None:
    """No token: nothing reaches F&O, and the token endpoint sees azure-identity's attempts once per F&O call
    of the step (the HTTP layer never repeats a call that got no token). A dropped connection, since MSAL
    replays a 5xx answer from its cache without a request."""
    storm.fail("token", "drop")
    _record_enqueue(storm)  # one F&O call: GetExecutionIdByMessageId (fails, so no GetExecutionErrors)
    assert storm.calls("GetExecutionIdByMessageId") == 0
    assert storm.calls("token") == budget("token")
    now = datetime.now(UTC).isoformat()
    chk = imports.check_import(
        storm.svc, {"environment": "main", "execution_id": "x-1", "ticket": "t", "now": now}
    )
    assert chk["status"] == "Unreachable"
    assert storm.calls("token") == 2 * budget("token")
