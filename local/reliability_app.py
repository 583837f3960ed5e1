"""The app (``function_app.app``) with SIGKILL points at activity boundaries, for the fault matrix's
"runner SIGKILLed" row (``local/reliability.py``). Never deployed.

Run as ``python -m local.functions_runner --app local.reliability_app``. Every activity call passes two
boundaries: ``before:<activity>`` (dispatched, nothing done yet) and ``after:<activity>`` (done, its result not
yet recorded in the task hub). With ``RELIABILITY_KILL=1`` the process SIGKILLs itself at the first boundary
not yet in ``RELIABILITY_KILLED`` (a file shared by the restarted processes), after writing it there: so
across restarts each boundary is killed once. Every boundary passed is logged to
``RELIABILITY_BOUNDARY_LOG``; acks sent while their message had no verified archive go to
``RELIABILITY_ACK_AUDIT``.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import threading
from pathlib import Path
from typing import Any

from function_app import app

_lock = threading.Lock()


def _append(setting: str, line: str) -> None:
    path = os.environ.get(setting)
    if not path:
        return
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def boundary(label: str) -> None:
    with _lock:
        _append("RELIABILITY_BOUNDARY_LOG", f"{os.getpid()} {label}")
        if os.environ.get("RELIABILITY_KILL") != "1":
            return
        killed_file = os.environ.get("RELIABILITY_KILLED")
        if not killed_file:
            return
        path = Path(killed_file)
        done = set(path.read_text().splitlines()) if path.exists() else set()
        only = os.environ.get("RELIABILITY_KILL_ONLY")
        if label in done or (only and label not in only.split(",")):
            return
        _append("RELIABILITY_KILLED", label)
        os.kill(os.getpid(), signal.SIGKILL)


def _wrap(name: str, fn: Any) -> Any:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*a: Any, **kw: Any) -> Any:
            boundary(f"before:{name}")
            out = await fn(*a, **kw)
            boundary(f"after:{name}")
            return out

        return run_async

    @functools.wraps(fn)
    def run(*a: Any, **kw: Any) -> Any:
        boundary(f"before:{name}")
        out = fn(*a, **kw)
        boundary(f"after:{name}")
        return out

    return run


# Wrap the builders' functions (building them here would register every name twice: the runner builds).
for _builder in app._function_builders:
    _f = _builder._function
    if _f._trigger is not None and _f._trigger.type == "activityTrigger":
        _f._func = _wrap(_f.get_function_name(), _f._func)


def _audit_acks() -> None:
    from azure.storage.blob import BlobServiceClient

    from dmf.fno.recurring_api import RecurringApi

    real_ack = RecurringApi.ack

    def audited(self: Any, activity_id: str, message: Any) -> Any:
        cid = message.correlation_id
        container = BlobServiceClient.from_connection_string(os.environ["DATA_STORAGE"]).get_container_client(
            os.environ.get("ARCHIVE_CONTAINER", "archive")
        )
        if not any(
            cid in b.name and (b.metadata or {}).get("verified") == "1"
            for b in container.list_blobs(include=["metadata"])
        ):
            _append("RELIABILITY_ACK_AUDIT", cid)
        return real_ack(self, activity_id, message)

    RecurringApi.ack = audited  # type: ignore[method-assign]


if os.environ.get("RELIABILITY_ACK_AUDIT"):
    _audit_acks()
