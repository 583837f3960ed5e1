"""Peak memory while staging and uploading a 1 GB package, beside a read-it-all baseline in the same run.

"Ours" runs the pipeline's own steps in a fresh process: ``prepare_item`` (download to a temp file, validate
every row, stage a copy: one streamed Put Blob) and then the upload of the staged package to an F&O-style SAS
write URL, streamed (``copy_blob`` without the server-side copy: one streamed Put Blob checked against the
staged package's MD5; the worst case for our memory: the server-side path moves no bytes through the worker). The baseline
reads the blob into memory, opens the zip from those bytes and uploads them. Peak RSS above the process's
idle RSS after imports is reported for both (Linux ``ru_maxrss``), with wall time, the worker's CPU time and
Azurite's CPU time. A third row times the path the app takes by default in Azure (``copy_blob`` server-side
into the write URL, as ``start_import`` does): the same preparation, then a Copy Blob.

    .venv/bin/python -m bench.inbound_memory_1gb [--mib 1024] [--rounds 1] [--no-write]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 2**20
TARGET = 1024 * MiB


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def make_package(path: Path, target: int = TARGET) -> int:
    """A ~1 GiB DMF package: hand-written manifests plus a CSV-Unicode data file, entries stored."""
    from local.samples import customer_groups_package

    with zipfile.ZipFile(__import__("io").BytesIO(customer_groups_package(["X"]))) as small:
        manifest, header = small.read("Manifest.xml"), small.read("PackageHeader.xml")
    row_tpl = "G{:09d},Customer group number {:09d} with a long description,Net30\r\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("Manifest.xml", manifest)
        zf.writestr("PackageHeader.xml", header)
        with zf.open("Customer groups.csv", "w", force_zip64=True) as out:
            out.write(b"\xff\xfe" + "CUSTOMERGROUPID,DESCRIPTION,PAYMENTTERMID\r\n".encode("utf-16-le"))
            n, written = 0, 0
            while written < target:
                chunk = "".join(row_tpl.format(i, i) for i in range(n, n + 20000)).encode("utf-16-le")
                out.write(chunk)
                written += len(chunk)
                n += 20000
    return path.stat().st_size


def child(mode: str, conn: str, container: str, blob: str) -> None:
    os.environ.update(
        {
            "DATA_STORAGE": conn,
            "FNO_MAIN_BASE_URL": "https://fno.invalid",
            "FNO_MAIN_AUTH_MODE": "managed_identity",
            "STAGING_CONTAINER": container + "-staging",
            "PACKAGE_MAX_ROWS": "100000000",
            "PACKAGE_MAX_BYTES": str(4 * 1024 * MiB),
        }
    )
    from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas

    from dmf.pipeline import drops
    from dmf.pipeline.services import services
    from dmf.storage.transfer import copy_blob

    svc = BlobServiceClient.from_connection_string(conn)
    src = svc.get_blob_client(container, blob)
    dest_c = svc.get_container_client(container + "-fno")
    token = generate_blob_sas(
        svc.account_name, dest_c.container_name, f"{mode}.zip", account_key=svc.credential.account_key,
        permission=BlobSasPermissions(read=True, write=True, create=True), expiry=datetime.now(UTC) + timedelta(hours=2),
    )  # fmt: skip
    write_url = f"{dest_c.url}/{mode}.zip?{token}"
    idle = _rss_kib()
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    t = time.monotonic()
    if mode in ("ours", "ours_server"):
        route = {
            "route": "bench", "environment": "main", "mode": "package", "kind": "package",
            "data_project": "CustomerGroups-Import", "legal_entity": "USMF", "entity": None, "source_format": None,
            "execute": True, "overwrite": True, "allow_duplicate_content": True,
        }  # fmt: skip
        item = {"seq": 1, "kind": "package", "source": f"{container}/{blob}", "entity": None}
        res = drops.prepare_item(
            services(), {"drop_id": "bench", "day": "20261125", "item": item, "route": route}
        )
        assert res["ok"], res
        prepared = time.monotonic() - t
        staged = services().blob_at(res["packages"][0]["staged"])
        copied = copy_blob(
            staged, BlobClient.from_blob_url(write_url), prefer_server_side=mode == "ours_server"
        )
        assert copied.method == ("server" if mode == "ours_server" else "stream"), copied
    else:
        data = src.download_blob().readall()
        with zipfile.ZipFile(__import__("io").BytesIO(data)) as zf:
            zf.read("Manifest.xml")
        BlobClient.from_blob_url(write_url).upload_blob(data, overwrite=True)
    seconds = time.monotonic() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss  # KiB on Linux
    out = {"mode": mode, "idle_mib": idle / 1024, "peak_mib": peak / 1024, "seconds": seconds}
    out["cpu_seconds"] = usage.ru_utime + usage.ru_stime - cpu0
    if mode != "baseline":
        out["prepare_seconds"] = prepared
    print(json.dumps(out))


def main(target: int = TARGET, rounds: int = 1) -> str:
    import psutil
    from azure.storage.blob import BlobServiceClient

    from local.azurite import Azurite

    results = {}
    load = [os.getloadavg()]
    with Azurite() as az, tempfile.TemporaryDirectory() as tmp:
        server = psutil.Process(az.proc.pid)

        def server_cpu() -> float:
            procs = [server, *server.children(recursive=True)]
            return sum(p.cpu_times().user + p.cpu_times().system for p in procs)

        pkg = Path(tmp) / "big.zip"
        size = make_package(pkg, target)
        svc = BlobServiceClient.from_connection_string(az.connection_string)
        for c in ("bench", "bench-staging", "bench-fno"):
            svc.create_container(c)
        with pkg.open("rb") as f:
            svc.get_blob_client("bench", "USMF/CustomerGroups-Import/big.zip").upload_blob(
                f, overwrite=True, max_concurrency=2
            )
        pkg.unlink()
        for _ in range(rounds):  # interleaved, so a burst of load elsewhere hits every variant alike
            for mode in ("ours", "baseline", "ours_server"):
                before = server_cpu()
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, az.connection_string, "bench", "USMF/CustomerGroups-Import/big.zip"],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                got = json.loads(out.stdout.strip().splitlines()[-1])
                got["server_cpu"] = server_cpu() - before
                if mode not in results or got["seconds"] < results[mode]["seconds"]:
                    results[mode] = got  # fastest round; memory peaks are alike across rounds
    load.append(os.getloadavg())
    ours, base, srv = results["ours"], results["baseline"], results["ours_server"]
    above = {m: r["peak_mib"] - r["idle_mib"] for m, r in results.items()}

    def cpu(r: dict) -> str:
        return f"{r['cpu_seconds']:.1f}s / {r['server_cpu']:.1f}s"

    return "\n".join(
        [
            "## Inbound: memory while staging and uploading a 1 GB package",
            "",
            f"`bench/inbound_memory_1gb.py`: a {size / MiB:,.0f} MiB package (CSV-Unicode data, ~{target // MiB} MiB), "
            "validated row by row, staged, then uploaded to a SAS write URL streamed (Azurite).",
            "",
            f"Machine: {os.cpu_count()} CPUs shared with other work; load average {load[0][0]:.1f} at the start, "
            f"{load[1][0]:.1f} at the end. Best of {rounds} interleaved round(s) per variant.",
            "",
            "| variant | idle RSS | peak RSS | peak above idle | time | time / baseline | CPU: worker / Azurite |",
            "|---|---|---|---|---|---|---|",
            f"| ours (`prepare_item` + streamed upload) | {ours['idle_mib']:.0f} MiB | {ours['peak_mib']:.0f} MiB | **{above['ours']:.0f} MiB** | {ours['seconds']:.1f}s (prepare {ours['prepare_seconds']:.1f}s, upload {ours['seconds'] - ours['prepare_seconds']:.1f}s) | **{ours['seconds'] / base['seconds']:.2f}** | {cpu(ours)} |",
            f"| baseline (read it all, upload the bytes) | {base['idle_mib']:.0f} MiB | {base['peak_mib']:.0f} MiB | {above['baseline']:.0f} MiB | {base['seconds']:.1f}s | 1.00 | {cpu(base)} |",
            f"| ours, upload as in Azure (server-side copy into the write URL) | {srv['idle_mib']:.0f} MiB | {srv['peak_mib']:.0f} MiB | {above['ours_server']:.0f} MiB | {srv['seconds']:.1f}s (prepare {srv['prepare_seconds']:.1f}s, copy {srv['seconds'] - srv['prepare_seconds']:.1f}s) | {srv['seconds'] / base['seconds']:.2f} | {cpu(srv)} |",
            "",
            f"Ratio of peaks above idle, ours / baseline: **{above['ours'] / above['baseline']:.3f}**; target: ours < 100 MB above idle.",
            f"Ratio of times, ours (streamed) / baseline: **{ours['seconds'] / base['seconds']:.2f}**; target: ≤ 1.2.",
            "",
            "Streamed, the package passes through Azurite four times (read, stage, read, write URL) against the "
            "baseline's two; both writes of ours are one streamed Put Blob each (known length), which Azurite "
            "serves at a fraction of the CPU per byte it spends on Put Block (the SDK's upload of the baseline's "
            "1 GB body goes in 4 MiB blocks): compare the Azurite CPU column. The third row is the path taken in "
            "Azure (a server-side copy into the write URL).",
            "",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        sys.exit(0)
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mib", type=int, default=TARGET // MiB, help="data file size (default 1024)")
    p.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds; the fastest of each variant counts"
    )
    p.add_argument("--no-write", action="store_true", help="print only (quick runs at a smaller size)")
    ns = p.parse_args()
    text = main(ns.mib * MiB, ns.rounds)
    print(text)
    if not ns.no_write:
        (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (ROOT / "bench" / "results" / "inbound_memory_1gb.md").write_text(text, encoding="utf-8")
