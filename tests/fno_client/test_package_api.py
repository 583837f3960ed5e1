"""Package API against a loopback HTTPS server serving the documented response shapes."""

from __future__ import annotations

import json
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dmf.fno.clients import package_api
from dmf.fno.errors import (
    ExecutionNotFound,
    FnoAuthError,
    PermanentFnoError,
    TransientFnoError,
)
from dmf.fno.http import RetryPolicy
from dmf.fno.models import ExecutionStatus, MessageStatus
from dmf.settings import Settings

from .conftest import ACCESS_TOKEN

ACTION = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
FAST = RetryPolicy(max_retries=4, backoff_base=0.01, backoff_max=0.05, max_retry_after=5)
EXEC_ID = "DP-Customers-2026-11-25_17-00-00-6a1f"
CTX = "https://fno.example/data/$metadata#Edm.String"
NOT_FOUND_BODY = {
    "error": {
        "code": "",
        "message": "An error has occurred.",
        "innererror": {
            "message": "Exception occurred while executing action GetExecutionSummaryStatus on Entity "
            "DataManagementDefinitionGroup: Execution details were not found for execution id: " + EXEC_ID,
            "type": "System.InvalidOperationException",
            "stacktrace": "",
        },
    }
}


def api(settings: Settings):
    return package_api(settings, "main", retry=FAST)


def calls(server: HTTPServer, action: str) -> list[Request]:
    return [r for r, _ in server.log if r.path == ACTION + action]


def expect(server: HTTPServer, action: str, **kw):
    return server.expect_request(
        ACTION + action, method="POST", headers={"Authorization": f"Bearer {ACCESS_TOKEN}"}, **kw
    )


def test_get_azure_write_url_parses_the_json_string_in_value(fno: HTTPServer, settings: Settings) -> None:
    blob_url = "https://acct.blob.core.windows.net/dmf/pkg.zip?sv=2014-02-14&sr=b&sig=AbC%2Bsecret%3D&st=x&se=y&sp=rw"
    inner = json.dumps({"BlobId": "{5f3b9a1c-0000-4d6f-9a57-7e4b1c2d3e4f}", "BlobUrl": blob_url})
    expect(fno, "GetAzureWriteUrl", json={"uniqueFileName": "pkg-1"}).respond_with_json(
        {"@odata.context": CTX, "value": inner}
    )
    url = api(settings).get_azure_write_url("pkg-1")
    assert url.blob_id == "{5f3b9a1c-0000-4d6f-9a57-7e4b1c2d3e4f}"
    assert url.blob_url == blob_url
    assert "AbC" not in repr(url) and "sig=REDACTED" in repr(url)  # never printable with its SAS


def test_import_from_package_sends_the_documented_body(fno: HTTPServer, settings: Settings) -> None:
    body = {
        "packageUrl": "https://acct.blob.core.windows.net/dmf/pkg.zip?sig=x",
        "definitionGroupId": "Customers import",
        "executionId": EXEC_ID,
        "execute": True,
        "overwrite": False,
        "legalEntityId": "USMF",
    }
    expect(fno, "ImportFromPackageAsync", json=body).respond_with_json(
        {"@odata.context": CTX, "value": EXEC_ID}
    )
    expect(fno, "ImportFromPackage", json=body).respond_with_json({"value": EXEC_ID})
    a = api(settings)
    kw = {"overwrite": False, "legal_entity_id": "USMF"}
    assert a.import_from_package(body["packageUrl"], "Customers import", EXEC_ID, **kw) == EXEC_ID
    assert (
        a.import_from_package(body["packageUrl"], "Customers import", EXEC_ID, use_async=False, **kw)
        == EXEC_ID
    )
    assert len(calls(fno, "ImportFromPackageAsync")) == len(calls(fno, "ImportFromPackage")) == 1


