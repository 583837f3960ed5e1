"""Baseline for bench/emulator_status_rps.py: the least a threaded stdlib HTTPS server can do per call
(fixed JSON answer, same TLS setup, keep-alive, no routing, auth or state).

    python -m bench.emulator_baseline_server PORT CERT KEY
"""

from __future__ import annotations

import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b'{"@odata.context":"https://127.0.0.1/data/$metadata#Edm.String","value":"Executing"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        super().__init__(("127.0.0.1", port), Handler)

    def get_request(self):  # type: ignore[override]
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    Server(port, ctx).serve_forever()


if __name__ == "__main__":
    main()
