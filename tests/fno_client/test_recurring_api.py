"""Recurring Integration API against a loopback HTTPS server: enqueue, dequeue, download, ack."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dmf.fno.clients import recurring_api
from dmf.fno.errors import PermanentFnoError, TransientFnoError
from dmf.fno.http import RetryPolicy
from dmf.fno.models import DequeuedMessage
from dmf.settings import Settings

from .conftest import ACCESS_TOKEN

ACTIVITY = "{b0b5401e-4a1e-4f5e-9e2b-0c1d2e3f4a5b}"
ACTIVITY_PATH = "%7Bb0b5401e-4a1e-4f5e-9e2b-0c1d2e3f4a5b%7D"
MESSAGE_ID = "84a383c8-36ff-4a5f-8c2f-3b2e5c0a9d11"
FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05, max_retry_after=5)
AUTH = {"Authorization": f"Bearer {ACCESS_TOKEN}"}


def ra(settings: Settings):
    return recurring_api(settings, "main", retry=FAST)


def gen(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield bytes((sent + i) % 251 for i in range(n))
        sent += n


def test_enqueue_streams_the_body_and_returns_the_unquoted_id(fno: HTTPServer, settings: Settings) -> None:
    total = 3 * 2**20 + 7
    seen: dict[str, object] = {}

    def handler(request: Request) -> Response:
        seen["body_sha"] = hashlib.sha256(request.get_data()).hexdigest()
        seen["raw_path"] = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
        seen["args"] = dict(request.args)
        seen["external"] = request.headers.get("x-ms-dyn-externalidentifier")
        seen["chunked"] = request.headers.get("Transfer-Encoding")
        return Response(f'"{MESSAGE_ID}"', content_type="application/json")

    fno.expect_request(
        f"/api/connector/enqueue/{ACTIVITY}", method="POST", headers=AUTH
    ).respond_with_handler(handler)
    mid = ra(settings).enqueue(
        ACTIVITY, gen(total), entity="Customer groups", company="USMF", external_id="inb-7"
    )
    assert mid == MESSAGE_ID
    assert seen["body_sha"] == hashlib.sha256(b"".join(gen(total))).hexdigest()
    assert seen["chunked"] == "chunked"  # streamed, never held whole
    assert seen["args"] == {"entity": "Customer groups", "company": "USMF"}
    assert seen["external"] == "inb-7"
    assert ACTIVITY_PATH in str(seen["raw_path"])  # braces URL-encoded as in Microsoft's samples


def test_enqueue_with_known_length_sends_content_length(fno: HTTPServer, settings: Settings) -> None:
    total = 700_001
    seen: dict[str, object] = {}

    def handler(request: Request) -> Response:
        seen["len"] = request.headers.get("Content-Length")
        seen["te"] = request.headers.get("Transfer-Encoding")
        seen["body"] = request.get_data()
        return Response(f'"{MESSAGE_ID}"')

    fno.expect_request(f"/api/connector/enqueue/{ACTIVITY}").respond_with_handler(handler)
    assert ra(settings).enqueue(ACTIVITY, gen(total), length=total) == MESSAGE_ID
    assert seen["len"] == str(total) and seen["te"] is None
    assert seen["body"] == b"".join(gen(total))


def test_enqueue_500_is_not_retried(fno: HTTPServer, settings: Settings) -> None:
    fno.expect_request(f"/api/connector/enqueue/{ACTIVITY}").respond_with_data("boom", status=500)
    with pytest.raises(TransientFnoError):
        ra(settings).enqueue(ACTIVITY, io.BytesIO(b"a,b\r\n"))
    assert len(fno.log) - _identity_calls(fno) == 1


def test_enqueue_429_is_handed_back_even_with_a_seekable_body(fno: HTTPServer, settings: Settings) -> None:
    """Enqueue is sent once by the client: the enqueue route's durable loop is its one retry layer."""
    bodies: list[bytes] = []

    def handler(request: Request) -> Response:
        bodies.append(request.get_data())
        return Response("", status=429, headers={"Retry-After": "0"})

    fno.expect_request(f"/api/connector/enqueue/{ACTIVITY}").respond_with_handler(handler)
    f = io.BytesIO(b"HEADER\r\n" + b"row\r\n" * 1000)
    with pytest.raises(TransientFnoError) as info:
        ra(settings).enqueue(ACTIVITY, f)
    assert info.value.refused and info.value.retry_after == 0
    assert bodies == [f.getvalue()]


def test_enqueue_429_with_a_one_shot_stream_is_handed_back(fno: HTTPServer, settings: Settings) -> None:
    fno.expect_request(f"/api/connector/enqueue/{ACTIVITY}").respond_with_data(
        "", status=429, headers={"Retry-After": "7"}
    )
    with pytest.raises(TransientFnoError) as info:
        ra(settings).enqueue(ACTIVITY, gen(1000))
    assert info.value.retry_after == 7


def _identity_calls(server: HTTPServer) -> int:
    return sum(1 for r, _ in server.log if "oauth2" in r.path or "openid" in r.path)


