"""Recovery after a restart: active instances are reloaded from storage and their work resumed.

Part of ``Engine`` (see ``engine.py``). Messages already applied (their id is in the history) are dropped;
activities in flight are run again (at-least-once, as in Azure); timers and retry timers are re-armed;
children that ended while the runner was down report back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from .history import (
    EventType,
    event,
    parse_iso,
)
from .instances import ACTIVE, TERMINAL, Instance, Msg, Record

log = logging.getLogger("local.functions_runner")


class Recovery:
    """The restart half of ``Engine``."""

    def _recover(self) -> None:
        for instance_id in self.store.active_instance_ids():
            row = self.store.get_instance(instance_id)
            if row is None or row["status"] not in ACTIVE:
                continue
            state = json.loads(row.get("engine_state") or "{}")
            inst = Instance(
                instance_id=instance_id, name=row["name"], execution_id=row["execution_id"], status=row["status"],
                input=row.get("input"), created=row["created"], updated=row["updated"], output=row.get("output"),
                custom_status=row.get("custom_status"), parent_id=row.get("parent_id"),
                parent_seq=row.get("parent_seq"),
                records=[Record(**r) for r in state.get("records", [])], next_seq=state.get("next_seq", 0),
            )  # fmt: skip
            inst.history = self._committed_history(inst, state.get("history_len"))
            for ev in inst.history:
                ev["IsPlayed"] = True
            if not inst.history:
                inst.needs_start = True
            pending = self.store.load_pending(instance_id)
            inbox_keys: set[tuple[int, Any]] = set()
            applied = {ev.get("RunnerMessageId") for ev in inst.history}
            for msg_id, body in pending:
                # killed between committing an episode and deleting its messages: already applied
                if body.get("exec") not in (None, inst.execution_id) or msg_id in applied:
                    self.store.delete_pending(instance_id, [msg_id])
                    continue
                ev = body["event"]
                inst.inbox.append(Msg(msg_id, ev, body.get("special")))
                inbox_keys.add((ev["EventType"], ev.get("TaskScheduledId", ev.get("TimerId"))))
            with self.cond:
                self.instances[instance_id] = inst
                effects = []
                for rec in inst.records:
                    if rec.done or rec.seq is None:
                        continue
                    if any(k[1] == rec.seq for k in inbox_keys):
                        continue
                    if rec.kind == "activity":
                        if rec.retry and self._awaiting_retry_timer(inst, rec):
                            continue
                        log.info("re-running activity %s (instance %s) after restart", rec.name, instance_id)
                        effects.append(self._activity_effect(inst, rec))
                    elif rec.kind == "timer" and not rec.cancelled:
                        effects.append(self._timer_effect(inst, rec.seq, parse_iso(rec.fire_at), None))
                    elif rec.kind == "suborch":
                        effects.append(self._resume_child(inst, rec))
                self._rearm_retry_timers(inst, effects, inbox_keys)
                for fx in effects:
                    fx()
                self._schedule_episode(inst)

    def _committed_history(self, inst: Instance, committed: int | None) -> list[dict[str, Any]]:
        """The history up to the instance row's commit point. An episode writes its history rows, then the
        instance row (records, sequence numbers, status); rows past the row's ``history_len`` are from an
        episode killed between the two writes. They are dropped: that episode's messages are still pending
        (deleted only after the row) and its effects never ran, so it simply runs again."""
        history = self.store.load_history(inst.instance_id, inst.execution_id)
        if committed is not None and len(history) > committed:
            log.warning(
                "instance %s: %d history event(s) of an uncommitted episode discarded after restart",
                inst.instance_id, len(history) - committed,
            )  # fmt: skip
            self.store.truncate_history(inst.instance_id, inst.execution_id, committed)
            history = history[:committed]
        return history

    def _awaiting_retry_timer(self, inst: Instance, rec: Record) -> bool:
        """A retry record whose latest attempt failed waits for a retry timer, not for a re-run."""
        return any(
            ev["EventType"] in (EventType.TaskFailed, EventType.SubOrchestrationInstanceFailed)
            and ev.get("TaskScheduledId") == rec.seq
            for ev in inst.history
        )

    def _rearm_retry_timers(self, inst: Instance, effects: list[Callable[[], None]], inbox_keys: set) -> None:
        fired = {ev.get("TimerId") for ev in inst.history if ev["EventType"] == EventType.TimerFired}
        known = {r.seq for r in inst.records if r.kind == "timer"}
        for ev in inst.history:
            if ev["EventType"] != EventType.TimerCreated or ev["EventId"] in known or ev["EventId"] in fired:
                continue
            if (EventType.TimerFired, ev["EventId"]) in inbox_keys:
                continue
            # a retry timer: find its record (the retry record whose attempt failed just before it)
            owner = None
            for r in inst.records:
                if r.retry and self._awaiting_retry_timer(inst, r):
                    owner = r
            if owner is not None:
                effects.append(
                    self._timer_effect(
                        inst, ev["EventId"], parse_iso(ev["FireAt"]), ["retry_timer", owner.idx]
                    )
                )

    def _resume_child(self, inst: Instance, rec: Record) -> Callable[[], None]:
        child = self.store.get_instance(rec.child) if rec.child else None
        if child is None:
            return self._suborch_effect(inst, rec)
        if child["status"] in TERMINAL:
            now = self.clock.now()
            if child["status"] == "Completed":
                ev = event(EventType.SubOrchestrationInstanceCompleted, now, TaskScheduledId=rec.seq,
                           Result=child.get("output"))  # fmt: skip
            else:
                ev = event(EventType.SubOrchestrationInstanceFailed, now, TaskScheduledId=rec.seq,
                           Reason=child.get("output") or child["status"], Details="")  # fmt: skip
            return lambda: self._deliver_async(inst.instance_id, ev)
        return lambda: None  # the child is itself recovered and reports back when it ends
