"""Benchmarks for the F&O client (dmf.fno): streamed upload/download memory and per-call overhead.

Each case runs in a fresh subprocess so peak RSS is its own. Figures are ratios against a naive baseline
measured in the same run (whole body in memory, bare requests), written to bench/results/fno_client.md.

    .venv/bin/python -m bench.fno_client [--mb 256] [--calls 300] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "fno_client.md"
CHUNK = 1 << 20


class PeakRss:
    """Samples this process's RSS every 5 ms; ``delta`` is the peak above the starting level."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def chunks(total: int) -> Iterator[bytes]:
    block = hashlib.sha256(b"bench").digest() * (CHUNK // 32)
    sent = 0
    while sent < total:
        part = block[: min(CHUNK, total - sent)]
        sent += len(part)
        yield part


def _sas_url(conn: str, container: str, blob: str) -> str:
    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

    from local.azurite import ACCOUNT, ACCOUNT_KEY

    svc = BlobServiceClient.from_connection_string(conn)
    cc = svc.get_container_client(container)
    if not cc.exists():
        cc.create_container()
    sas = generate_blob_sas(
        ACCOUNT, container, blob, account_key=ACCOUNT_KEY,
        permission=BlobSasPermissions(read=True, create=True, write=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )  # fmt: skip
    return f"{cc.url}/{blob}?{sas}"


def _http():
    from dmf.fno.http import FnoHttp, RetryPolicy

    return FnoHttp(
        token_provider=lambda: "bench-token",
        timeout=30,
        transfer_timeout=600,
        retry=RetryPolicy(max_retries=0),
    )


# -- cases (each runs in its own process) -------------------------------------------------------------


def case_upload_ours(conn: str, size: int, known: str = "known") -> dict:
    """``upload_to_write_url`` of a stream: length known (one streamed Put Blob) or not (parallel blocks)."""
    from dmf.fno.package_api import PackageApi

    api = PackageApi(_http(), "https://unused.example")
    url = _sas_url(conn, "bench", f"ours-{known}.zip")
    with PeakRss() as m:
        t0 = time.perf_counter()
        api.upload_to_write_url(url, chunks(size), size if known == "known" else None)
        secs = time.perf_counter() - t0
    return {"seconds": secs, "peak_mb": m.delta_mb}


def case_upload_naive(conn: str, size: int) -> dict:
    import requests

    url = _sas_url(conn, "bench", "naive.zip")
    with PeakRss() as m:
        t0 = time.perf_counter()
        body = b"".join(chunks(size))  # what a whole-file PUT (as RIS does) needs
        r = requests.put(url, data=body, headers={"x-ms-blob-type": "BlockBlob"}, timeout=600)
        r.raise_for_status()
        secs = time.perf_counter() - t0
    return {"seconds": secs, "peak_mb": m.delta_mb}


def case_upload_blocks(conn: str, size: int) -> dict:
    """The SDK's own upload of a body held in memory: 4 MiB Put Blocks one after another (Put Block costs
    Azurite several times the CPU of one Put Blob per byte, so this isolates what parallel blocks buy)."""
    from azure.storage.blob import BlobClient

    url = _sas_url(conn, "bench", "blocks.zip")
    with PeakRss() as m:
        t0 = time.perf_counter()
        body = b"".join(chunks(size))
        BlobClient.from_blob_url(url, max_single_put_size=4 * 2**20).upload_blob(
            body, overwrite=True, max_concurrency=1
        )
        secs = time.perf_counter() - t0
    return {"seconds": secs, "peak_mb": m.delta_mb}


def _serve_file(size: int):
    from werkzeug import Response
    from werkzeug.serving import make_server

    def app(environ, start_response):
        if environ["PATH_INFO"].startswith("/api/connector/download/"):
            return Response(chunks(size), headers={"Content-Length": str(size)}, direct_passthrough=True)(
                environ, start_response
            )
        body = json.dumps({"value": "Executing"}).encode()
        return Response(body, content_type="application/json")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def case_download_ours(size: int) -> dict:
    from dmf.fno.models import DequeuedMessage
    from dmf.fno.recurring_api import RecurringApi

    server = _serve_file(size)
    base = f"http://127.0.0.1:{server.server_port}"
    api = RecurringApi(_http(), base)
    raw = json.dumps(
        {"CorrelationId": "c", "PopReceipt": "p", "DownloadLocation": f"{base}/api/connector/download/a"}
    )
    msg = DequeuedMessage.from_raw(raw).model_copy(
        update={"download_location": f"{base}/api/connector/download/a"}
    )
    digest = hashlib.sha256()
    with PeakRss() as m:
        t0 = time.perf_counter()
        with api.download(msg) as stream:
            for part in stream.iter_bytes():
                digest.update(part)
        secs = time.perf_counter() - t0
    server.shutdown()
    return {"seconds": secs, "peak_mb": m.delta_mb}


def case_download_naive(size: int) -> dict:
    import requests

    server = _serve_file(size)
    url = f"http://127.0.0.1:{server.server_port}/api/connector/download/a"
    with PeakRss() as m:
        t0 = time.perf_counter()
        body = requests.get(url, headers={"Authorization": "Bearer x"}, timeout=600).content
        hashlib.sha256(body).hexdigest()
        secs = time.perf_counter() - t0
    server.shutdown()
    return {"seconds": secs, "peak_mb": m.delta_mb}


def case_calls_ours(n: int) -> dict:
    from dmf.fno.package_api import PackageApi

    server = _serve_file(0)
    api = PackageApi(_http(), f"http://127.0.0.1:{server.server_port}")
    api.get_execution_summary_status("warm")
    t0 = time.perf_counter()
    for i in range(n):
        api.get_execution_summary_status(f"e{i}")
    secs = time.perf_counter() - t0
    server.shutdown()
    return {"seconds": secs, "per_call_ms": secs / n * 1000}


def case_calls_naive(n: int) -> dict:
    import requests

    server = _serve_file(0)
    url = (
        f"http://127.0.0.1:{server.server_port}"
        "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetExecutionSummaryStatus"
    )
    s = requests.Session()
    s.post(url, json={"executionId": "warm"}, timeout=30)
    t0 = time.perf_counter()
    for i in range(n):
        r = s.post(url, json={"executionId": f"e{i}"}, headers={"Authorization": "Bearer x"}, timeout=30)
        r.raise_for_status()
        r.json()["value"]
    secs = time.perf_counter() - t0
    server.shutdown()
    return {"seconds": secs, "per_call_ms": secs / n * 1000}


def upload_concurrency() -> int:
    from dmf.fno.package_api import PackageApi

    return PackageApi.__init__.__kwdefaults__["upload_concurrency"]


def _run_case(name: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.fno_client", "--case", name, *args],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mb", type=int, default=256)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--no-write", action="store_true", help="print only (quick runs at a smaller size)")
    p.add_argument("--case")
    p.add_argument("--arg", action="append", default=[])
    ns = p.parse_args(argv)
    if ns.case:
        fn = globals()[f"case_{ns.case}"]
        args = [int(a) if a.isdigit() else a for a in ns.arg]
        print(json.dumps(fn(*args)))
        return 0

    from local.azurite import Azurite

    size = ns.mb * 2**20
    load = [os.getloadavg()]
    with Azurite() as az:
        server = psutil.Process(az.proc.pid)

        def server_cpu() -> float:
            return sum(p.cpu_times().user + p.cpu_times().system for p in [server, *server.children(True)])

        before = server_cpu()
        up_ours = _run_case("upload_ours", "--arg", az.connection_string, "--arg", str(size))
        up_ours["server_cpu"] = server_cpu() - before
        before = server_cpu()
        up_unknown = _run_case(
            "upload_ours", "--arg", az.connection_string, "--arg", str(size), "--arg", "unknown"
        )
        up_unknown["server_cpu"] = server_cpu() - before
        before = server_cpu()
        up_naive = _run_case("upload_naive", "--arg", az.connection_string, "--arg", str(size))
        up_naive["server_cpu"] = server_cpu() - before
        before = server_cpu()
        up_blocks = _run_case("upload_blocks", "--arg", az.connection_string, "--arg", str(size))
        up_blocks["server_cpu"] = server_cpu() - before
    load.append(os.getloadavg())
    down_ours = _run_case("download_ours", "--arg", str(size))
    down_naive = _run_case("download_naive", "--arg", str(size))
    calls_ours = _run_case("calls_ours", "--arg", str(ns.calls))
    calls_naive = _run_case("calls_naive", "--arg", str(ns.calls))

    def row(label: str, ours: dict, base: dict) -> str:
        return (
            f"| {label} | {ours['seconds']:.2f} s / {ours['peak_mb']:.0f} MB | "
            f"{base['seconds']:.2f} s / {base['peak_mb']:.0f} MB | "
            f"{ours['seconds'] / base['seconds']:.2f} | {ours['peak_mb'] / max(base['peak_mb'], 1):.3f} |"
        )

    text = "\n".join(
        [
            "# F&O client benchmarks (dmf.fno)",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {psutil.cpu_count()} CPUs, "
            f"Python {platform.python_version()}; `.venv/bin/python -m bench.fno_client --mb {ns.mb} "
            f"--calls {ns.calls}`. Each case in its own process; peak = RSS above the process's level "
            "before the transfer.",
            "",
            f"## Transfers of {ns.mb} MiB (loopback; upload into Azurite through a SAS URL)",
            "",
            "| Case | ours: time / peak RSS | baseline: time / peak RSS | time ratio | memory ratio |",
            "|---|---|---|---|---|",
            row("upload, length known: one streamed Put Blob, vs whole-body PUT", up_ours, up_naive),
            row(
                f"upload, length unknown: streamed 4 MiB blocks, {upload_concurrency()} at a time, vs "
                "whole-body PUT",
                up_unknown,
                up_naive,
            ),
            row(
                "upload, length unknown: the same vs the SDK uploading a body held in memory, 4 MiB blocks "
                "one at a time",
                up_unknown,
                up_blocks,
            ),
            row("download: streamed chunks vs `requests.get().content`", down_ours, down_naive),
            "",
            f"Azurite CPU during the uploads: ours (one streamed Put Blob) {up_ours['server_cpu']:.2f} s, "
            f"ours (blocks) {up_unknown['server_cpu']:.2f} s, whole-body PUT "
            f"{up_naive['server_cpu']:.2f} s, blocks one at a time {up_blocks['server_cpu']:.2f} s. "
            f"Load average {load[0][0]:.1f} before the uploads, {load[1][0]:.1f} after "
            "(2 CPUs shared with other work).",
            "",
            "Reading: Azurite spends several times the CPU per byte on Put Block that it spends on one Put Blob, "
            "on one thread, so no block upload approaches a whole-body PUT here however many blocks are in flight. "
            "When the length is known (a staged package, a file) the upload is one Put Blob whose body streams "
            "from the source: the whole-body PUT's server path with bounded memory. The last row compares "
            "the same server path: parallel, bounded blocks against the SDK's one-at-a-time upload of a body "
            "held in memory.",
            "",
            f"## Per-call overhead ({ns.calls} GetExecutionSummaryStatus calls, loopback, keep-alive)",
            "",
            "| Case | per call | ratio |",
            "|---|---|---|",
            f"| FnoHttp + PackageApi (token, logging, typed parse) | {calls_ours['per_call_ms']:.2f} ms | "
            f"{calls_ours['per_call_ms'] / calls_naive['per_call_ms']:.2f} |",
            f"| bare requests.Session.post | {calls_naive['per_call_ms']:.2f} ms | 1.00 |",
            "",
        ]
    )
    if not ns.no_write:
        RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