def test_500_on_import_from_package_is_not_retried(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "ImportFromPackageAsync").respond_with_json(
        {
            "error": {
                "code": "",
                "message": "An error has occurred.",
                "innererror": {"message": "Batch is busy"},
            }
        },
        status=500,
    )
    with pytest.raises(TransientFnoError) as info:
        api(settings).import_from_package("u", "g", EXEC_ID, legal_entity_id="USMF")
    assert len(calls(fno, "ImportFromPackageAsync")) == 1
    err = info.value
    assert err.status == 500 and err.transient and err.fno_message == "Batch is busy"
    assert err.action == "ImportFromPackageAsync"


def test_timeout_on_export_is_not_retried(fno: HTTPServer, make_settings) -> None:
    """An unanswered start call may still have started the job: it is never sent twice."""
    from .conftest import serve_identity

    serve_identity(fno)
    settings = make_settings(FNO_HTTP_TIMEOUT_SECONDS="0.3")

    seen: list[float] = []

    def slow(request: Request) -> Response:
        seen.append(time.monotonic())  # the server's log is written only after the answer
        time.sleep(0.8)
        return Response(json.dumps({"value": EXEC_ID}), content_type="application/json")

    expect(fno, "ExportToPackageAsync").respond_with_handler(slow)
    with pytest.raises(TransientFnoError, match="Timeout"):
        api(settings).export_to_package("Customers export", "pkg", EXEC_ID, legal_entity_id="USMF")
    time.sleep(0.3)  # let a (wrong) repeat arrive before counting
    assert len(seen) == 1


def test_export_to_package_nested_value(fno: HTTPServer, settings: Settings) -> None:
    body = {
        "definitionGroupId": "Customers export",
        "packageName": "cust.zip",
        "executionId": EXEC_ID,
        "reExecute": False,
        "legalEntityId": "USMF",
    }
    expect(fno, "ExportToPackageAsync", json=body).respond_with_json({"value": {"value": EXEC_ID}})
    assert (
        api(settings).export_to_package("Customers export", "cust.zip", EXEC_ID, legal_entity_id="USMF")
        == EXEC_ID
    )


def test_status_400_not_found_means_not_started(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "GetExecutionSummaryStatus", json={"executionId": EXEC_ID}).respond_with_json(
        NOT_FOUND_BODY, status=400
    )
    assert api(settings).get_execution_summary_status(EXEC_ID) is ExecutionStatus.NOT_FOUND
    assert len(calls(fno, "GetExecutionSummaryStatus")) == 1  # an answer, not a fault: no retries
    # Other calls for that execution raise the typed error.
    expect(fno, "GetExecutionErrors").respond_with_json(NOT_FOUND_BODY, status=400)
    with pytest.raises(ExecutionNotFound) as info:
        api(settings).get_execution_errors(EXEC_ID)
    assert EXEC_ID in info.value.fno_message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Succeeded", ExecutionStatus.SUCCEEDED),
        ("PartiallySucceeded", ExecutionStatus.PARTIALLY_SUCCEEDED),
        ("executing", ExecutionStatus.EXECUTING),
        ("NotRun", ExecutionStatus.NOT_RUN),
        ("Canceled", ExecutionStatus.CANCELED),
    ],
)
def test_status_values(fno: HTTPServer, settings: Settings, value: str, expected: ExecutionStatus) -> None:
    expect(fno, "GetExecutionSummaryStatus").respond_with_json({"@odata.context": CTX, "value": value})
    assert api(settings).get_execution_summary_status(EXEC_ID) is expected


def test_unknown_status_is_kept_not_fatal(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "GetExecutionSummaryStatus").respond_with_json({"value": "Quarantined"})
    status = api(settings).get_execution_summary_status(EXEC_ID)
    assert status == "Quarantined" and not status.recognised and not status.is_terminal


def test_500_storm_on_status_is_retried_until_it_clears(fno: HTTPServer, settings: Settings) -> None:
    n = {"calls": 0}

    def storm(request: Request) -> Response:
        n["calls"] += 1
        if n["calls"] <= 3:
            return Response('{"error":{"message":"Service busy"}}', status=(500, 502, 503)[n["calls"] - 1])
        return Response(json.dumps({"value": "Succeeded"}), content_type="application/json")

    expect(fno, "GetExecutionSummaryStatus").respond_with_handler(storm)
    assert api(settings).get_execution_summary_status(EXEC_ID) is ExecutionStatus.SUCCEEDED
    assert n["calls"] == 4


