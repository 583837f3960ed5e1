"""Recurring Integration API: enqueue and message status; dequeue / download / ack with redelivery."""

from __future__ import annotations

import io
import json
import zipfile
from urllib.parse import quote

from local.fno_emulator import EmulatorConfig

from .conftest import Client
from .packages import GROUP_FIELDS, csv_unicode, customer_groups_package

IMPORT_ID = "{A0F6F6E5-6F1B-4E4A-9B7D-1E2C3D4F5A6B}"
EXPORT_ID = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"
EMPTY = "00000000-0000-0000-0000-000000000000"


def connector(client: Client, verb: str, activity: str) -> str:
    return f"{client.emu.api_base_url}/api/connector/{verb}/{quote(activity)}"


def enqueue(client: Client, body: bytes, entity: str | None = "Customer groups", company: str | None = None,
            activity: str = IMPORT_ID, external: str | None = None) -> str:  # fmt: skip
    params = {k: v for k, v in {"entity": entity, "company": company}.items() if v}
    headers = {"x-ms-dyn-externalidentifier": external} if external else {}

    def chunks():  # streamed body: chunked transfer encoding
        yield body[: len(body) // 2]
        yield body[len(body) // 2 :]

    r = client.post(connector(client, "enqueue", activity), params=params, data=chunks(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.text.startswith('"') and r.text.endswith('"')  # a JSON-quoted message id
    return json.loads(r.text)


def test_enqueue_status_progression_and_execution_id(client: Client) -> None:
    data = csv_unicode(GROUP_FIELDS, [["10", "Wholesale", ""], ["20", "Retail", ""]])
    mid = enqueue(client, data, company="USRT", external="file-001.csv")
    assert client.value("GetMessageStatus", {"messageId": mid}) == "Enqueued"
    assert client.value("GetExecutionIdByMessageId", {"_messageId": mid}) == EMPTY
    client.emu.admin.advance(5)
    assert client.value("GetMessageStatus", {"messageId": mid}) == "Processing"
    eid = str(client.value("GetExecutionIdByMessageId", {"_messageId": mid}))
    assert eid != EMPTY and client.status(eid) == "Executing"
    client.emu.admin.advance(60)
    assert client.value("GetMessageStatus", {"messageId": mid}) == "Processed"
    assert client.status(eid) == "Succeeded"
    assert len(client.emu.admin.data("USRT", "Customer groups")) == 2  # company from the message


def test_enqueue_with_bad_rows_and_unreadable_package(client: Client) -> None:
    mid = enqueue(client, csv_unicode(GROUP_FIELDS, [["10", "ok", ""], ["", "no key", ""]]))
    bad = enqueue(client, b"definitely not a file F&O can read", entity="No such entity")
    client.emu.admin.advance(3600)
    assert client.value("GetMessageStatus", {"messageId": mid}) == "ProcessedWithErrors"
    assert client.value("GetMessageStatus", {"messageId": bad}) == "PreProcessingError"
    eid = str(client.value("GetExecutionIdByMessageId", {"_messageId": mid}))
    errors = json.loads(str(client.value("GetExecutionErrors", {"executionId": eid})))
    assert [e["RecordId"] for e in errors] == ["2"]


def test_package_activity_and_in_order_processing(make_emulator) -> None:
    cfg = EmulatorConfig()
    cfg.recurring[1].package = True
    cfg.timings.import_base_seconds = 100
    client = Client(make_emulator(cfg))
    first = enqueue(client, customer_groups_package([["10", "first", ""]]), entity=None)
    second = enqueue(client, customer_groups_package([["10", "second", ""]]), entity=None)
    client.emu.admin.advance(50)
    statuses = [client.value("GetMessageStatus", {"messageId": m}) for m in (first, second)]
    assert statuses == ["Processing", "Enqueued"]  # one at a time, in order
    client.emu.admin.advance(1000)
    assert client.emu.admin.data("USMF", "Customer groups")[0]["DESCRIPTION"] == "second"


def test_enqueue_needs_a_token_and_a_known_activity(client: Client) -> None:
    url = connector(client, "enqueue", IMPORT_ID)
    assert client.post(url, auth=False, data=b"x").status_code == 401
    assert (
        client.post(
            connector(client, "enqueue", "{00000000-1111-2222-3333-444444444444}"), data=b"x"
        ).status_code
        == 404
    )


def test_dequeue_download_ack_and_redelivery(client: Client) -> None:
    deq = connector(client, "dequeue", EXPORT_ID)
    empty = client.get(deq)
    assert empty.status_code == 204 and empty.content == b""

    client.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "10", "DESCRIPTION": "x"}])
    cid = client.emu.admin.seed_outbound(EXPORT_ID)  # a package built from the data store
    first = client.get(deq)
    assert first.status_code == 200
    msg = first.json()
    assert set(msg) == {"CorrelationId", "PopReceipt", "DownloadLocation", "IsDownLoadFileExist",
                        "FileDownLoadErrorMessage", "LastDequeueDateTime"}  # fmt: skip
    assert msg["CorrelationId"] == cid and msg["LastDequeueDateTime"] is None
    assert msg["IsDownLoadFileExist"] is True and msg["FileDownLoadErrorMessage"] == ""
    assert msg["DownloadLocation"].startswith(f"{client.emu.base_url}/api/connector/download/%7B")

    assert client.get(msg["DownloadLocation"], auth=False).status_code == 401  # download needs the token
    pkg = client.get(msg["DownloadLocation"])
    assert pkg.status_code == 200
    with zipfile.ZipFile(io.BytesIO(pkg.content)) as zf:
        assert "10,x" in zf.read("Customer groups.csv").decode("utf-16")

    assert client.get(deq).status_code == 204  # invisible while being processed
    client.emu.admin.advance(29 * 60)
    assert client.get(deq).status_code == 204
    client.emu.admin.advance(61)
    again = client.get(deq).json()  # not acknowledged: delivered again after 30 minutes
    assert again["CorrelationId"] == cid and again["PopReceipt"] != msg["PopReceipt"]
    assert again["LastDequeueDateTime"] is not None and again["LastDequeueDateTime"].endswith("Z")
    assert client.value("GetMessageStatus", {"messageId": cid}) == "Dequeued"

    ack = client.post(connector(client, "ack", EXPORT_ID), json=again)  # body = the dequeue response
    assert ack.status_code == 200
    assert client.value("GetMessageStatus", {"messageId": cid}) == "Acked"
    client.emu.admin.advance(3600)
    assert client.get(deq).status_code == 204
    bad_ack = client.post(connector(client, "ack", EXPORT_ID), json={"CorrelationId": "nope"})
    assert bad_ack.status_code == 400


def test_seeded_bytes_http_download_location_and_expiry(make_emulator) -> None:
    client = Client(make_emulator(EmulatorConfig(download_location_http=True)))
    client.emu.admin.seed_outbound(EXPORT_ID, b"raw payload")
    msg = client.get(connector(client, "dequeue", EXPORT_ID)).json()
    assert msg["DownloadLocation"].startswith("http://127.0.0.1:")  # as behind F&O's load balancer
    https = "https://" + msg["DownloadLocation"].split("://", 1)[1]  # what clients rewrite it to
    assert client.get(https).content == b"raw payload"
    client.emu.admin.advance(8 * 24 * 3600)  # past the 7-day retention
    later = client.get(connector(client, "dequeue", EXPORT_ID)).json()
    assert later["IsDownLoadFileExist"] is False
    assert client.get("https://" + later["DownloadLocation"].split("://", 1)[1]).status_code == 404


def test_enqueue_too_large(make_emulator) -> None:
    client = Client(make_emulator(EmulatorConfig(max_enqueue_bytes=1000)))
    url = connector(client, "enqueue", IMPORT_ID)
    assert client.post(url, params={"entity": "Customer groups"}, data=b"x" * 1001).status_code == 413

    def chunks():  # without Content-Length: refused once the limit is passed
        for _ in range(10):
            yield b"y" * 200

    assert client.post(url, params={"entity": "Customer groups"}, data=chunks()).status_code == 413
    ok = client.post(
        url, params={"entity": "Customer groups"}, data=csv_unicode(GROUP_FIELDS, [["1", "a", ""]])
    )
    assert ok.status_code == 200
