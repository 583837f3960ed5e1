"""No client secret, bearer token or SAS signature reaches a log line (any library, DEBUG) or an exception."""

from __future__ import annotations

import json
import logging
import socket
import traceback

import pytest
from azure.storage.blob import BlobServiceClient
from pytest_httpserver import HTTPServer

from dmf.fno.clients import package_api
from dmf.fno.errors import FnoError
from dmf.fno.http import RetryPolicy
from dmf.settings import Settings
from local.azurite import Azurite

from .conftest import ACCESS_TOKEN, CLIENT_SECRET, serve_identity
from .test_upload import sas_url

ACTION = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
FAST = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02)
LOGGERS = ("", "urllib3", "urllib3.connectionpool", "azure", "azure.core", "azure.identity", "msal", "dmf")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failures_and_debug_logs_carry_no_secrets(
    fno: HTTPServer,
    make_settings,
    azurite: Azurite,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    serve_identity(fno)
    settings: Settings = make_settings()
    api = package_api(settings, "main", retry=FAST)
    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = svc.create_container(unique_name)
    good_sas = sas_url(container, "pkg.zip")
    readonly_sas = sas_url(container, "ro.zip", perm="r")
    dead_sas = f"https://127.0.0.1:{_closed_port()}/dmf/x.zip?sv=2020-01-01&sr=b&sig=DeadPortSig%3D"
    fno_sas = fno.url_for("/dmf/export.zip") + "?sv=2020-01-01&sr=b&sig=ExportSig-fake%2B%3D"
    secrets = [CLIENT_SECRET, ACCESS_TOKEN, "DeadPortSig", "ExportSig", "EchoedSig"]
    secrets += [u.split("sig=", 1)[1].split("&")[0] for u in (good_sas, readonly_sas)]

    # A hostile (or chatty) F&O echoing the request's token and a SAS URL in its error body.
    fno.expect_request(ACTION + "GetExecutionErrors").respond_with_json(
        {"error": {"message": "x", "innererror": {
            "message": f"Denied for Bearer {ACCESS_TOKEN} at https://a.blob/x?sv=1&sig=EchoedSig%3D"}}},
        status=500,
    )  # fmt: skip
    fno.expect_request("/dmf/export.zip").respond_with_data(b"PK-export")

    failures: list[FnoError] = []
    with pytest.raises(FnoError) as e1:
        api.get_execution_errors("E1")
    failures.append(e1.value)
    with pytest.raises(FnoError) as e2:
        api.upload_to_write_url(readonly_sas, b"x", 1)
    failures.append(e2.value)
    with pytest.raises(FnoError) as e3, api.open_url(dead_sas):
        pass
    failures.append(e3.value)
    api.upload_to_write_url(good_sas, b"PK-data", 7)  # success paths log URLs too
    with api.open_url(fno_sas) as stream:
        assert stream.read() == b"PK-export"
    # Token refused: the request carried the secret; the error must not.
    fno.clear()
    base = fno.url_for("").rstrip("/")
    from .conftest import TENANT

    fno.expect_request(f"/{TENANT}/v2.0/.well-known/openid-configuration").respond_with_json(
        {"issuer": f"{base}/{TENANT}/v2.0", "authorization_endpoint": f"{base}/{TENANT}/oauth2/authorize",
         "token_endpoint": f"{base}/{TENANT}/oauth2/v2.0/token"}
    )  # fmt: skip
    fno.expect_request(f"/{TENANT}/oauth2/v2.0/token").respond_with_json(
        {"error": "invalid_client", "error_description": f"AADSTS7000215: bad secret {CLIENT_SECRET}"},
        status=401,
    )
    from dmf.fno.clients import reset_clients

    reset_clients()
    with pytest.raises(FnoError) as e4:
        package_api(settings, "main", retry=FAST).get_execution_errors("E2")
    failures.append(e4.value)

    # Every record except the test server's own access log (werkzeug: the stand-in for F&O, not our code).
    ours = [r for r in caplog.records if not r.name.startswith("werkzeug")]
    texts = [caplog.handler.format(r) for r in ours]
    for rec in ours:
        texts.append(rec.getMessage())
        if rec.exc_info and rec.exc_info[1] is not None:
            texts.append("".join(traceback.format_exception(rec.exc_info[1])))
    for err in failures:
        texts += [str(err), repr(err), json.dumps(err.to_dict()), "".join(traceback.format_exception(err))]
    blob = "\n".join(texts)
    leaks = [s for s in secrets if s in blob]
    assert not leaks, f"secrets leaked: {leaks}"
    # The checks saw real traffic: urllib3 logged the SAS requests (scrubbed), and F&O's message survived.
    assert any(r.name.startswith("urllib3") and "sig=REDACTED" in r.getMessage() for r in ours)
    assert any(r.name.startswith("azure.identity") for r in ours)
    assert "Denied for Bearer REDACTED" in (failures[0].fno_message or "")
    assert failures[1].status == 403 and failures[2].transient
    svc.delete_container(unique_name)
