"""The import gate: at most ``permits`` ImportFromPackage executions in flight per F&O environment.

F&O's ``ImportFromPackage`` must not run in parallel ("Otherwise, it fails"), across every orchestration
of this app. Durable Functions for Python 1.x has no entity locks, so the gate is a small Table-backed
semaphore with a FIFO queue. ``service.GateService`` is the one entry point (activities, triggers and the
pipeline's import steps call it); ``store.ImportGate`` holds the rows; ``events`` names the wake-up event;
every ETag loop is ``dmf.storage.etag``'s.

- One partition per environment. Row ``state`` holds the holders (ticket, instance, lease expiry) and
  ``Permits``; it is only ever replaced with an ETag match, so two acquirers can never both win.
- Each waiter has a row ``w~<enqueued-at>~<ticket>``: row keys sort in arrival order, which is the FIFO.
- A holder's lease is renewed by the import steps (``start_import``, ``check_import``: explicitly, through
  the service) and before long planned waits (``gate_renew``). A crashed holder's lease expires; a
  terminated one is evicted by the sweeper once its orchestration has ended and F&O is done with its
  execution (``evict``); the sweeper also records ``Failed`` on its package row, which the ended
  orchestration never wrote. Waiters refresh ``SeenAt`` whenever they try; a waiter not seen for
  ``stale_after`` seconds is skipped and removed, so a dead waiter cannot block the queue.
- ``release`` returns the instance ids of the next waiters; ``hand_over`` raises each the event it waits on
  at once (no waiter sits out a polling interval after a release). Reads (``status``) write nothing.
- Operators may **pause** a gate (``Paused`` on the state row, set with an ETag match like every other
  change): no permit is granted while paused, holders finish, waiters keep their place. They may also
  **cancel** a waiter (``Canceled`` on its row, ETag-matched, so a waiter being granted meanwhile wins and
  the cancel says so): the waiter's next ``try_acquire`` answers ``canceled`` instead of joining the queue.
  State-row writes merge, so holders' updates never wipe the pause and a pause never wipes the holders.

Times come from the caller: orchestrations pass ``context.current_utc_datetime``, which keeps the gate
deterministic under replay and lets a virtual clock drive it in tests.
"""

from dmf.gate.events import GATE_EVENT, wake_event
from dmf.gate.service import GateService, gate_service
from dmf.gate.store import (
    MAX_ATTEMPTS,
    STATE,
    WAITER_PREFIX,
    Acquire,
    Holder,
    ImportGate,
    recheck_seconds,
    stale_after,
)

__all__ = [
    "GATE_EVENT",
    "MAX_ATTEMPTS",
    "STATE",
    "WAITER_PREFIX",
    "Acquire",
    "GateService",
    "Holder",
    "ImportGate",
    "gate_service",
    "recheck_seconds",
    "stale_after",
    "wake_event",
]
