"""The runner's state of one orchestration instance: records of its actions, messages, and the instance."""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("local.functions_runner")

ACTIVE = ("Pending", "Running")
TERMINAL = ("Completed", "Failed", "Terminated", "Canceled")
NON_RUNNING_OVERRIDE_BLOCKED = ("Pending", "Running", "ContinuedAsNew", "Suspended")


class NonDeterminismError(RuntimeError):
    """A replay produced different actions than the history it replays."""


class InstanceExistsError(RuntimeError):
    """start_new was refused: an instance with that id exists in a non-overridable state."""


@dataclass
class Record:
    """One flattened action of the current execution, and what the runner has done about it."""

    idx: int
    sig: list[Any]
    kind: str  # activity | suborch | timer | event | continue | other
    seq: int | None = None
    name: str | None = None
    input: str | None = None
    fire_at: str | None = None
    child: str | None = None
    retry: dict[str, Any] | None = None  # {"first_ms", "max", "attempts"}
    done: bool = False
    cancelled: bool = False


@dataclass
class Msg:
    id: str
    event: dict[str, Any]
    special: list[Any] | None = None  # ["retry_failed", idx] | ["retry_timer", idx] | ["terminate"]


@dataclass
class Instance:
    instance_id: str
    name: str
    execution_id: str
    status: str
    input: str | None
    created: str
    updated: str
    output: str | None = None
    custom_status: str | None = None
    parent_id: str | None = None
    parent_seq: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    next_seq: int = 0
    inbox: list[Msg] = field(default_factory=list)
    needs_start: bool = False
    episode_active: bool = False
    episode_queued: bool = False
    timer_keys: set[tuple[str, int]] = field(default_factory=set)
    seq_map: dict[int, Record] = field(default_factory=dict, repr=False)
    continue_with: tuple[str, str | None] | None = None  # (old execution, new input) until committed
    applied: list[str] = field(default_factory=list)  # applied messages whose pending rows are still there

    def row(self) -> dict[str, Any]:
        # history_len marks the commit point: history rows past it belong to an episode whose commit never
        # finished (the process died between the two writes) and recovery discards them.
        state = {
            "records": [vars(r) for r in self.records],
            "next_seq": self.next_seq,
            "history_len": len(self.history),
        }
        return {
            "instance_id": self.instance_id, "name": self.name, "execution_id": self.execution_id,
            "status": self.status, "input": self.input, "output": self.output,
            "custom_status": self.custom_status, "created": self.created, "updated": self.updated,
            "parent_id": self.parent_id, "parent_seq": self.parent_seq, "engine_state": json.dumps(state),
        }  # fmt: skip

    def rec_by_seq(self, seq: int) -> Record | None:
        r = self.seq_map.get(seq)
        if r is not None and r.seq == seq:
            return r
        # sequence numbers change with retries and new actions: rebuild the index on a miss
        self.seq_map = {x.seq: x for x in self.records if x.seq is not None}
        return self.seq_map.get(seq)


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the runner's own frames (the SDK shows Reason and Details to the orchestrator)."""
    tb = traceback.extract_tb(exc.__traceback__)
    user = [f for f in tb if "/local/functions_runner/" not in f.filename.replace("\\", "/")]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(user)]
    return "".join(lines + traceback.format_exception_only(exc))


def _msg_id() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


CUSTOM_STATUS_LIMIT_BYTES = 16 * 1024  # the Durable extension's limit, counted in UTF-16


def custom_status_too_large(custom_json: str) -> str | None:
    """The extension's error when a custom status exceeds 16 KB of UTF-16 JSON text, else None."""
    size = len(custom_json.encode("utf-16-le"))
    if size <= CUSTOM_STATUS_LIMIT_BYTES:
        return None
    return (
        "The UTF-16 size of the JSON-serialized payload must not exceed 16 KB. "
        f"The current payload size is {-(-size // 1024)} KB."
    )
