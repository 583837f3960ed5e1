"""Typed payloads of the orchestrations and their activities, and the one way they go on the wire.

Orchestrators build these and pass ``to_wire(payload)`` (activities take a plain JSON ``dict``: the worker
refuses anything else); ``dmf.pipeline`` functions read them back with ``Model.of(req)`` (a payload or its
wire dict). Each key is spelled once, here; what activities answer is typed the same way in
``dmf/pipeline/results.py``.

In-flight compatibility (history replays, orchestrations started by an older version): ``from_wire``
ignores keys it does not know, and fields defaulting to ``ABSENT`` stay off the wire until set, so a key
that used to be absent stays absent (``Model.of`` reads them as None). Nested documents (a route, a job, an export) stay plain dicts.

Standard-library dataclasses on purpose: orchestrator modules are imported when the app starts (see
tests/test_cold_start.py), and these cost nothing to import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from typing import Any, Self


class _Absent:
    """The default of a field that stays off the wire until set (None included)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True, kw_only=True)
class Payload:
    def to_wire(self) -> dict[str, Any]:
        """The plain JSON dict activities and sub-orchestrations receive (``ABSENT`` fields left off)."""
        wire = {}
        for name in _names(type(self)):
            value = getattr(self, name)
            if value is not ABSENT:
                wire[name] = value
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Self:
        """Read a wire dict as it is: unknown keys ignored, a missing required one raises TypeError, a
        missing ``ABSENT`` one stays absent (passed on, the wire keeps its shape)."""
        names = _names(cls)
        return cls(**{k: v for k, v in wire.items() if k in names})

    @classmethod
    def of(cls, req: Self | Mapping[str, Any]) -> Self:
        """``req`` (a payload or its wire dict) to work with: every absent field reads as None."""
        got = req if isinstance(req, cls) else cls.from_wire(req)
        unset = {name: None for name in _names(cls) if getattr(got, name) is ABSENT}
        return replace(got, **unset) if unset else got


def to_wire(payload: Payload) -> dict[str, Any]:
    return payload.to_wire()


# -- inbound: a drop ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Drop(Payload):
    """``inbound_drop``'s input (from the blob trigger); ``plan_drop``'s with the instance id."""

    container: str
    name: str
    day: str
    etag: str | None = None
    size: int | None = ABSENT
    received_at: str | None = ABSENT
    instance_id: str | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class PrepareItem(Payload):
    drop_id: str
    day: str
    item: dict
    route: dict


@dataclass(frozen=True, kw_only=True)
class FinalizeDrop(Payload):
    """A drop's end: what was done (``action``), to which members, with which packages' results."""

    instance_id: str
    day: str
    source: str
    etag: str | None = None
    sha256: str | None = ABSENT
    members: list | None = ABSENT
    action: str | None = ABSENT
    reason: str | None = ABSENT
    duplicate_of: str | None = ABSENT
    results: list | None = ABSENT
    rejected: list | None = ABSENT


# -- inbound: an operator's retry of a drop ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetryOf(Payload):
    """Which retry of which drop (its file ``source``, content hash and route)."""

    drop_id: str
    retry_id: str
    day: str
    route: dict | None = None
    source: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class RetryPlan(RetryOf):
    """``retry_drop``'s input (``dmf.operators.retry.plan_retry``): the packages to import again."""

    packages: list


@dataclass(frozen=True, kw_only=True)
class FinalizeRetry(RetryOf):
    """``finalize_retry``: the retry's package results, folded into the drop's effective status."""

    results: list


# -- inbound: a package's import ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PackageImport(Payload):
    """``import_package``'s input: one staged package of a drop (or of an operator's retry)."""

    drop_id: str
    day: str
    seq: int
    staged: str
    entities: list
    rows: int | None = None
    source: str | None = None
    route: dict


@dataclass(frozen=True, kw_only=True)
class StartImport(PackageImport):
    """``start_import``: ImportFromPackage under ``execution_id``, holding the gate's ticket ``instance_id``."""

    instance_id: str
    execution_id: str
    allow_recall: bool = False  # call again after an ambiguous start F&O never saw
    now: str | None = None  # the orchestration's now: the gate lease is renewed from it


@dataclass(frozen=True, kw_only=True)
class CheckImport(Payload):
    environment: str
    execution_id: str
    ticket: str
    now: str


