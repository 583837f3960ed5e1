"""HTTPS server: routing of token, Package API, Recurring Integration and admin requests.

A threaded stdlib server (one thread per keep-alive connection; the TLS handshake runs in that thread,
not in the accept loop). Every response carries Content-Length so connections stay alive.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.exceptions import ResourceNotFoundError

from dmf.redact import redact

from .blobs import BlobStore
from .calls import CallLog
from .clock import Clock
from .config import FaultRule
from .engine import ODataError
from .faults import FaultInjector
from .recurring import ConnectorError
from .tokens import TokenError

Result = tuple[int, bytes, str, dict[str, str]] | None
Route = Callable[["Handler", str, dict[str, str]], Result]


class ServedApp(Protocol):
    """What the server needs of the app it serves (``app.EmulatorApp``): routes, faults, the clock, the
    blob store's SAS expiry, and the call and error logs."""

    clock: Clock
    faults: FaultInjector
    blobs: BlobStore
    errors: list[str]
    calls: CallLog

    def route(self, method: str, path: str) -> tuple[str, Route]: ...


class _Drop(Exception):
    """Close the connection without a response (fault injection)."""


class _Reply(Exception):
    def __init__(
        self, status: int, body: bytes, content_type: str = "application/json", headers=None
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


def odata_error_body(
    message: str, action: str = "", exc_type: str = "System.InvalidOperationException"
) -> bytes:
    inner = (
        f"Exception occurred while executing action {action} on Entity DataManagementDefinitionGroup: {message}"
        if action
        else message
    )
    return json.dumps(
        {
            "error": {
                "code": "",
                "message": "An error has occurred.",
                "innererror": {"message": inner, "type": exc_type, "stacktrace": ""},
            }
        }
    ).encode()


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, ssl_context: ssl.SSLContext, app: ServedApp) -> None:
        self.ssl_context = ssl_context
        self.app = app
        super().__init__(("127.0.0.1", port), Handler)

    def get_request(self):  # type: ignore[override]
        sock, addr = self.socket.accept()
        # Handshake later, in the connection's own thread, so a slow client cannot stall accept().
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        pass  # client resets and TLS errors are routine (drop faults, clients going away)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: EmulatorServer
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        pass  # the call log is the emulator's log

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- body -------------------------------------------------------------------------------------
    def body_chunks(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.body_chunks())
        return self._body

    def body_limited(self, limit: int) -> bytes | None:
        """The body, or None as soon as it exceeds ``limit`` bytes (the rest is left unread)."""
        declared = int(self.headers.get("Content-Length") or 0)
        if declared > limit:
            if declared <= max(limit * 16, 64 << 20):
                for _ in self.body_chunks():  # drop it, so the client reads the 413 (no TCP reset)
                    pass
            else:
                self.close_connection = True  # too big even to drain
            self._body = b""
            return None
        parts, size = [], 0
        chunks = self.body_chunks()
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                # Read (and drop) the rest of a streamed body, up to a cap, so the client gets the 413.
                for rest in chunks:
                    size += len(rest)
                    if size > max(limit * 16, 64 << 20):
                        self.close_connection = True
                        break
                self._body = b""
                return None
            parts.append(chunk)
        self._body = b"".join(parts)
        return self._body

    def json_body(self) -> dict:
        raw = self.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Reply(400, odata_error_body(f"The request body is not valid JSON: {exc}")) from exc
        if not isinstance(data, dict):
            raise _Reply(400, odata_error_body("The request body must be a JSON object."))
        return data

    # -- responses --------------------------------------------------------------------------------
    def _drain(self) -> None:
        """Consume an unread request body, so the keep-alive connection stays in step."""
        if self._body is not None:
            return
        if int(self.headers.get("Content-Length") or 0) > (1 << 20):
            self.close_connection = True  # not worth reading a large upload we refuse
            return
        self.body()

    def _record(self, status: int) -> None:
        """Log the call before the response goes out, so a client that got an answer finds it logged."""
        if self._logged:
            return
        self._logged = True
        ms = (time.perf_counter() - self._started) * 1000
        app = self.server.app
        app.calls.add(self.command, self._path, self._endpoint, status, ms, self._fault, self._arrived)

    def send(self, status: int, body: bytes, content_type: str = "application/json", headers=None) -> None:
        self._drain()
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_stream(self, size: int, chunks: Iterator[bytes], content_type: str) -> None:
        self._drain()
        self._record(200)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)

    def drop(self) -> None:
        # RST instead of FIN, and no TLS close_notify: the client sees the connection die mid-request.
        try:
            raw = self.connection
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock = socket.socket(fileno=raw.detach()) if isinstance(raw, ssl.SSLSocket) else raw
            sock.close()
        except OSError:
            pass
        self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # the socket was dropped on purpose

    # -- dispatch ---------------------------------------------------------------------------------
    def _run_then_lose_answer(self, handler, path: str, query: dict[str, str], fault) -> None:
        """An "after the handler" fault: the work is done (whatever the handler did stays done, even when
        it refused the request), then the client gets a 5xx, a reset, or no answer at all instead of it.
        Always raises (_Reply or _Drop); a handler that streams its own answer cannot lose it afterwards."""
        try:
            result = handler(self, path, query)
        except (ODataError, ConnectorError, TokenError, ResourceNotFoundError, _Reply):
            result = ()  # an error answer is lost the same way
        if result is None:
            raise _Drop  # already streamed: cut the connection after it (the client may have read it all)
        self._drain()
        if fault.kind == "after_hang":
            time.sleep(fault.delay_seconds)
            raise _Drop
        if fault.kind == "after_drop":
            raise _Drop
        raise _server_error(int(fault.kind.removeprefix("after_")), fault.retry_after)

    def _handle(self, method: str) -> None:
        app = self.server.app
        # Handler objects live as long as the keep-alive connection: reset per-request state.
        self._started = time.perf_counter()
        self._arrived = app.clock.now()
        self._body: bytes | None = None
        self._logged = False
        self._fault: str | None = None
        parts = urlsplit(self.path)
        path = self._path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        endpoint, handler = app.route(method, path)
        self._endpoint = endpoint
        time.sleep(app.config.latency_seconds(endpoint))  # api_latency_ms: F&O-like round trips
        status = 500
        try:
            after = self._inject_fault(app, endpoint)
            if after is not None:
                self._run_then_lose_answer(handler, path, query, after)
            result = handler(self, path, query)
            if result is None:  # the handler wrote the response itself
                status = 200
            else:
                status, body, ctype, headers = result
                self.send(status, body, ctype, headers)
        except _Drop:
            status = 0
            self._record(status)
            self.drop()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            status = 0
            self.close_connection = True
        except Exception as exc:
            reply = _error_reply(exc)
            if reply is None:  # any bug must still answer like a server, and be visible in the log
                app.errors.append(redact(traceback.format_exc()))
                reply = _Reply(500, odata_error_body(redact(f"{type(exc).__name__}: {exc}")))
            status = reply.status
            self.send(reply.status, reply.body, reply.content_type, reply.headers)
        finally:
            app.blobs.expire_sas_in(None)
            self._record(status)  # dropped connections and failures while sending

    def _inject_fault(self, app: ServedApp, endpoint: str) -> FaultRule | None:
        """Apply the fault picked for this request, if any: raises for one that replaces the answer, and
        returns an "after the handler" fault (the handler runs first; its answer is lost)."""
        if endpoint.startswith("admin") or endpoint in ("discovery", "not-found"):
            return None
        fault = app.faults.pick(endpoint, app.clock.now())
        if fault is None:
            return None
        self._fault = fault.kind
        if fault.kind.startswith("after_"):
            return fault
        if fault.kind == "sas_expired":
            app.blobs.expire_sas_in(fault.delay_seconds)  # for this thread's next SAS URLs
        elif fault.kind == "slow":
            time.sleep(fault.delay_seconds)
        elif fault.kind == "drop":
            self.body()
            raise _Drop
        elif fault.kind == "429":
            raise _Reply(
                429,
                odata_error_body("Too many requests. Retry after the time in the Retry-After header."),
                headers={"Retry-After": str(1 if fault.retry_after is None else fault.retry_after)},
            )
        else:
            raise _server_error(int(fault.kind), fault.retry_after)
        return None


def _error_reply(exc: Exception) -> _Reply | None:
    """The answer F&O gives for an error a handler raised; None for an unexpected exception (a bug)."""
    if isinstance(exc, _Reply):
        return exc
    if isinstance(exc, ODataError):
        return _Reply(
            exc.status, odata_error_body(exc.message, exc.action, exc.exc_type), headers=_odata_headers()
        )
    if isinstance(exc, ConnectorError):
        return _Reply(exc.status, json.dumps({"Message": exc.message}).encode())
    if isinstance(exc, TokenError):
        return _Reply(exc.status, json.dumps(exc.body).encode())
    if isinstance(exc, ResourceNotFoundError):
        return _Reply(404, json.dumps({"Message": "The file was not found."}).encode())
    return None


_SERVER_ERRORS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _server_error(code: int, retry_after: int | None) -> _Reply:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return _Reply(code, odata_error_body(_SERVER_ERRORS[code]), headers=headers)


def _odata_headers() -> dict[str, str]:
    return {"OData-Version": "4.0"}
