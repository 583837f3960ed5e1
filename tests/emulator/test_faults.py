"""Fault injection: each kind, by admin call, by configuration and over HTTP, and a real retrying client."""

from __future__ import annotations

import time

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from local.fno_emulator import EmulatorConfig
from local.fno_emulator.config import FaultRule

from .conftest import ACTIONS, Client
from .packages import customer_groups_package


def status_call(client: Client) -> requests.Response:
    return client.action("GetExecutionSummaryStatus", {"executionId": "x"})


def test_429_with_retry_after_on_the_next_n_calls(client: Client) -> None:
    client.emu.admin.inject_fault("GetExecutionSummaryStatus", "429", next_n=2, retry_after=7)
    for _ in range(2):
        r = status_call(client)
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json()["error"]["message"]
    assert status_call(client).status_code == 400  # back to normal: unknown execution
    assert (
        client.action("GetAzureWriteUrl", {"uniqueFileName": "a"}).status_code == 200
    )  # other endpoints untouched
    faults = [c["fault"] for c in client.emu.admin.calls("GetExecutionSummaryStatus")]
    assert faults == ["429", "429", None]


def test_a_short_call_log_still_counts_every_call_and_fault(make_emulator) -> None:
    client = Client(make_emulator(EmulatorConfig(call_log_size=2)))
    client.emu.admin.inject_fault("GetExecutionSummaryStatus", "429", next_n=2, retry_after=1)
    codes = [status_call(client).status_code for _ in range(3)]
    assert codes == [429, 429, 400]
    assert [c["fault"] for c in client.emu.admin.calls()] == ["429", None]  # the last two only
    total, faults = client.emu.admin.call_counts()
    assert total >= 3 and faults == {"429": 2}  # (a token call may come first)
    client.emu.admin.reset()
    assert client.emu.admin.call_counts() == (0, {})


@pytest.mark.parametrize("code", [500, 502, 503])
def test_server_errors_have_odata_bodies(client: Client, code: int) -> None:
    client.emu.admin.inject_fault("*", str(code), next_n=1)
    r = status_call(client)
    assert r.status_code == code
    assert r.json()["error"]["message"] == "An error has occurred."
    assert status_call(client).status_code == 400


def test_slow_response(client: Client) -> None:
    client.emu.admin.inject_fault("GetExecutionSummaryStatus", "slow", next_n=1, delay_seconds=0.6)
    started = time.perf_counter()
    r = status_call(client)
    assert time.perf_counter() - started >= 0.6
    assert r.status_code == 400  # a slow answer is still the real answer
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.emu.admin.inject_fault("GetExecutionSummaryStatus", "slow", next_n=1, delay_seconds=1.0)
        client.action("GetExecutionSummaryStatus", {"executionId": "x"}, timeout=0.3)


