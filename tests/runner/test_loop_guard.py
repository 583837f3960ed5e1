"""``async def`` functions run on the worker's one event loop: the runner reports blocking calls made there."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from local.functions_runner import LocalRunner
from tests.runner.apps import blocking_app


@pytest.fixture
def listener() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(16)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    srv.close()


def test_a_blocking_call_on_the_loop_is_reported_and_an_offloaded_one_is_not(listener: int) -> None:
    runner = LocalRunner(app=blocking_app.app, in_memory=True, host_json=None).start()
    try:
        with urllib.request.urlopen(f"{runner.http_base_url}/api/offloads?port={listener}") as r:
            assert r.read() == b"sent"
        assert runner.loop_blocks == []
        with urllib.request.urlopen(f"{runner.http_base_url}/api/blocks?port={listener}") as r:
            assert r.read() == b"sent"
        blocks = runner.loop_blocks
        assert blocks and {b.function for b in blocks} == {"blocks"}
        assert any(b.call == "socket.connect" for b in blocks)
        assert all("blocking_app.py" in b.where for b in blocks)
    finally:
        runner.stop()
