"""``python -m local.worker_index [function_app.py] [--json]``: index the app with the real Python worker's
loader, as the host does at start-up, and print what the host would receive. Exits 1 when the worker
refuses any function: in Azure none of the app's functions would then load."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from local.functions_runner.worker import index_app_file


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m local.worker_index", description=__doc__.splitlines()[0])
    p.add_argument("script", nargs="?", type=Path, default=Path("function_app.py"))
    p.add_argument("--json", action="store_true", help="print the indexed bindings as JSON")
    ns = p.parse_args(argv)
    bindings, refusals = index_app_file(ns.script)
    if ns.json:
        print(json.dumps({"functions": bindings, "refused": [r.__dict__ for r in refusals]}, indent=1))
    else:
        print(f"{len(bindings)} functions indexed, {len(refusals)} refused")
        for r in refusals:
            print(f"  REFUSED {r.function}: {r.message}")
    return 1 if refusals else 0


if __name__ == "__main__":
    sys.exit(main())