def test_dequeue_204_means_empty(fno: HTTPServer, settings: Settings) -> None:
    fno.expect_request(f"/api/connector/dequeue/{ACTIVITY}", method="GET", headers=AUTH).respond_with_data(
        "", status=204
    )
    assert ra(settings).dequeue(ACTIVITY) is None


def _dequeue_body(base: str) -> bytes:
    host = base.split("://", 1)[1]
    # Byte-exact JSON as F&O writes it (spacing and field order kept for the ack).
    return (
        '{"CorrelationId":"5acd8121-d4e1-4cf8-b31f-9713de3e3627","PopReceipt":"AgAAAAMAAAAAAAAA3XpSEQ0b1QE=",'
        f'"DownloadLocation":"http://{host}/api/connector/download/{ACTIVITY_PATH}'
        '?correlation-id=5acd8121-d4e1-4cf8-b31f-9713de3e3627&blob=c5fbcc38-4d8a-4a75-9f3e-6a2c4a0e5b1d",'
        '"IsDownLoadFileExist":true,"FileDownLoadErrorMessage":"","LastDequeueDateTime":null}'
    ).encode()


def test_dequeue_rewrites_http_download_location_and_keeps_raw(fno: HTTPServer, settings: Settings) -> None:
    body = _dequeue_body(fno.url_for("").rstrip("/"))
    fno.expect_request(f"/api/connector/dequeue/{ACTIVITY}", method="GET").respond_with_data(
        body, content_type="application/json"
    )
    msg = ra(settings).dequeue(ACTIVITY)
    assert msg is not None
    assert msg.correlation_id == "5acd8121-d4e1-4cf8-b31f-9713de3e3627"
    assert msg.pop_receipt == "AgAAAAMAAAAAAAAA3XpSEQ0b1QE="
    assert msg.download_location.startswith("https://127.0.0.1:")
    assert msg.last_dequeue_datetime is None and msg.is_download_file_exist is True
    assert msg.raw.encode() == body
    # Crosses a durable activity boundary as JSON and comes back equal.
    again = DequeuedMessage.model_validate(json.loads(msg.model_dump_json()))
    assert again == msg and DequeuedMessage.from_raw(msg.raw) == msg


def test_download_streams_with_the_token_and_ack_sends_the_body_verbatim(
    fno: HTTPServer, settings: Settings
) -> None:
    body = _dequeue_body(fno.url_for("").rstrip("/"))
    payload = b"".join(gen(5 * 2**20 + 3))
    fno.expect_request(f"/api/connector/dequeue/{ACTIVITY}").respond_with_data(body)
    fno.expect_request(
        f"/api/connector/download/{ACTIVITY}",
        method="GET",
        headers=AUTH,
        query_string={
            "correlation-id": "5acd8121-d4e1-4cf8-b31f-9713de3e3627",
            "blob": "c5fbcc38-4d8a-4a75-9f3e-6a2c4a0e5b1d",
        },
    ).respond_with_data(payload, content_type="application/zip")
    acks: list[bytes] = []

    def ack(request: Request) -> Response:
        acks.append(request.get_data())
        # First ack hits a transient fault: ack is safe to repeat and must be repeated.
        return Response("", status=503 if len(acks) == 1 else 200)

    fno.expect_request(
        f"/api/connector/ack/{ACTIVITY}", method="POST", headers={**AUTH, "Content-Type": "application/json"}
    ).respond_with_handler(ack)

    api = ra(settings)
    msg = api.dequeue(ACTIVITY)
    assert msg is not None
    digest, sizes = hashlib.sha256(), []
    with api.download(msg) as stream:
        assert stream.content_length == len(payload)
        for chunk in stream.iter_bytes(1 << 20):
            sizes.append(len(chunk))
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert max(sizes) <= 1 << 20  # read in bounded chunks
    api.ack(ACTIVITY, msg)
    assert acks == [body, body]


def test_download_refuses_to_send_the_token_elsewhere(fno: HTTPServer, settings: Settings) -> None:
    raw = _dequeue_body("https://evil.example").decode()
    msg = DequeuedMessage.from_raw(raw)
    with pytest.raises(PermanentFnoError, match="token not sent"), ra(settings).download(msg):
        pass
    assert _identity_calls(fno) == len(fno.log)  # nothing went to F&O at all


def test_download_truncated_body_is_transient(fno: HTTPServer, settings: Settings) -> None:
    base = fno.url_for("").rstrip("/")
    msg = DequeuedMessage.from_raw(_dequeue_body(base))

    def short(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            yield b"x" * 1000
            time.sleep(0.05)

        # Promise more than is sent, as a dropped connection does.
        return Response(body(), headers={"Content-Length": "5000"}, direct_passthrough=True)

    fno.expect_request(f"/api/connector/download/{ACTIVITY}").respond_with_handler(short)
    with pytest.raises(TransientFnoError), ra(settings).download(msg) as stream:
        for _ in stream.iter_bytes(512):
            pass
