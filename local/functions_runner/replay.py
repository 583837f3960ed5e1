"""Episodes: replay the history through the SDK's orchestrator handle, check it, turn new actions into work.

Part of ``Engine`` (see ``engine.py``): an episode replays the whole history, reads the cumulative action
list, checks the already-known prefix against what earlier episodes produced (non-determinism), and turns
new actions into history events and effects; ``_commit`` stores the new events before any effect runs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from dmf.redact import redact

from .history import (
    SEQUENCED_ACTIONS,
    ActionSignature,
    ActionType,
    EventType,
    event,
    flatten_actions,
    iso,
    parse_iso,
    parse_orchestrator_failure,
)
from .instances import ACTIVE, Instance, Msg, Record, custom_status_too_large
from .worker import typed_value

log = logging.getLogger("local.functions_runner")


class Replayer:
    """The replay half of ``Engine``."""

    def _episode(self, inst: Instance, msgs: list[Msg]) -> list[Callable[[], None]]:
        now = self.clock.now()
        new = self._opening_events(inst, now)
        inst.needs_start = False
        terminate = next((m for m in msgs if m.special and m.special[0] == "terminate"), None)
        effects: list[Callable[[], None]] = []
        start_len = len(inst.history)
        if terminate is not None:
            new.append(terminate.event)
            reason = terminate.event.get("Input")
            self._finish(inst, "Terminated", reason, new, effects, failure=("terminated", reason or ""))
            return self._commit(inst, start_len, new, msgs, effects)

        for m in msgs:
            new.append(m.event)
            self._mark_done(inst, m.event)
        history = inst.history + new
        state, error = self._replay(inst, history)
        inst.updated = iso(now)
        too_big = None
        if state is not None and state.get("customStatus") is not None:
            custom = json.dumps(state.get("customStatus"))
            too_big = custom_status_too_large(custom)
            if too_big is None:
                inst.custom_status = custom
        if inst.status == "Pending":
            inst.status = "Running"
        if too_big is not None:  # the extension refuses the status and fails the orchestration
            log.error(redact(too_big))
            self._finish(
                inst, "Failed", json.dumps(too_big), new, effects, failure=("ArgumentException", too_big)
            )
            return self._commit(inst, start_len, new, msgs, effects)

        flat = flatten_actions(state.get("actions", [])) if state else []
        problem = self._check_determinism(
            inst, flat, done=bool(state and state.get("isDone")), failed=error is not None
        )
        if problem:
            log.error(redact(problem))
            self.errors.append(problem)
            self._finish(
                inst, "Failed", json.dumps(problem), new, effects, failure=("NonDeterminismError", problem)
            )
            return self._commit(inst, start_len, new, msgs, effects)

        scheduled: list[dict[str, Any]] = []
        # A failing replay's new actions are never started: the instance is about to fail.
        for i in range(len(inst.records), len(flat) if error is None else 0):
            unsupported = self._new_action(inst, i, flat[i], now, scheduled, effects)
            if unsupported:
                self._finish(
                    inst,
                    "Failed",
                    json.dumps(unsupported),
                    new,
                    effects,
                    failure=("NotSupported", unsupported),
                )
                return self._commit(inst, start_len, new, msgs, effects)
        self._cancel_dropped_timers(inst, flat, effects)
        last = msgs[-1] if msgs else None
        if last is not None and last.special and error is None:
            self._special(inst, last, now, scheduled, effects)
        new.extend(scheduled)

        if error is not None:
            message = f"Orchestrator function '{inst.name}' failed: {error}"
            self._finish(inst, "Failed", json.dumps(message), new, effects, failure=(message, error))
        elif state and state.get("isDone"):
            can = next((a for a in flat if a.get("actionType") == ActionType.ContinueAsNew), None)
            if can is not None:
                self._continue_as_new(inst, can.get("input"), new, effects)
            else:
                output = json.dumps(state.get("output"))
                self._finish(inst, "Completed", output, new, effects)
        return self._commit(inst, start_len, new, msgs, effects)

    @staticmethod
    def _opening_events(inst: Instance, now: datetime) -> list[dict[str, Any]]:
        """OrchestratorStarted, and ExecutionStarted when the execution has no history yet."""
        new: list[dict[str, Any]] = [event(EventType.OrchestratorStarted, now)]
        if not inst.history:
            started = event(
                EventType.ExecutionStarted, now, Name=inst.name, Input=inst.input, Version="",
                OrchestrationInstance={"InstanceId": inst.instance_id, "ExecutionId": inst.execution_id},
                ParentInstance=(
                    {"OrchestrationInstance": {"InstanceId": inst.parent_id}, "TaskScheduleId": inst.parent_seq}
                    if inst.parent_id else None
                ),
            )  # fmt: skip
            new.append(started)
        return new

    def _cancel_dropped_timers(
        self, inst: Instance, flat: list[dict[str, Any]], effects: list[Callable[[], None]]
    ) -> None:
        """Timers the replay now marks cancelled (a ``task_any`` another task won) stop pending."""
        for i, a in enumerate(flat[: len(inst.records)]):
            rec = inst.records[i]
            if rec.kind == "timer" and a.get("isCanceled") and not rec.cancelled:
                rec.cancelled = True
                key = (inst.instance_id, inst.execution_id, rec.seq or 0)
                effects.append(lambda key=key: self._cancel_timer(key))

    def _replay(
        self, inst: Instance, history: list[dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, str | None]:
        fi = self.functions.get(inst.name)
        if fi is None or fi.trigger_type != "orchestrationTrigger":
            return None, f"The orchestrator function '{inst.name}' doesn't exist."
        body = {
            "history": history,
            "instanceId": inst.instance_id,
            "isReplaying": len(history) > 2,
            "parentInstanceId": inst.parent_id,
            "input": inst.input,
            "upperSchemaVersion": 1,
            "upperSchemaVersionNew": 2,
            # The Azure Storage provider's limits: timers longer than 6 days are split into 3-day ones.
            "maximumShortTimerDuration": "6.00:00:00",
            "longRunningTimerIntervalDuration": "3.00:00:00",
        }
        t0 = time.perf_counter()
        try:
            with self.invoker.scope(instance_id=inst.instance_id, function_name=inst.name):
                out = self.worker.invoke(
                    fi.name,
                    {fi.trigger["name"]: self.worker.json_data(json.dumps(body))},
                    call=lambda f, kwargs, _is_async: f(**kwargs),
                )
            return json.loads(typed_value(out)), None
        except Exception as exc:
            message, state = parse_orchestrator_failure(exc)
            return state, message.strip()
        finally:
            self.replay_seconds += time.perf_counter() - t0

    def _check_determinism(
        self, inst: Instance, flat: list[dict[str, Any]], done: bool, failed: bool
    ) -> str | None:
        """Replay re-issues every action it issued before (the history only grows), in the same order."""
        for i, rec in enumerate(inst.records):
            expected = ActionSignature.from_list(rec.sig)
            if i >= len(flat):
                if failed:
                    return None  # the failure itself is reported
                got = "nothing"
            else:
                sig = ActionSignature.of(flat[i])
                if sig == expected:
                    continue
                got = sig.describe()
            return (
                f"Non-deterministic workflow detected in orchestration '{inst.name}' (instance {inst.instance_id}) "
                f"at step {i}: a previous execution scheduled {expected.describe()}, but the replay scheduled "
                f"{got}. Orchestrator code must not depend on datetime.now(), random values, I/O or changed code."
            )
        return None

    def _new_action(
        self, inst: Instance, i: int, a: dict[str, Any], now: datetime,
        scheduled: list[dict[str, Any]], effects: list[Callable[[], None]],
    ) -> str | None:  # fmt: skip
        at = ActionType(a["actionType"])
        seq = None
        if at in SEQUENCED_ACTIONS:
            seq = inst.next_seq
            inst.next_seq += 1
        sig = ActionSignature.of(a).to_list()
        if at in (ActionType.CallActivity, ActionType.CallActivityWithRetry):
            retry = self._retry_of(a) if at == ActionType.CallActivityWithRetry else None
            rec = Record(i, sig, "activity", seq, a["functionName"], a.get("input"), retry=retry)
            inst.records.append(rec)
            scheduled.append(event(EventType.TaskScheduled, now, seq, Name=rec.name, Input=rec.input))
            effects.append(self._activity_effect(inst, rec))
        elif at == ActionType.CreateTimer:
            rec = Record(i, sig, "timer", seq, fire_at=a["fireAt"], cancelled=bool(a.get("isCanceled")))
            inst.records.append(rec)
            scheduled.append(event(EventType.TimerCreated, now, seq, FireAt=rec.fire_at))
            if not rec.cancelled:
                effects.append(self._timer_effect(inst, rec.seq, parse_iso(rec.fire_at), None))
        elif at in (ActionType.CallSubOrchestrator, ActionType.CallSubOrchestratorWithRetry):
            retry = self._retry_of(a) if at == ActionType.CallSubOrchestratorWithRetry else None
            child = a.get("instanceId") or f"{inst.instance_id}:{seq:04d}"
            rec = Record(i, sig, "suborch", seq, a["functionName"], a.get("input"), child=child, retry=retry)
            inst.records.append(rec)
            scheduled.append(
                event(
                    EventType.SubOrchestrationInstanceCreated,
                    now,
                    seq,
                    Name=rec.name,
                    InstanceId=child,
                    Input=rec.input,
                )
            )
            effects.append(self._suborch_effect(inst, rec))
        elif at == ActionType.WaitForExternalEvent:
            inst.records.append(Record(i, sig, "event", None, a.get("externalEventName")))
        elif at == ActionType.ContinueAsNew:
            inst.records.append(Record(i, sig, "continue", seq))
        else:
            inst.records.append(Record(i, sig, "other", seq))
            return f"{at.name} (durable entities / durable HTTP) is not supported by the local runner"
        return None

    @staticmethod
    def _retry_of(a: dict[str, Any]) -> dict[str, Any]:
        ro = a.get("retryOptions") or {}
        return {
            "first_ms": int(ro.get("firstRetryIntervalInMilliseconds", 1000)),
            "max": int(ro.get("maxNumberOfAttempts", 1)),
            "attempts": 1,
        }

    def _special(
        self,
        inst: Instance,
        msg: Msg,
        now: datetime,
        scheduled: list[dict[str, Any]],
        effects: list[Callable[[], None]],
    ) -> None:
        kind, idx = msg.special[0], msg.special[1]
        rec = inst.records[idx]
        if kind == "retry_failed":
            timer_seq = inst.next_seq
            inst.next_seq += 1
            fire_at = now + timedelta(milliseconds=rec.retry["first_ms"])
            scheduled.append(event(EventType.TimerCreated, now, timer_seq, FireAt=iso(fire_at)))
            effects.append(self._timer_effect(inst, timer_seq, fire_at, ["retry_timer", idx]))
        elif kind == "retry_timer":
            if rec.retry["attempts"] >= rec.retry["max"]:
                rec.done = True  # the SDK now fails the task with the last error
                return
            rec.retry["attempts"] += 1
            rec.seq = inst.next_seq
            inst.next_seq += 1
            if rec.kind == "activity":
                scheduled.append(event(EventType.TaskScheduled, now, rec.seq, Name=rec.name, Input=rec.input))
                effects.append(self._activity_effect(inst, rec))
            else:
                rec.child = f"{rec.child.split('#')[0]}#{rec.retry['attempts']}"
                scheduled.append(
                    event(EventType.SubOrchestrationInstanceCreated, now, rec.seq, Name=rec.name,
                          InstanceId=rec.child, Input=rec.input)
                )  # fmt: skip
                effects.append(self._suborch_effect(inst, rec))

    def _mark_done(self, inst: Instance, ev: dict[str, Any]) -> None:
        et = ev["EventType"]
        if et in (EventType.TaskCompleted, EventType.SubOrchestrationInstanceCompleted):
            rec = inst.rec_by_seq(ev["TaskScheduledId"])
        elif et in (EventType.TaskFailed, EventType.SubOrchestrationInstanceFailed):
            rec = inst.rec_by_seq(ev["TaskScheduledId"])
            if rec is not None and rec.retry is not None:
                return  # not done until the retries are spent
        elif et == EventType.TimerFired:
            rec = inst.rec_by_seq(ev["TimerId"])
        else:
            return
        if rec is not None:
            rec.done = True

    def _finish(
        self, inst: Instance, status: str, output: str | None, new: list[dict[str, Any]],
        effects: list[Callable[[], None]], failure: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        now = self.clock.now()
        inst.status = status
        inst.output = output
        inst.updated = iso(now)
        if status != "Terminated":
            new.append(event(EventType.ExecutionCompleted, now, OrchestrationStatus=status, Result=output))
        if inst.parent_id:
            parent_id, parent_seq = inst.parent_id, inst.parent_seq
            if status == "Completed":
                ev = event(
                    EventType.SubOrchestrationInstanceCompleted,
                    now,
                    TaskScheduledId=parent_seq,
                    Result=output,
                )
            else:
                reason, details = failure or (status, "")
                ev = event(
                    EventType.SubOrchestrationInstanceFailed, now, TaskScheduledId=parent_seq,
                    Reason=redact(reason), Details=redact(details),
                )  # fmt: skip
            effects.append(lambda: self._deliver_async(parent_id, ev))
        log.info("orchestration %s (%s) %s", inst.name, inst.instance_id, status.lower())

    def _continue_as_new(
        self,
        inst: Instance,
        new_input: str | None,
        new: list[dict[str, Any]],
        effects: list[Callable[[], None]],
    ) -> None:
        now = self.clock.now()
        new.append(
            event(EventType.ExecutionCompleted, now, OrchestrationStatus="ContinuedAsNew", Result=None)
        )
        self._cancel_timers(inst)
        old_exec = inst.execution_id
        inst.continue_with = (old_exec, new_input)
        log.info("orchestration %s (%s) continued as new", inst.name, inst.instance_id)

    def _commit(
        self,
        inst: Instance,
        start: int,
        new: list[dict[str, Any]],
        msgs: list[Msg],
        effects: list[Callable[[], None]],
    ) -> list[Callable[[], None]]:
        new.append(event(EventType.OrchestratorCompleted, self.clock.now()))
        can = inst.continue_with
        if can is not None:
            inst.continue_with = None
            # Continue-as-new: the old execution's history goes; messages not yet delivered carry over,
            # results addressed to the old execution do not.
            inst.execution_id = uuid.uuid4().hex
            inst.input = can[1]
            inst.history, inst.records, inst.next_seq, inst.seq_map = [], [], 0, {}
            inst.output, inst.needs_start = None, True
            with self.cond:
                keep = [m for m in inst.inbox if m.event["EventType"] == EventType.EventRaised]
                dropped = [m.id for m in inst.inbox if m not in keep]
                inst.inbox = keep
            self.store.delete_pending(inst.instance_id, dropped)
        else:
            for ev in new:
                ev["IsPlayed"] = True  # once committed, every event is history the next replay re-plays
            inst.history.extend(new)
            self.store.append_history(inst.instance_id, inst.execution_id, start, new)
        self.store.put_instance(inst.row())
        if can is not None:
            # only once the new execution is recorded: a crash in between must not lose the instance
            self.store.delete_history(inst.instance_id)
        # Applied messages' pending rows go off the critical path, in batches: when the execution ends, or
        # every 100 (recovery skips messages whose RunnerMessageId is already in history meanwhile). One
        # delete per episode was a fifth of the runner's storage calls.
        inst.applied.extend(m.id for m in msgs)
        if inst.applied and (len(inst.applied) >= 100 or can is not None or inst.status not in ACTIVE):
            self._cleanup.submit(self._delete_pending, inst.instance_id, inst.applied)
            inst.applied = []
        return effects

    def _delete_pending(self, instance_id: str, msg_ids: list[str]) -> None:
        try:
            self.store.delete_pending(instance_id, msg_ids)
        except Exception:
            log.warning(
                "could not delete applied messages of %s (harmless: skipped on recovery)", instance_id
            )