def test_500_storm_longer_than_the_budget_raises_transient(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "GetExecutionSummaryStatus").respond_with_json(
        {"error": {"message": "An error has occurred.", "innererror": {"message": "SQL timeout"}}}, status=500
    )
    with pytest.raises(TransientFnoError) as info:
        api(settings).get_execution_summary_status(EXEC_ID)
    assert len(calls(fno, "GetExecutionSummaryStatus")) == FAST.max_retries + 1
    assert info.value.fno_message == "SQL timeout" and info.value.status == 500


def test_a_call_its_loop_retries_is_sent_once(fno: HTTPServer, settings: Settings) -> None:
    """GetExportedPackageUrl: the fetch loop counts a failure as a try, so one layer (docs/RETRIES.md)."""
    expect(fno, "GetExportedPackageUrl").respond_with_data("", status=503)
    with pytest.raises(TransientFnoError) as info:
        api(settings).get_exported_package_url(EXEC_ID)
    assert info.value.status == 503 and len(calls(fno, "GetExportedPackageUrl")) == 1


def test_429_waits_for_retry_after_then_succeeds(fno: HTTPServer, settings: Settings) -> None:
    arrivals: list[float] = []

    def throttled(request: Request) -> Response:
        arrivals.append(time.monotonic())
        return Response("Too many requests", status=429, headers={"Retry-After": "1"})

    def ok(request: Request) -> Response:
        arrivals.append(time.monotonic())
        return Response(json.dumps({"value": "Executing"}), content_type="application/json")

    fno.expect_oneshot_request(ACTION + "GetExecutionSummaryStatus").respond_with_handler(throttled)
    expect(fno, "GetExecutionSummaryStatus").respond_with_handler(ok)
    assert api(settings).get_execution_summary_status(EXEC_ID) is ExecutionStatus.EXECUTING
    assert len(arrivals) == 2
    # The server-side gap shows the hint was honoured (FAST backoff alone would be < 0.05 s).
    assert arrivals[1] - arrivals[0] >= 0.95


@pytest.mark.parametrize("status", [429, 503])
def test_a_refused_import_is_sent_once_and_handed_back_with_retry_after(
    fno: HTTPServer, settings: Settings, status: int
) -> None:
    """429 / 503 with Retry-After: "not done". One retry layer for starts: the orchestrator's timer."""
    fno.expect_oneshot_request(ACTION + "ImportFromPackageAsync").respond_with_data(
        "", status=status, headers={"Retry-After": "1"}
    )
    expect(fno, "ImportFromPackageAsync").respond_with_json({"value": EXEC_ID})
    with pytest.raises(TransientFnoError) as info:
        api(settings).import_from_package("u", "g", EXEC_ID, legal_entity_id="USMF")
    assert info.value.refused and info.value.retry_after == 1 and info.value.status == status
    assert len(calls(fno, "ImportFromPackageAsync")) == 1
    # The caller's next attempt goes through.
    assert api(settings).import_from_package("u", "g", EXEC_ID, legal_entity_id="USMF") == EXEC_ID


def test_a_503_without_retry_after_on_import_is_ambiguous_not_refused(
    fno: HTTPServer, settings: Settings
) -> None:
    expect(fno, "ImportFromPackageAsync").respond_with_data("", status=503)
    with pytest.raises(TransientFnoError) as info:
        api(settings).import_from_package("u", "g", EXEC_ID, legal_entity_id="USMF")
    assert not info.value.refused
    assert len(calls(fno, "ImportFromPackageAsync")) == 1


def test_long_retry_after_is_handed_to_the_caller(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "GetExecutionSummaryStatus").respond_with_data("", status=429, headers={"Retry-After": "300"})
    with pytest.raises(TransientFnoError) as info:
        api(settings).get_execution_summary_status(EXEC_ID)
    assert info.value.retry_after == 300
    assert len(calls(fno, "GetExecutionSummaryStatus")) == 1


