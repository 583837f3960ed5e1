"""Token acquisition for real through azure-identity against a loopback HTTPS identity provider."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dmf.fno.auth import authority_kwargs, bearer_token_provider, credential_for
from dmf.fno.clients import package_api
from dmf.fno.errors import FnoAuthError
from dmf.settings import Settings

from .conftest import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    Tls,
    _key,
    make_cert,
    pem,
    serve_identity,
)

SCOPE_SUFFIX = "/.default"


def _token(settings: Settings) -> str:
    env = settings.environment("main")
    cred = credential_for(env, ca_bundle=settings.fno_ca_bundle)
    return bearer_token_provider(cred, env.token_scope, env.name)()


def test_client_secret_cloud_token_on_tenant_v2_endpoint(fno: HTTPServer, make_settings) -> None:
    rec = serve_identity(fno)
    settings = make_settings()
    assert _token(settings) == ACCESS_TOKEN
    assert rec.token_paths == [f"/{TENANT}/oauth2/v2.0/token"]
    form = rec.token_requests[0]
    assert form["grant_type"] == "client_credentials"
    assert form["client_id"] == CLIENT_ID
    assert form["client_secret"] == CLIENT_SECRET
    assert form["scope"] == settings.environment("main").base_url + SCOPE_SUFFIX
    # MSAL read the tenant's discovery document first.
    paths = [r.path for r, _ in fno.log]
    assert f"/{TENANT}/v2.0/.well-known/openid-configuration" in paths
    # Built once per process: a second token comes from the credential's cache, no new request.
    assert _token(settings) == ACCESS_TOKEN
    assert len(rec.token_requests) == 1
    env = settings.environment("main")
    # One provider answers a burst of calls from threads with one cached token.
    provider = bearer_token_provider(credential_for(env, ca_bundle=settings.fno_ca_bundle), env.token_scope)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: provider(), range(32))) == {ACCESS_TOKEN}
    assert len(rec.token_requests) == 1
    assert credential_for(env, ca_bundle=settings.fno_ca_bundle) is credential_for(
        env, ca_bundle=settings.fno_ca_bundle
    )


def test_adfs_token_and_namespaced_api_root(fno: HTTPServer, make_settings) -> None:
    rec = serve_identity(fno)
    # The operator may give the AD FS URL with or without /adfs.
    settings = make_settings(
        FNO_MAIN_DEPLOYMENT="onprem", FNO_MAIN_TENANT_ID="", FNO_MAIN_AUTHORITY=fno.url_for("/adfs")
    )
    assert authority_kwargs(settings.environment("main"))[0] == "adfs"
    fno.expect_request(
        "/namespaces/AXSF/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
        "GetExecutionSummaryStatus",
        method="POST",
        headers={"Authorization": f"Bearer {ACCESS_TOKEN}"},
    ).respond_with_json({"value": "Executing"})
    assert package_api(settings, "main").get_execution_summary_status("x").value == "Executing"
    assert rec.token_paths == ["/adfs/oauth2/token"]
    assert rec.token_requests[0]["client_secret"] == CLIENT_SECRET
    # The next call reuses the cached AD FS token (azure-identity's cache): no second token request.
    assert package_api(settings, "main").get_execution_summary_status("y").value == "Executing"
    assert rec.token_paths == ["/adfs/oauth2/token"]
    # Instance discovery is off: nothing was asked of login.microsoftonline.com (it would have failed).


def test_ca_bundle_is_what_makes_the_private_authority_trusted(fno: HTTPServer, make_settings) -> None:
    serve_identity(fno)
    settings = make_settings(FNO_CA_BUNDLE="")
    with pytest.raises(FnoAuthError) as info:
        _token(settings)
    assert info.value.transient  # no answer from the endpoint: may pass later
    assert "certificate" in str(info.value).lower() or "ssl" in str(info.value).lower()


def test_refused_client_is_a_permanent_auth_error_without_the_secret(fno: HTTPServer, make_settings) -> None:
    base = fno.url_for("").rstrip("/")
    fno.expect_request(f"/{TENANT}/v2.0/.well-known/openid-configuration").respond_with_json(
        {
            "issuer": f"{base}/{TENANT}/v2.0",
            "authorization_endpoint": f"{base}/{TENANT}/oauth2/authorize",
            "token_endpoint": f"{base}/{TENANT}/oauth2/v2.0/token",
        }
    )
    fno.expect_request(f"/{TENANT}/oauth2/v2.0/token", method="POST").respond_with_json(
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "error_codes": [7000215],
        },
        status=401,
    )
    settings = make_settings()
    with pytest.raises(FnoAuthError) as info:
        _token(settings)
    assert not info.value.transient
    assert "AADSTS7000215" in str(info.value)
    assert CLIENT_SECRET not in str(info.value) and CLIENT_SECRET not in repr(info.value.to_dict())


def test_certificate_credential_sends_a_signed_assertion(fno: HTTPServer, make_settings, tls: Tls) -> None:
    rec = serve_identity(fno)
    key = _key()
    cert = make_cert("fno-client", key)
    cert_path = tls.dir / "client-cert.pem"
    cert_path.write_bytes(pem(key) + pem(cert))
    settings = make_settings(
        FNO_MAIN_AUTH_MODE="certificate", FNO_MAIN_CLIENT_SECRET="", FNO_MAIN_CERTIFICATE_PATH=str(cert_path)
    )
    assert _token(settings) == ACCESS_TOKEN
    form = rec.token_requests[0]
    assert "client_secret" not in form
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header_b64, claims_b64, sig_b64 = form["client_assertion"].split(".")
    header, claims = (json.loads(_b64(x)) for x in (header_b64, claims_b64))
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"].endswith(f"/{TENANT}/oauth2/v2.0/token")
    assert header["alg"] in ("RS256", "PS256")
    # The assertion is really signed by the certificate's key.
    pad = padding.PKCS1v15() if header["alg"] == "RS256" else padding.PSS(
        padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH
    )  # fmt: skip
    x509.load_pem_x509_certificate(pem(cert)).public_key().verify(
        _b64(sig_b64), f"{header_b64}.{claims_b64}".encode(), pad, hashes.SHA256()
    )


def _b64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@pytest.fixture
def msi(monkeypatch: pytest.MonkeyPatch) -> tuple[HTTPServer, list[dict[str, str]]]:
    """An App Service style managed-identity endpoint (plain http on loopback, as in Azure)."""
    seen: list[dict[str, str]] = []
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()

    def handler(request: Request) -> Response:
        seen.append({**request.args, "x-identity-header": request.headers.get("X-IDENTITY-HEADER", "")})
        body = {
            "access_token": f"mi-token-for-{request.args['resource']}",
            "expires_on": "9999999999",
            "resource": request.args["resource"],
            "token_type": "Bearer",
        }
        return Response(json.dumps(body), content_type="application/json")

    server.expect_request("/msi/token", method="GET").respond_with_handler(handler)
    monkeypatch.setenv("IDENTITY_ENDPOINT", server.url_for("/msi/token"))
    monkeypatch.setenv("IDENTITY_HEADER", "identity-header-value")
    monkeypatch.delenv("MSI_ENDPOINT", raising=False)
    monkeypatch.delenv("IMDS_ENDPOINT", raising=False)
    yield server, seen
    server.clear()
    server.stop()


def test_managed_identity_token_for_the_fno_scope(fno: HTTPServer, make_settings, msi) -> None:
    _, seen = msi
    settings = make_settings(
        FNO_MAIN_AUTH_MODE="managed_identity",
        FNO_MAIN_CLIENT_SECRET="",
        FNO_MAIN_CLIENT_ID="",
        FNO_MAIN_MANAGED_IDENTITY_CLIENT_ID="mi-client-id",
    )
    base = settings.environment("main").base_url
    assert _token(settings) == f"mi-token-for-{base}"
    assert seen[0]["resource"] == base
    assert seen[0]["client_id"] == "mi-client-id"
    assert seen[0]["x-identity-header"] == "identity-header-value"


def test_federated_exchanges_a_managed_identity_token_for_the_app(
    fno: HTTPServer, make_settings, msi
) -> None:
    _, seen = msi
    rec = serve_identity(fno)
    settings = make_settings(
        FNO_MAIN_AUTH_MODE="federated",
        FNO_MAIN_CLIENT_SECRET="",
        FNO_MAIN_MANAGED_IDENTITY_CLIENT_ID="mi-client-id",
    )
    assert _token(settings) == ACCESS_TOKEN
    assert seen[0]["resource"] == "api://AzureADTokenExchange"
    assert seen[0]["client_id"] == "mi-client-id"
    form = rec.token_requests[0]
    assert form["client_id"] == CLIENT_ID
    assert "client_secret" not in form
    assert form["client_assertion"] == "mi-token-for-api://AzureADTokenExchange"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_factory_shares_one_session_and_credential_per_environment(settings: Settings) -> None:
    from dmf.fno.clients import http_for, recurring_api

    a, b = package_api(settings, "main"), recurring_api(settings, "main")
    assert a.http is b.http is http_for(settings, "main")


def test_onprem_has_no_recurring_api(fno: HTTPServer, make_settings: Callable[..., Settings]) -> None:
    from dmf.fno.clients import recurring_api

    settings = make_settings(FNO_MAIN_DEPLOYMENT="onprem", FNO_MAIN_TENANT_ID="")
    with pytest.raises(ValueError, match="on-premises"):
        recurring_api(settings, "main")