@dataclass(frozen=True, kw_only=True)
class ImportErrors(Payload):
    """``collect_errors`` and ``fetch_target_error_keys``."""

    environment: str
    execution_id: str
    drop_id: str
    seq: int
    entities: list | None = None


@dataclass(frozen=True, kw_only=True)
class ImportResult(Payload):
    """``record_import_result``: a package's outcome row."""

    drop_id: str
    day: str
    seq: int
    route: dict
    execution_id: str
    status: str
    reason: str | None = None
    last_status: str | None = None
    polls: int | None = None
    started_at: str
    finished_at: str
    confirmed_start_at: str | None = None
    observed_seconds: float | None = None
    errors: dict | None = None


# -- outbound: scheduled exports ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ExportPackage(Payload):
    """Which export run's package (``job``: ExportJob dict); ``export_fetch``'s input."""

    job: dict
    run_id: str
    day: str
    execution_id: str
    package_name: str


@dataclass(frozen=True, kw_only=True)
class ExportRun(ExportPackage):
    """``scheduled_export``'s input (from the export timer)."""

    guard: str | None = None
    guard_token: str | None = None


@dataclass(frozen=True, kw_only=True)
class StartExport(ExportRun):
    instance_id: str | None = None
    allow_recall: bool = False


@dataclass(frozen=True, kw_only=True)
class CheckExport(Payload):
    environment: str
    execution_id: str


@dataclass(frozen=True, kw_only=True)
class ExportResult(ExportRun):
    """``export_record``: the run's outcome row; frees the run guard."""

    instance_id: str | None = None
    status: str
    reason: str | None = None
    polls: int | None = None
    started: bool | None = None
    archived: str | None = None
    size: int | None = None
    method: str | None = None
    started_at: str
    finished_at: str


# -- outbound: the recurring enqueue route -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EnqueueRoute(Payload):
    """``recurring_enqueue``'s input (from ``inbound_drop``)."""

    drop: dict
    route: dict
    source: str
    day: str


@dataclass(frozen=True, kw_only=True)
class EnqueuedFile(Payload):
    """One dropped file for a recurring-integration activity (``route``)."""

    drop_id: str
    day: str
    route: dict
    source: str


@dataclass(frozen=True, kw_only=True)
class Enqueue(EnqueuedFile):
    """``enqueue_send``."""

    instance_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CheckMessage(Payload):
    environment: str
    message_id: str | None


@dataclass(frozen=True, kw_only=True)
class EnqueueResult(EnqueuedFile):
    """``enqueue_record``: ``status`` None means "as the message status says"."""

    message_id: str | None = None
    message_status: str | None = None
    status: str | None = None
    reason: str | None = None
    polls: int | None = None
    started_at: str
    finished_at: str


# -- outbound: recurring-export drains ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DrainOf(Payload):
    """Which drain run: the export (RecurringExport dict), the run id, the day of its rows."""

    export: dict
    run_id: str
    day: str


@dataclass(frozen=True, kw_only=True)
class DrainRun(DrainOf):
    """``recurring_drain``'s input (from the drain timer): one run's budgets and guard."""

    max_messages: int
    max_seconds: float
    guard: str | None = None
    guard_token: str | None = None
    workers: int | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class DrainStart(DrainOf):
    started_at: str
    instance_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class DrainBatch(DrainOf):
    max_messages: int
    max_seconds: float
    workers: int | None = None


@dataclass(frozen=True, kw_only=True)
class DrainResult(DrainOf):
    """``drain_record``: the run's summary row; frees the run guard."""

    totals: dict
    failures: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    stop_reason: str | None = None
    started_at: str
    finished_at: str
    guard: str | None = None
    guard_token: str | None = None


# -- the import gate (``activities/gate.py``) --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GateTicket(Payload):
    """``gate_enqueue`` and ``gate_try_acquire``: a package orchestration's place (``ticket``) at the
    environment's gate, at the orchestration's ``now``."""

    environment: str
    ticket: str
    instance_id: str
    execution_id: str | None = ABSENT
    now: str


@dataclass(frozen=True, kw_only=True)
class GateRenew(GateTicket):
    """``gate_renew``: keep the permit ``lease_seconds`` from ``now`` (over a long planned wait)."""

    lease_seconds: float


@dataclass(frozen=True, kw_only=True)
class GateRelease(GateTicket):
    """``gate_release``: kept while F&O may still run the execution (``maybe_running``)."""

    maybe_running: bool = False
