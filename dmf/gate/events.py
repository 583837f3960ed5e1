"""The event a waiter at the gate waits for: defined here once, for the orchestrator and whoever wakes it.

A waiter publishes the exact name it waits on in its custom status (``wake``: ``gate_open_<n>``, a fresh one
per wait; see ``orchestrators/import_package.py``), so whoever frees a permit raises that name, and only to a
waiter that is waiting right now.
"""

from __future__ import annotations

from typing import Any

GATE_EVENT = "gate_open"


def wake_event(waits: int) -> str:
    """The event name of a waiter's ``waits``-th wait."""
    return f"{GATE_EVENT}_{waits}"


def waiting_on(custom_status: Any) -> str | None:
    """The gate event a waiter is waiting on now, read from its custom status (None: not waiting)."""
    wake = custom_status.get("wake") if isinstance(custom_status, dict) else None
    return str(wake) if wake and str(wake).startswith(GATE_EVENT) else None