def test_dropped_connection(client: Client) -> None:
    client.emu.admin.inject_fault("ImportFromPackage", "drop", next_n=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.action(
            "ImportFromPackage", {"packageUrl": "x", "definitionGroupId": "p", "legalEntityId": "USMF"}
        )
    assert status_call(client).status_code == 400  # the server carries on
    assert client.emu.admin.calls("ImportFromPackage")[-1]["fault"] == "drop"


def test_token_endpoint_faults_and_rate(make_emulator) -> None:
    cfg = EmulatorConfig(faults=[FaultRule(endpoint="token", kind="503", rate=1.0)], fault_seed=1)
    emu = make_emulator(cfg)
    with pytest.raises(requests.HTTPError):
        Client(emu)
    emu.admin.clear_faults()
    Client(emu)  # works again
    emu.admin.inject_fault("dequeue", "500", rate=0.5)
    client = Client(emu)
    url = f"{emu.api_base_url}/api/connector/dequeue/%7B6D31E09F-0249-459F-94F0-AAD9C2C47B64%7D"
    codes = [client.get(url).status_code for _ in range(40)]
    assert 8 <= codes.count(500) <= 32 and codes.count(204) == 40 - codes.count(500)


def test_retrying_client_gets_through(client: Client) -> None:
    """urllib3 Retry honouring Retry-After really exercises the 429 / 503 path."""
    client.emu.admin.inject_fault("GetAzureWriteUrl", "429", next_n=1, retry_after=1)
    client.emu.admin.inject_fault("GetAzureWriteUrl", "503", next_n=1)
    session = requests.Session()
    retry = Retry(total=4, backoff_factor=0.1, status_forcelist=[429, 503], allowed_methods=None,
                  respect_retry_after_header=True)  # fmt: skip
    session.mount("https://", HTTPAdapter(max_retries=retry))
    started = time.perf_counter()
    r = session.post(client.emu.api_base_url + ACTIONS + "GetAzureWriteUrl", json={"uniqueFileName": "r"},
                     headers=client.auth, verify=client.emu.ca_bundle_path, timeout=10)  # fmt: skip
    assert r.status_code == 200
    assert time.perf_counter() - started >= 1.0  # waited as told
    assert [c["status"] for c in client.emu.admin.calls("GetAzureWriteUrl")] == [429, 503, 200]


def test_faults_over_the_admin_http_api(client: Client) -> None:
    admin = f"{client.emu.base_url}/_emulator"
    r = client.post(f"{admin}/faults", auth=False, json={"endpoint": "GetExecutionSummaryStatus", "kind": "502",
                                                        "next_n": 1})  # fmt: skip
    assert r.status_code == 200
    assert status_call(client).status_code == 502
    client.post(f"{admin}/faults", auth=False, json={"endpoint": "*", "kind": "500", "rate": 1.0})
    assert status_call(client).status_code == 500
    assert (
        client.http.delete(f"{admin}/faults", verify=client.emu.ca_bundle_path, timeout=5).status_code == 200
    )
    assert status_call(client).status_code == 400


def test_503_carries_retry_after_only_when_set(client: Client) -> None:
    client.emu.admin.inject_fault("GetExecutionSummaryStatus", "503", next_n=1)
    assert "Retry-After" not in status_call(client).headers
    client.emu.admin.inject_fault("GetExecutionSummaryStatus", "503", next_n=1, retry_after=3)
    r = status_call(client)
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    client.emu.admin.inject_fault("GetExecutionSummaryStatus", "429", next_n=1)
    assert status_call(client).headers["Retry-After"] == "1"  # a 429 always says when


def _imports(client: Client) -> list[dict]:
    return [e for e in client.emu.admin.executions() if e["kind"] == "import"]


@pytest.mark.parametrize("kind", ["after_500", "after_502", "after_503"])
def test_after_handler_5xx_keeps_the_import_and_loses_the_answer(client: Client, kind: str) -> None:
    url = client.upload_package(customer_groups_package([["10", "Wholesale", ""]]))
    client.emu.admin.inject_fault("ImportFromPackage", kind, next_n=1)
    body = {"packageUrl": url, "definitionGroupId": "CustomerGroups-Import", "executionId": "lost-1",
            "execute": True, "overwrite": True, "legalEntityId": "USMF"}  # fmt: skip
    r = client.action("ImportFromPackage", body)
    assert r.status_code == int(kind[-3:])
    assert "lost-1" not in r.text and r.json()["error"]["message"] == "An error has occurred."
    # ...but F&O started it: the execution exists and runs to the end.
    assert [e["executionId"] for e in _imports(client)] == ["lost-1"]
    client.emu.admin.advance(60)
    assert client.status("lost-1") == "Succeeded"
    assert client.emu.admin.calls("ImportFromPackage")[-1]["fault"] == kind
    # Calling again with the same id is refused: it exists.
    assert client.action("ImportFromPackage", body).status_code == 400
    assert len(_imports(client)) == 1


def test_after_handler_drop_and_hang(client: Client) -> None:
    url = client.upload_package(customer_groups_package([["10", "Wholesale", ""]]))
    body = {"packageUrl": url, "definitionGroupId": "CustomerGroups-Import", "executionId": "reset-1",
            "execute": True, "overwrite": True, "legalEntityId": "USMF"}  # fmt: skip
    client.emu.admin.inject_fault("ImportFromPackage", "after_drop", next_n=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.action("ImportFromPackage", body)
    assert [e["executionId"] for e in _imports(client)] == ["reset-1"]
    client.emu.admin.advance(60)  # one import at a time

    client.emu.admin.inject_fault("ImportFromPackage", "after_hang", next_n=1, delay_seconds=1.0)
    started = time.perf_counter()
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.action("ImportFromPackage", body | {"executionId": "hang-1"}, timeout=0.3)
    assert time.perf_counter() - started < 0.9  # the client gave up; the server still works on it
    deadline = time.monotonic() + 10
    while len(client.emu.admin.calls("ImportFromPackage")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # logged once the hang ends
    assert {e["executionId"] for e in _imports(client)} == {"reset-1", "hang-1"}
    assert client.emu.admin.calls("ImportFromPackage")[-1]["fault"] == "after_hang"
    assert status_call(client).status_code == 400  # the server carries on


def test_after_handler_fault_on_ack_acks_the_message(client: Client) -> None:
    export_id = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"
    client.emu.admin.seed_outbound(export_id, b"payload")
    base = f"{client.emu.api_base_url}/api/connector"
    from urllib.parse import quote

    msg = client.get(f"{base}/dequeue/{quote(export_id)}")
    assert msg.status_code == 200
    client.emu.admin.inject_fault("ack", "after_503", next_n=1, retry_after=2)
    r = client.post(f"{base}/ack/{quote(export_id)}", data=msg.content,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert [m["status"] for m in client.emu.admin.outbound()] == ["Acked"]
    # Acknowledging again (the client's retry) is accepted.
    r = client.post(f"{base}/ack/{quote(export_id)}", data=msg.content,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200


def test_after_handler_faults_from_config_and_over_http(make_emulator) -> None:
    cfg = EmulatorConfig(faults=[FaultRule(endpoint="GetAzureWriteUrl", kind="after_500", next_n=1)])
    emu = make_emulator(cfg)
    client = Client(emu)
    assert client.action("GetAzureWriteUrl", {"uniqueFileName": "a"}).status_code == 500
    assert client.action("GetAzureWriteUrl", {"uniqueFileName": "a"}).status_code == 200
    r = client.post(f"{emu.base_url}/_emulator/faults", auth=False,
                    json={"endpoint": "GetAzureWriteUrl", "kind": "after_502", "next_n": 1})  # fmt: skip
    assert r.status_code == 200
    assert client.action("GetAzureWriteUrl", {"uniqueFileName": "b"}).status_code == 502
    assert [c["fault"] for c in emu.admin.calls("GetAzureWriteUrl")] == ["after_500", None, "after_502"]
    with pytest.raises(ValueError):
        FaultRule(endpoint="*", kind="after_404", next_n=1)  # type: ignore[arg-type]


def test_sas_expired_hands_out_a_write_url_that_no_longer_works(client: Client) -> None:
    import json

    client.emu.admin.inject_fault("GetAzureWriteUrl", "sas_expired", next_n=1, delay_seconds=0)
    url = json.loads(client.value("GetAzureWriteUrl", {"uniqueFileName": "expired.zip"}))["BlobUrl"]
    r = requests.put(url, data=b"PK", headers={"x-ms-blob-type": "BlockBlob"}, timeout=30)
    assert r.status_code == 403, r.text  # Azurite refuses the expired signature
    assert client.emu.admin.calls("GetAzureWriteUrl")[-1]["fault"] == "sas_expired"
    url = json.loads(client.value("GetAzureWriteUrl", {"uniqueFileName": "fresh.zip"}))["BlobUrl"]
    assert (
        requests.put(url, data=b"PK", headers={"x-ms-blob-type": "BlockBlob"}, timeout=30).status_code == 201
    )


def test_a_fault_with_until_stops_at_that_emulator_time(client: Client) -> None:
    from datetime import timedelta

    admin = client.emu.admin
    admin.inject_fault("GetExecutionSummaryStatus", "503", rate=1.0, until=admin.now() + timedelta(minutes=2))
    assert client.action("GetExecutionSummaryStatus", {"executionId": "x"}).status_code == 503
    admin.advance(119)
    assert client.action("GetExecutionSummaryStatus", {"executionId": "x"}).status_code == 503
    admin.advance(2)
    assert client.action("GetExecutionSummaryStatus", {"executionId": "x"}).status_code == 400  # not found


def test_api_latency_delays_every_fno_call_but_not_the_token(make_emulator) -> None:
    emu = make_emulator(EmulatorConfig(api_latency_ms=800))
    client = Client(emu)  # fetches a token
    assert status_call(client).status_code == 400
    url = f"{emu.api_base_url}/api/connector/dequeue/%7B6D31E09F-0249-459F-94F0-AAD9C2C47B64%7D"
    assert client.get(url).status_code == 204
    by_endpoint = {c["endpoint"]: c["ms"] for c in emu.admin.calls()}
    # The call log times a call from its arrival to its answer, so the delay shows there.
    assert by_endpoint["GetExecutionSummaryStatus"] >= 800 and by_endpoint["dequeue"] >= 800
    assert by_endpoint["token"] < 800
