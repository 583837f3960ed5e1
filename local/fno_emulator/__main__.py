"""``python -m local.fno_emulator --config FILE --port 8443 --storage-connection-string ... --ca-out PATH``"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path

from .config import EmulatorConfig
from .emulator import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.fno_emulator", description=__doc__)
    parser.add_argument("--config", type=Path, help="JSON config (default: the built-in demo config)")
    parser.add_argument("--port", type=int, default=8443, help="HTTPS port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--storage-connection-string",
        default="UseDevelopmentStorage=true",
        help="Azurite connection string for packages and error files",
    )
    parser.add_argument("--ca-out", type=Path, help="copy the CA certificate (PEM) here for clients to trust")
    parser.add_argument("--state-dir", type=Path, help="where certificates are written (default: temporary)")
    parser.add_argument(
        "--api-latency-ms",
        type=float,
        help="delay every F&O call (not the token) this long (config api_latency_ms)",
    )
    parser.add_argument(
        "--print-default-config", action="store_true", help="print the default config and exit"
    )
    ns = parser.parse_args(argv)
    if ns.print_default_config:
        print(EmulatorConfig().model_dump_json(indent=2))
        return 0
    config = EmulatorConfig.load(ns.config) if ns.config else EmulatorConfig()
    if ns.api_latency_ms is not None:
        config = config.model_copy(update={"api_latency_ms": ns.api_latency_ms})
    # Block the stop signals before any thread starts, so sigwait below receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    emu = Emulator(config, ns.storage_connection_string, state_dir=ns.state_dir, port=ns.port).start()
    ca = emu.ca_bundle_path
    if ns.ca_out:
        ns.ca_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(emu.ca_bundle_path, ns.ca_out)
        ca = str(ns.ca_out)
    print(f"base_url={emu.base_url}", flush=True)
    print(f"api_base_url={emu.api_base_url}", flush=True)
    print(f"ca_bundle={ca}", flush=True)
    print(f"tenant={emu.tenant} client_id={emu.client_id}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
