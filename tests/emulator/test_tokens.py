"""Token endpoints, discovery documents and bearer checks, with azure-identity (MSAL) unchanged."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential

from local.fno_emulator import Emulator, EmulatorConfig

from .conftest import ACTIONS, Client


def credential(emu: Emulator, tenant: str | None = None, secret: str | None = None) -> ClientSecretCredential:
    return ClientSecretCredential(
        tenant or emu.tenant,
        emu.client_id,
        secret or emu.client_secret,
        authority=emu.authority,
        # The authority is not a Microsoft host: MSAL would otherwise ask login.microsoftonline.com.
        disable_instance_discovery=True,
        connection_verify=emu.ca_bundle_path,
    )


def test_azure_identity_gets_a_token_that_the_api_accepts(emu: Emulator) -> None:
    token = credential(emu).get_token(f"{emu.base_url}/.default")
    assert token.token.count(".") == 2
    r = requests.post(
        emu.api_base_url + ACTIONS + "GetAzureWriteUrl",
        json={"uniqueFileName": "a.zip"},
        headers={"Authorization": f"Bearer {token.token}"},
        verify=emu.ca_bundle_path,
        timeout=10,
    )
    assert r.status_code == 200
    paths = [c["path"] for c in emu.admin.calls()]
    assert f"/{emu.tenant}/v2.0/.well-known/openid-configuration" in paths
    assert f"/{emu.tenant}/oauth2/v2.0/token" in paths


def test_discovery_documents(emu: Emulator) -> None:
    v2 = requests.get(
        f"{emu.base_url}/{emu.tenant}/v2.0/.well-known/openid-configuration",
        verify=emu.ca_bundle_path,
        timeout=10,
    ).json()
    assert v2["token_endpoint"] == f"{emu.base_url}/{emu.tenant}/oauth2/v2.0/token"
    assert v2["issuer"] == f"{emu.base_url}/{emu.tenant}/v2.0"
    assert "authorization_endpoint" in v2
    adfs = requests.get(f"{emu.base_url}/adfs/.well-known/openid-configuration", verify=emu.ca_bundle_path,
                        timeout=10).json()  # fmt: skip
    assert adfs["token_endpoint"].startswith(f"{emu.base_url}/adfs/oauth2/token")


def test_wrong_secret_unknown_client_and_tenant(emu: Emulator) -> None:
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential(emu, secret="wrong").get_token(f"{emu.base_url}/.default")
    with pytest.raises(ClientAuthenticationError, match="AADSTS90002"):
        credential(emu, tenant="other-tenant").get_token(f"{emu.base_url}/.default")
    r = requests.post(f"{emu.base_url}/{emu.tenant}/oauth2/v2.0/token", verify=emu.ca_bundle_path, timeout=10,
                      data={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x",
                            "scope": f"{emu.base_url}/.default"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    assert r.json()["error_codes"] == [700016]


def test_api_refuses_missing_bad_foreign_and_revoked_tokens(emu: Emulator) -> None:
    client = Client(emu)
    url = emu.api_base_url + ACTIONS + "GetExecutionSummaryStatus"

    def call(headers: dict[str, str]) -> requests.Response:
        return requests.post(
            url, json={"executionId": "x"}, headers=headers, verify=emu.ca_bundle_path, timeout=10
        )

    assert call({}).status_code == 401
    assert call({"Authorization": "Bearer not-a-jwt"}).status_code == 401
    forged = client.token[:-4] + ("AAAA" if not client.token.endswith("AAAA") else "BBBB")
    assert call({"Authorization": f"Bearer {forged}"}).status_code == 401
    # A token for another resource (audience) is refused.
    r = requests.post(f"{emu.base_url}/{emu.tenant}/oauth2/v2.0/token", verify=emu.ca_bundle_path, timeout=10,
                      data={"grant_type": "client_credentials", "client_id": emu.client_id,
                            "client_secret": emu.client_secret, "scope": "https://other.example/.default"})  # fmt: skip
    other = r.json()["access_token"]
    refused = call({"Authorization": f"Bearer {other}"})
    assert refused.status_code == 401 and "audience" in refused.headers["WWW-Authenticate"]
    assert call(client.auth).status_code == 400  # authenticated: the execution simply does not exist
    emu.admin.revoke_tokens()
    assert call(client.auth).status_code == 401
    client.token = client.fetch_token()
    assert call(client.auth).status_code == 400


def test_on_premises_adfs_and_base_path(make_emulator) -> None:
    emu = make_emulator(EmulatorConfig(deployment="onprem"))
    assert emu.api_base_url == emu.base_url + "/namespaces/AXSF"
    cred = credential(emu, tenant="adfs")
    token = cred.get_token(f"{emu.base_url}/.default").token
    assert any(c["path"].startswith("/adfs/oauth2/token") and c["status"] == 200 for c in emu.admin.calls())
    headers = {"Authorization": f"Bearer {token}"}
    body = {"uniqueFileName": "a.zip"}
    ok = requests.post(emu.api_base_url + ACTIONS + "GetAzureWriteUrl", json=body, headers=headers,
                       verify=emu.ca_bundle_path, timeout=10)  # fmt: skip
    assert ok.status_code == 200
    assert ok.json()["@odata.context"].startswith(emu.base_url + "/namespaces/AXSF/data/$metadata")
    wrong = requests.post(emu.base_url + ACTIONS + "GetAzureWriteUrl", json=body, headers=headers,
                          verify=emu.ca_bundle_path, timeout=10)  # fmt: skip
    assert wrong.status_code == 404
    # The Recurring Integration API is not available on-premises.
    deq = requests.get(f"{emu.api_base_url}/api/connector/dequeue/%7B6D31E09F-0249-459F-94F0-AAD9C2C47B64%7D",
                       headers=headers, verify=emu.ca_bundle_path, timeout=10)  # fmt: skip
    assert deq.status_code == 404


def test_server_certificate_is_for_127_0_0_1_and_needs_the_ca(emu: Emulator) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{emu.base_url}/adfs/.well-known/openid-configuration", verify=True, timeout=10)
