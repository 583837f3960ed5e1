"""Typed results of the activities the orchestrators read, on the wire as ``dmf/pipeline/payloads.py``
puts them (``to_wire``; ``Model.of`` reads one back, absent keys as None).

The steps build these and hand back ``to_wire(result)``: the keys are the ones histories already hold (a
replay reads an old result the same way), and an ``ABSENT`` field stays off the wire as the key always was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dmf.pipeline.payloads import ABSENT, Payload

# -- configuration delivered through history ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(Payload):
    """``pipeline_config``: ``poll`` is a ``PollPolicy`` dict; ``events``: enabled, fallback_seconds."""

    poll: dict
    gate_recheck_seconds: float
    gate_lease_seconds: float
    events: dict | None = None


@dataclass(frozen=True, kw_only=True)
class OutboundConfig(Payload):
    """``outbound_config``: the poll policy and the drain's per-batch budgets."""

    poll: dict
    batch_messages: int
    batch_seconds: float
    workers: int


# -- a drop: plan and prepare -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Plan(Payload):
    """``plan_drop``: what to do with the drop (``action``: import, enqueue, reject, duplicate, gone,
    already-done), with its ``items`` to prepare (plain dicts) and its resolved ``route``."""

    action: str
    reason: str | None = ABSENT
    duplicate_of: str | None = ABSENT
    route: dict | None = ABSENT
    sha256: str | None = ABSENT
    items: list = field(default_factory=list)
    members: list | None = ABSENT  # a batch manifest's member blobs


@dataclass(frozen=True, kw_only=True)
class PreparedItem(Payload):
    """``prepare_item``: the item's staged ``packages`` (plain dicts: staged, entities, rows), or why not."""

    ok: bool
    seq: int
    problems: list
    packages: list
    warnings: list | None = ABSENT


# -- the one wait: starts and status checks ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Started(Payload):
    """A start call's answer (``start_import``, ``export_start``, ``enqueue_send``). ``state``: started or
    enqueued, ambiguous (may have reached F&O), throttled, retry (reached nothing), failed, lost-gate."""

    state: str
    error: str | None = ABSENT
    retry_after: float | None = ABSENT
    confirmed: bool | None = ABSENT  # F&O confirmed the start (an import)
    execution_id: str | None = ABSENT
    expected_seconds: float | None = ABSENT  # the learned duration (an import)
    message_id: str | None = ABSENT  # the enqueued message


@dataclass(frozen=True, kw_only=True)
class Checked(Payload):
    """A status call's answer (``check_import``, ``export_check``, ``enqueue_check``)."""

    status: str
    error: str | None = ABSENT
    lease_ok: bool | None = ABSENT  # the import's gate lease was renewed (False: it lapsed)
    terminal: bool | None = ABSENT  # a message status says so itself


# -- after the wait -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ErrorsFound(Payload):
    """``collect_errors``: what F&O reported and the error files copied; ``pending_target_keys``: entities
    whose target error-keys file F&O is still generating (``fetch_target_error_keys`` fetches them)."""

    error_count: int | None
    messages: list
    files: list
    pending_target_keys: list | None = ABSENT
    summary_page_url: str | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class TargetKeys(Payload):
    """``fetch_target_error_keys``: files copied, entities still pending; ``refused`` when F&O said "not
    now" (429, 503 + Retry-After): that try is waited out, not counted."""

    files: list
    pending: list
    refused: bool | None = ABSENT
    retry_after: float | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class Fetched(Payload):
    """``export_fetch``: ``ready`` once the package is archived; ``permanent`` errors are not retried."""

    ready: bool = False
    error: str | None = ABSENT
    permanent: bool | None = ABSENT
    refused: bool | None = ABSENT  # 429 / 503 + Retry-After: "not done", waited out, not a failure
    retry_after: float | None = ABSENT
    archived: str | None = ABSENT
    size: int | None = ABSENT
    method: str | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class Recorded(Payload):
    """A recording step's answer (``record_import_result``, ``export_record``, ``drain_record``,
    ``finalize_retry``...): the status it recorded, and what else it says."""

    status: str
    warnings: str | None = ABSENT


@dataclass(frozen=True, kw_only=True)
class BatchDone(Payload):
    """``drain_batch``'s answer, as the drain orchestration reads it (counts default to 0)."""

    taken: int = 0
    archived: int = 0
    duplicate: int = 0
    failed: int = 0
    not_acked: int = 0
    empty: bool = False
    failures: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def count(self, name: str) -> int:
        return int(getattr(self, name) or 0)
