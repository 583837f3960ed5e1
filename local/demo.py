"""The main job, end to end, on the embedded stack: ``python -m local.demo`` (``scripts/demo.sh``).

Starts Azurite, the F&O emulator and the app under the local runner (virtual clock: F&O's minutes pass in
moments), drops sample files into the inbound container — a data package, a raw CSV, a batch, a file with bad
rows, a broken package and a re-drop of the same content — waits for every import, and prints the outcome
table, where each blob ended up, and what F&O (the emulator) received. Then it drains a recurring export and
runs a scheduled export into the archive.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) if rows else len(c) for c in cols}
    widths = {c: min(w, 60) for c, w in widths.items()}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    for r in rows:
        out.append("  ".join(str(r.get(c, "") or "")[: widths[c]].ljust(widths[c]) for c in cols))
    return "\n".join(out)


def sample_drops() -> dict[str, bytes]:
    from local.samples import customer_groups_csv, customer_groups_package

    batch = io.BytesIO()
    with zipfile.ZipFile(batch, "w") as zf:
        for n in range(3):
            zf.writestr(f"{n + 1}-groups.zip", customer_groups_package([f"BATCH{n + 1}"]))
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("nested/Manifest.xml", b"<x/>")
    raw = customer_groups_csv(["WHOLESALE", "RETAIL", "ONLINE"])
    return {
        "USMF/CustomerGroups-Import/groups-package.zip": customer_groups_package(["PKG1", "PKG2"]),
        "USMF/CustomerGroups-Import/Customer groups.csv": raw,
        "USRT/CustomerGroups-Import/three-packages.zip": batch.getvalue(),
        "DEMF/CustomerGroups-Import/Customer groups__with-bad-rows.csv": customer_groups_csv(
            ["DE1"], bad_rows=2
        ),
        "USMF/CustomerGroups-Import/broken-package.zip": broken.getvalue(),
        "USMF/CustomerGroups-Import/Customer groups__same-content-again.csv": raw,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--real-clock", action="store_true", help="real time instead of the virtual clock (slower)"
    )
    p.add_argument("--verbose", action="store_true")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the stack up after the demo (open the operators' console) until Ctrl-C",
    )
    ns = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if ns.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    sys.path.insert(0, str(ROOT))
    from local.azurite import Azurite
    from local.embedded_stack import Stack

    t0 = time.monotonic()
    print("Starting Azurite, the F&O emulator and the app under the local runner …", flush=True)
    with Azurite() as az:
        exports = [
            {
                "name": "groups",
                "environment": "main",
                "activity_id": "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}",
            }
        ]
        jobs = [
            {
                "name": "groups-nightly",
                "environment": "main",
                "data_project": "CustomerGroups-Export",
                "legal_entity": "USMF",
                "schedule": "0 0 2 * * *",
            }
        ]
        stack = Stack(
            az,
            "demo" + datetime.now(UTC).strftime("%H%M%S"),
            virtual_clock=not ns.real_clock,
            RECURRING_EXPORTS=json.dumps(exports),
            LOG_LEVEL="INFO" if ns.verbose else "WARNING",
            EXPORT_JOBS=json.dumps(jobs),
        )
        with stack:
            drops = sample_drops()
            print(f"\nDropping {len(drops)} files into container '{stack.names['INBOUND_CONTAINER']}':")
            for name, data in drops.items():
                print(f"  {name}  ({len(data):,} bytes)")
            for name, data in drops.items():
                if name.endswith("same-content-again.csv"):
                    continue
                stack.drop(name, data)
            stack.settle()
            dup = "USMF/CustomerGroups-Import/Customer groups__same-content-again.csv"
            stack.drop(dup, drops[dup])
            stack.settle()

            rows = stack.outcomes()
            print("\nOutcome table (one summary row per drop, one row per package):")
            for r in rows:
                r["Row"] = ("  " if "~" in r["RowKey"] else "") + r["RowKey"][-12:]
                r["Blob"] = (r.get("SourceBlob") or "").split("/", 1)[-1]
            print(
                _table(
                    rows,
                    [
                        "Row",
                        "Kind",
                        "Status",
                        "Blob",
                        "LegalEntity",
                        "Records",
                        "ErrorCount",
                        "PollCount",
                        "Reason",
                    ],
                )
            )
            print("\nWhere the dropped blobs are now:")
            for setting in (
                "INBOUND_CONTAINER",
                "PROCESSED_CONTAINER",
                "FAILED_CONTAINER",
                "REJECTED_CONTAINER",
                "ERRORS_CONTAINER",
            ):
                print(f"  {stack.names[setting]}:")
                for n in stack.blob_names(setting):
                    print(f"    {n}")
            admin = stack.emu.admin
            imports = stack.import_calls()
            print(
                f"\nF&O emulator: {len(imports)} ImportFromPackage calls, peak concurrent imports "
                f"{admin.peak_concurrent_imports}, parallel-import violations {admin.violations}"
            )
            for le in ("USMF", "USRT", "DEMF"):
                ids = sorted(r["CUSTOMERGROUPID"] for r in admin.data(le, "Customer groups"))
                print(f"  {le} customer groups: {', '.join(ids) or '-'}")

            outbound_demo(stack)
            ok = admin.violations == 0 and any(r.get("Status") == "Succeeded" for r in rows)
            day = next((r["PartitionKey"] for r in rows if r.get("Kind") == "drop"), "")
            console = f"{stack.runner.http_base_url}/api/console?code={stack.runner.function_key}&day={day}"
            print(f"\nOperators' console: {console}")
            print(
                f"Operators' API:     {stack.runner.http_base_url}/api/openapi.json (x-functions-key header)"
            )
            if ns.keep:
                print("The stack stays up (Azurite, emulator, app); Ctrl-C stops it.", flush=True)
                _interrupt_on_signals()
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    print("\nStopping …")
    print(f"\nDone in {time.monotonic() - t0:.1f}s (virtual clock: {not ns.real_clock}).")
    return 0 if ok else 1


def _interrupt_on_signals() -> None:
    """Ctrl-C (even when started in the background, where SIGINT may be ignored) and SIGTERM stop cleanly."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def outbound_demo(stack: Any) -> None:
    """Drain a recurring export (dequeue → archive → verify → ack) and run a scheduled export into the archive."""
    import urllib.request

    admin = stack.emu.admin
    activity = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"
    admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "EXPORTED", "DESCRIPTION": "From F&O"}])
    for _ in range(3):
        admin.seed_outbound(activity, legal_entity="USMF")
    print(
        f"\nOutbound: {len(admin.outbound(activity))} recurring-export messages queued in F&O; firing the drain timer …"
    )
    stack.runner.fire_timer("drain_timer")
    stack.settle()
    left = [m for m in admin.outbound(activity) if m["status"] != "Acked"]
    print(f"  messages F&O still holds un-acknowledged: {len(left)}")
    print("Scheduled export 'groups-nightly' (ExportToPackage → poll → archive), started on demand …")
    req = urllib.request.Request(
        f"{stack.runner.http_base_url}/api/outbound/exports/groups-nightly",
        method="POST",
        headers={"x-functions-key": stack.runner.function_key},  # a FUNCTION-level route, as in Azure
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # nosec B310 # the local runner on http://127.0.0.1
        print(f"  POST /api/outbound/exports/groups-nightly -> {resp.status}")
    stack.settle()
    print(f"  archive container '{stack.names['ARCHIVE_CONTAINER']}':")
    for n in stack.blob_names("ARCHIVE_CONTAINER"):
        print(f"    {n}")
    rows = [r for r in stack.outcomes() if r.get("Kind") in ("drain", "message", "export")]
    print(_table(rows, ["Kind", "Status", "Export", "CorrelationId", "ArchivedBlob", "Acked", "Reason"]))


if __name__ == "__main__":
    tempfile.tempdir = None
    sys.exit(main())
