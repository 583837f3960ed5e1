"""Start and stop Azurite (installed from npm into ``local/node_modules``) on 127.0.0.1.

Used by the test suite, the demo, the benchmarks and the local runner CLI. Each instance gets its own
throw-away data directory and free ports, so several can run side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_DIR = Path(__file__).resolve().parent
AZURITE_BIN = LOCAL_DIR / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> Path:
    if not AZURITE_BIN.exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=LOCAL_DIR, check=True)
    return AZURITE_BIN


@dataclass
class Azurite:
    """One Azurite process. ``start()`` blocks until all three services accept connections."""

    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0
    location: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _own_location: bool = field(default=False, repr=False)

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 30.0) -> Azurite:
        binary = ensure_installed()
        self.blob_port = self.blob_port or free_port()
        self.queue_port = self.queue_port or free_port()
        self.table_port = self.table_port or free_port()
        if self.location is None:
            self.location = Path(tempfile.mkdtemp(prefix="azurite-"))
            self._own_location = True
        args = [
            str(binary),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--location", str(self.location),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
        ]  # fmt: skip
        log = open(self.location / "azurite.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        for port in (self.blob_port, self.queue_port, self.table_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"Azurite exited with {self.proc.returncode}; see {self.location}/azurite.log"
                    )
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"Azurite did not open port {port} in {timeout}s") from exc
                    time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if self._own_location and self.location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m local.azurite`` runs Azurite in the foreground on fixed ports until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blob-port", type=int, default=10000)
    parser.add_argument("--queue-port", type=int, default=10001)
    parser.add_argument("--table-port", type=int, default=10002)
    parser.add_argument("--location", type=Path, default=None, help="data dir (default: temporary)")
    ns = parser.parse_args(argv)
    # Block the signals first so sigwait receives them instead of their default action killing us
    # (which would orphan Azurite, running in its own session).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    az = Azurite(ns.blob_port, ns.queue_port, ns.table_port, ns.location).start()
    print(az.connection_string, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        az.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