def test_exported_package_url_empty_then_ready(fno: HTTPServer, settings: Settings) -> None:
    fno.expect_oneshot_request(ACTION + "GetExportedPackageUrl").respond_with_json({"value": ""})
    url = "https://acct.blob.core.windows.net/dmf/export.zip?sv=1&sig=s3cret"
    expect(fno, "GetExportedPackageUrl", json={"executionId": EXEC_ID}).respond_with_json(
        {"value": {"value": url}}
    )
    a = api(settings)
    assert a.get_exported_package_url(EXEC_ID) is None
    assert a.get_exported_package_url(EXEC_ID) == url


def test_execution_errors_parsed_from_the_json_string(fno: HTTPServer, settings: Settings) -> None:
    rows = [
        {"RecordId": "479625", "Field": "", "ErrorMessage": "Validations failed while writing entity record"},
        {"RecordId": "479626", "Field": "CUSTGROUP", "ErrorMessage": "Group 99 does not exist"},
    ]
    fno.expect_oneshot_request(ACTION + "GetExecutionErrors").respond_with_json({"value": json.dumps(rows)})
    fno.expect_oneshot_request(ACTION + "GetExecutionErrors").respond_with_json({"value": "[]"})
    a = api(settings)
    errors = a.get_execution_errors(EXEC_ID)
    assert [(e.record_id, e.field, e.error_message) for e in errors] == [
        ("479625", "", "Validations failed while writing entity record"),
        ("479626", "CUSTGROUP", "Group 99 does not exist"),
    ]
    assert a.get_execution_errors(EXEC_ID) == []


def test_error_file_actions(fno: HTTPServer, settings: Settings) -> None:
    payload = {"executionId": EXEC_ID, "entityName": "Customer groups"}
    expect(fno, "GenerateImportTargetErrorKeysFile", json=payload).respond_with_json(
        {"@odata.context": "https://x/data/$metadata#Edm.Boolean", "value": True}
    )
    fno.expect_oneshot_request(ACTION + "GetImportTargetErrorKeysFileUrl", json=payload).respond_with_json(
        {"value": ""}
    )
    expect(fno, "GetImportTargetErrorKeysFileUrl", json=payload).respond_with_json(
        {"value": "https://b/keys.csv?sig=k"}
    )
    expect(fno, "GetImportStagingErrorFileUrl", json=payload).respond_with_json(
        {"value": "https://b/stg.csv?sig=s"}
    )
    a = api(settings)
    assert a.generate_import_target_error_keys_file(EXEC_ID, "Customer groups") is True
    assert a.get_import_target_error_keys_file_url(EXEC_ID, "Customer groups") is None
    assert a.get_import_target_error_keys_file_url(EXEC_ID, "Customer groups") == "https://b/keys.csv?sig=k"
    assert a.get_import_staging_error_file_url(EXEC_ID, "Customer groups") == "https://b/stg.csv?sig=s"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Processed", MessageStatus.PROCESSED),
        ("PostProcessingFailed", MessageStatus.POSTPROCESSING_FAILED),
        ("PostProcessingError", MessageStatus.POSTPROCESSING_FAILED),  # RIS spelling
        ("PreProcessing", MessageStatus.PREPROCESSING),
        ("Preprocessing", MessageStatus.PREPROCESSING),
        ("ProcessedWithErrors", MessageStatus.PROCESSED_WITH_ERRORS),
    ],
)
def test_message_status_both_spellings(fno: HTTPServer, settings: Settings, value: str, expected) -> None:
    expect(fno, "GetMessageStatus", json={"messageId": "m-1"}).respond_with_json({"value": value})
    assert api(settings).get_message_status("m-1") is expected


def test_message_status_unknown_value_is_kept(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "GetMessageStatus").respond_with_json({"value": "Archived"})
    status = api(settings).get_message_status("m-1")
    assert status == "Archived" and not status.recognised and not status.is_terminal


