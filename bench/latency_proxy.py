"""A loopback TCP proxy that adds a fixed delay to every request, for benchmarks with cloud-like round trips.

Each accepted connection is piped to the target port. The delay is applied when the client starts sending
after the server last spoke (or on a new connection): once per HTTP request/response exchange however many
TCP segments the request or its body spans, whichever client (an SDK, ``requests``) sends it. The answer
is passed on at once, so one exchange costs the delay plus the server's own time. HTTP/1.1 clients do not
pipeline, and parallel requests use connections of their own, so each is delayed once and independently.

Run: ``python -m bench.latency_proxy --delay-ms 20 LISTEN:TARGET [LISTEN:TARGET ...]`` (LISTEN 0: any free
port); prints ``LISTEN->TARGET`` per pair once listening, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, turn: list[str], delay: float, up: bool
) -> None:
    try:
        while data := await reader.read(1 << 16):
            if up and turn[0] != "up":
                await asyncio.sleep(delay)  # a new request: the server spoke last (or nobody did yet)
            turn[0] = "up" if up else "down"
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve_pair(listen: int, target: int, delay: float) -> tuple[asyncio.Server, int]:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            cw.close()
            return
        turn = ["down"]
        with contextlib.suppress(asyncio.CancelledError):  # the proxy stopping with connections open
            await asyncio.gather(_pipe(cr, sw, turn, delay, True), _pipe(sr, cw, turn, delay, False))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    return server, server.sockets[0].getsockname()[1]


async def _main(pairs: list[tuple[int, int]], delay: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers = []
    for listen, target in pairs:
        server, port = await _serve_pair(listen, target, delay)
        servers.append(server)
        print(f"{port}->{target}", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


class LatencyProxy:
    """The proxy in a process of its own (the benchmark's threads must not delay its timers)."""

    def __init__(self, targets: list[int], delay_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.latency_proxy", "--delay-ms", str(delay_ms),
             *(f"0:{t}" for t in targets)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.ports: dict[int, int] = {}  # target -> listening port
        for _ in targets:
            line = self.proc.stdout.readline().strip()
            if not line:
                raise RuntimeError("latency proxy exited")
            port, _, target = line.partition("->")
            self.ports[int(target)] = int(port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("pairs", nargs="+", help="LISTEN:TARGET ports on 127.0.0.1")
    ns = ap.parse_args()
    pairs = [(int(a), int(b)) for a, b in (p.split(":") for p in ns.pairs)]
    asyncio.run(_main(pairs, ns.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
