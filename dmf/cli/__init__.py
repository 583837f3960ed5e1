"""Operators' command line: the app's HTTP API from a terminal or a script, and offline checks of files.

``python -m dmf.cli --help``. Online commands talk to ``--url`` (env ``DMF_API_URL``, default
http://127.0.0.1:7071) with a function key from ``--key`` (env ``DMF_FUNCTION_KEY``), sent as
``x-functions-key`` and never printed. Offline commands (``check``, ``build``) run the pipeline's own
build and validation (``dmf.pipeline.drops.prepare_file``) on a local file.

Exit codes: 0 done; 1 the thing failed or was refused (a retry with nothing to retry, an unhealthy app, a
file with errors); 2 usage or connection errors (also a missing or wrong key).

``register(subparsers)`` adds the commands to another argparse parser (``dmf/__main__.py``); each sets
``cli_handler``, so the caller runs ``args.cli_handler(args)`` and exits with what it returns.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dmf.cli import local, remote

OK, FAILED, USAGE = 0, 1, 2

COMMANDS = """\
commands:
  status                      health (deep), import gates and a day's failures
  show DROP_ID | PATH         a drop (packages, F&O's errors, retries) or a file's drops (container/name)
  retry DROP_ID               import a drop's Failed/TimedOut packages again
  cancel DROP_ID              cancel a drop waiting at the import gate
  pause ENV / resume ENV      hold / release new imports into an F&O environment
  drain-now NAME              drain a recurring export (RECURRING_EXPORTS) now
  export-now NAME             run an export job (EXPORT_JOBS) now
  check FILE                  offline: the pipeline's own validation of a local file
  build CSV -o PKG.zip        offline: build a DMF package with the pipeline's own builder

exit codes: 0 ok, 1 failed or refused, 2 usage or connection error
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this CLI's commands to ``subparsers`` (from ``parser.add_subparsers()``)."""
    remote.register(subparsers)
    local.register(subparsers)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dmf.cli",
        description="Operate the F&O DMF integration: its HTTP API (status, drops, retries, gates, "
        "outbound runs) and offline checks and builds of files.",
        epilog=COMMANDS
        + "\nonline commands: --url (env DMF_API_URL, default http://127.0.0.1:7071), --key (env "
        "DMF_FUNCTION_KEY), --json; see `python -m dmf.cli COMMAND --help`",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, a usage error 2
        return int(exc.code or 0)
    try:
        return int(args.cli_handler(args))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return USAGE