def test_execution_id_by_message_id(fno: HTTPServer, settings: Settings) -> None:
    fno.expect_oneshot_request(
        ACTION + "GetExecutionIdByMessageId", json={"_messageId": "m-1"}
    ).respond_with_json({"value": "00000000-0000-0000-0000-000000000000"})
    expect(fno, "GetExecutionIdByMessageId", json={"_messageId": "m-1"}).respond_with_json({"value": EXEC_ID})
    a = api(settings)
    assert a.get_execution_id_by_message_id("m-1") is None
    assert a.get_execution_id_by_message_id("m-1") == EXEC_ID


def test_execution_summary_page_url(fno: HTTPServer, settings: Settings) -> None:
    page = "https://fno.example/?mi=DMFExecutionSummary&executionId=" + EXEC_ID
    expect(fno, "GetExecutionSummaryPageUrl", json={"executionId": EXEC_ID}).respond_with_json(
        {"value": page}
    )
    assert api(settings).get_execution_summary_page_url(EXEC_ID) == page


def test_401_is_an_auth_error(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "GetExecutionSummaryStatus").respond_with_data("", status=401)
    with pytest.raises(FnoAuthError) as info:
        api(settings).get_execution_summary_status(EXEC_ID)
    assert info.value.status == 401 and not info.value.transient
    assert len(calls(fno, "GetExecutionSummaryStatus")) == 1


def test_other_400_is_permanent_with_fno_message(fno: HTTPServer, settings: Settings) -> None:
    msg = "Entity Customer groupz does not exist in the target environment"
    expect(fno, "ImportFromPackageAsync").respond_with_json(
        {"error": {"code": "", "message": "An error has occurred.", "innererror": {"message": msg}}},
        status=400,
    )
    with pytest.raises(PermanentFnoError) as info:
        api(settings).import_from_package("u", "g", EXEC_ID, legal_entity_id="USMF")
    assert info.value.fno_message == msg and msg in str(info.value)
    assert not isinstance(info.value, ExecutionNotFound)


def test_sign_in_redirect_and_html_are_permanent(fno: HTTPServer, settings: Settings) -> None:
    expect(fno, "GetExecutionSummaryStatus").respond_with_data(
        "", status=302, headers={"Location": "https://login.microsoftonline.com/x"}
    )
    expect(fno, "GetExecutionErrors").respond_with_data("<html>Sign in</html>", content_type="text/html")
    a = api(settings)
    with pytest.raises(PermanentFnoError, match="redirect"):
        a.get_execution_summary_status(EXEC_ID)
    with pytest.raises(PermanentFnoError, match="not JSON"):
        a.get_execution_errors(EXEC_ID)


def test_every_call_has_a_timeout(fno: HTTPServer, make_settings) -> None:
    from .conftest import serve_identity

    serve_identity(fno)
    settings = make_settings(FNO_HTTP_TIMEOUT_SECONDS="0.3")

    seen: list[float] = []

    def slow(request: Request) -> Response:
        seen.append(time.monotonic())
        time.sleep(1.0)
        return Response(json.dumps({"value": "Succeeded"}), content_type="application/json")

    expect(fno, "GetExecutionSummaryStatus").respond_with_handler(slow)
    a = package_api(settings, "main", retry=RetryPolicy(max_retries=1, backoff_base=0.01))
    with pytest.raises(TransientFnoError, match="Timeout"):
        a.get_execution_summary_status(EXEC_ID)
    assert len(seen) == 2  # a read timeout on a safe call is repeated


def test_one_session_serves_concurrent_callers(fno: HTTPServer, settings: Settings) -> None:
    """Activities run on worker threads: one shared session and credential must serve them all."""
    from concurrent.futures import ThreadPoolExecutor

    def echo(request: Request) -> Response:
        return Response(
            json.dumps({"value": (request.json["executionId"][-1] == "0" and "Succeeded") or "Executing"})
        )

    expect(fno, "GetExecutionSummaryStatus").respond_with_handler(echo)
    a = api(settings)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: a.get_execution_summary_status(f"E{i}"), range(40)))
    assert results.count(ExecutionStatus.SUCCEEDED) == 4 and results.count(ExecutionStatus.EXECUTING) == 36
    token_calls = [r for r, _ in fno.log if r.path.endswith("/oauth2/v2.0/token")]
    assert len(token_calls) == 1  # the credential's cache is shared too
