"""``python -m local.functions_runner --settings local.settings.json [--app function_app] [--virtual-clock]``

Loads ``Values`` from the settings file into the environment *before* importing the app (as the host does),
then runs the app until SIGINT/SIGTERM. ``UseDevelopmentStorage=true`` values point at Azurite on its
default ports, or at a private Azurite started with ``--start-azurite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DEV_STORAGE = "UseDevelopmentStorage=true"


def _dev_connection_string(blob: int, queue: int, table: int) -> str:
    from local.azurite import ACCOUNT, ACCOUNT_KEY

    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob}/{ACCOUNT};QueueEndpoint=http://127.0.0.1:{queue}/{ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{table}/{ACCOUNT};"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m local.functions_runner", description=__doc__.splitlines()[0])
    p.add_argument("--settings", type=Path, default=Path("local.settings.json"), help="local.settings.json")
    p.add_argument(
        "--app", default="function_app", help="module holding the app object (default function_app)"
    )
    p.add_argument("--host-json", type=Path, default=Path("host.json"))
    p.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1 (0 = any free port)")
    p.add_argument("--virtual-clock", action="store_true", help="virtual time: timers fire as soon as idle")
    p.add_argument("--start-azurite", action="store_true", help="start a private Azurite for dev storage")
    p.add_argument("--blob-poll-interval", type=float, default=1.0)
    p.add_argument("--duplicate-blob-deliveries", type=int, default=0)
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    p.add_argument(
        "--key-file", type=Path, default=Path(".local-run/host-keys.json"),
        help="the host keys (function_key, master_key, system_key): read, or created 0600 if missing",
    )  # fmt: skip
    ns = p.parse_args(argv)

    logging.basicConfig(level=ns.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    values: dict[str, str] = {}
    if ns.settings.exists():
        values = {k: str(v) for k, v in json.loads(ns.settings.read_text()).get("Values", {}).items()}
    elif ns.settings != Path("local.settings.json"):
        p.error(f"settings file {ns.settings} not found")

    azurite = None
    if any(v == DEV_STORAGE for v in values.values()):
        if ns.start_azurite:
            from local.azurite import Azurite

            azurite = Azurite().start()
            conn = azurite.connection_string
        else:
            conn = _dev_connection_string(10000, 10001, 10002)
        values = {k: (conn if v == DEV_STORAGE else v) for k, v in values.items()}
    os.environ.update(values)  # before the app is imported: module-level code may read settings
    sys.path.insert(0, os.getcwd())

    from local.functions_runner import LocalRunner, VirtualClock
    from local.functions_runner.keys import HostKeys

    keys = HostKeys.load_or_create(ns.key_file)

    clock = VirtualClock(datetime.now(UTC)) if ns.virtual_clock else None
    runner = LocalRunner(
        app_module=ns.app,
        settings=values,
        clock=clock,
        host_json=ns.host_json,
        http_port=ns.port,
        blob_poll_interval=ns.blob_poll_interval,
        duplicate_blob_deliveries=ns.duplicate_blob_deliveries,
        host_keys=keys,
    )
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        runner.start()
        names = ", ".join(sorted(runner.functions))
        print(
            f"Functions runner ready on {runner.http_base_url} (task hub {runner.task_hub}): {names}\n"
            f"FUNCTION-level routes need function_key from {ns.key_file} (x-functions-key header or ?code=)",
            flush=True,
        )
        while not stop["now"]:
            time.sleep(0.2)
    finally:
        runner.stop()
        if azurite is not None:
            azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
