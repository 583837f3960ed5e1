"""The SAS upload stages blocks in parallel, within its bound, against a slow fake blob endpoint (no Azurite).

The fake answers Put Block after a delay and records how many were in flight at once; Put Block List
assembles the blob from the staged blocks, so the test also checks the bytes that would be committed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
from werkzeug import Request, Response
from werkzeug.serving import make_server

from dmf.fno.http import FnoHttp, RetryPolicy
from dmf.fno.package_api import BLOCK_SIZE, UPLOAD_CONCURRENCY, PackageApi


class FakeBlobService:
    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.blocks: dict[str, bytes] = {}
        self.committed: bytes | None = None
        self.puts = 0  # Put Blob requests (whole body in one request)
        self.properties: dict[str, str] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        req = Request(environ)
        q = parse_qs(req.query_string.decode())
        comp = (q.get("comp") or [""])[0]
        headers = {
            "ETag": '"0x1"',
            "Last-Modified": "Sun, 29 Nov 2026 12:00:00 GMT",
            "x-ms-version": "2025-01-05",
        }
        if req.method == "PUT" and comp == "block":
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                body = req.get_data()
                time.sleep(self.delay)
                self.blocks[q["blockid"][0]] = body
            finally:
                with self.lock:
                    self.in_flight -= 1
            return Response(status=201, headers=headers)(environ, start_response)
        if req.method == "PUT" and comp == "" and req.headers.get("x-ms-blob-type") == "BlockBlob":
            self.puts += 1
            self.committed = req.get_data()
            return Response(status=201, headers=headers)(environ, start_response)
        if req.method == "PUT" and comp == "properties":
            self.properties = {
                k.lower(): v for k, v in req.headers.items() if k.lower().startswith("x-ms-blob-")
            }
            return Response(status=200, headers=headers)(environ, start_response)
        if req.method == "PUT" and comp == "blocklist":
            xml = req.get_data().decode()
            ids = [part.split("<", 1)[0] for part in xml.split("<Latest>")[1:]]
            self.committed = b"".join(self.blocks[i] for i in ids)
            return Response(status=201, headers=headers)(environ, start_response)
        return Response(status=400)(environ, start_response)


@pytest.fixture
def fake_blob() -> Iterator[tuple[FakeBlobService, str]]:
    svc = FakeBlobService()
    server = make_server("127.0.0.1", 0, svc, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield svc, f"http://127.0.0.1:{server.server_port}/dmf/pkg.zip?sv=2025-01-05&sig=fake"
    server.shutdown()


def _api() -> PackageApi:
    http = FnoHttp(
        token_provider=lambda: "t", timeout=10, transfer_timeout=30, retry=RetryPolicy(max_retries=0)
    )
    return PackageApi(http, "https://fno.invalid")


def _chunks(total: int, size: int = 300_000) -> Iterator[bytes]:
    sent, n = 0, 0
    while sent < total:
        part = hashlib.sha256(str(n).encode()).digest() * (size // 32)
        part = part[: min(size, total - sent)]
        sent += len(part)
        n += 1
        yield part


def test_streamed_upload_stages_blocks_in_parallel_within_the_bound(fake_blob) -> None:
    svc, url = fake_blob
    total = 10 * BLOCK_SIZE + 1234
    expected = b"".join(_chunks(total))
    _api().upload_to_write_url(url, _chunks(total), None)
    assert svc.committed == expected
    assert len(svc.blocks) == 11
    assert 1 < svc.max_in_flight <= UPLOAD_CONCURRENCY


def test_file_upload_of_known_length_is_one_streamed_put_with_its_md5(fake_blob) -> None:
    svc, url = fake_blob
    data = b"".join(_chunks(6 * BLOCK_SIZE + 7))
    _api().upload_to_write_url(url, io.BytesIO(data), len(data))
    assert svc.committed == data
    assert svc.puts == 1 and svc.blocks == {}
    md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()  # Content-MD5
    assert svc.properties.get("x-ms-blob-content-md5") == md5


def test_concurrency_is_a_setting(fake_blob) -> None:
    svc, url = fake_blob
    api = _api()
    api.upload_concurrency = 1
    data = b"".join(_chunks(3 * BLOCK_SIZE + 7))
    api.upload_to_write_url(url, iter([data]), None)
    assert svc.committed == data
    assert svc.max_in_flight == 1
