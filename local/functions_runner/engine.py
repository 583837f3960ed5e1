"""The orchestration engine: plays the Durable extension's part for azure-functions-durable 1.7.

Each orchestrator *episode* replays the whole history through the SDK's own orchestrator handle (what the
Python worker calls), reads the cumulative action list it returns, checks the already-known prefix against
what earlier episodes produced (non-determinism), and turns new actions into history events and work:
activities on a bounded worker pool, durable timers on the clock, sub-orchestrations, continue-as-new.
Results come back as messages that are persisted before they are acknowledged, so a killed runner resumes
from storage; activities in flight at the time run again (at-least-once, as in Azure).

Sequence numbers are assigned exactly as the SDK (and DTFx) do: one per scheduled action except waits for
external events, plus, for ``*_with_retry`` calls, one for each retry timer and each re-attempt, taken when
the failure (or the retry timer) is processed. A message that triggers such an allocation is always the last
one delivered in its episode, so the runner's numbering cannot drift from the SDK's.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dmf.redact import redact

from .app_loader import DurableSettings, FunctionInfo
from .clock import Clock
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
from .invoker import Invoker
from .store import Store
from .worker import Worker, typed_value

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

    def row(self) -> dict[str, Any]:
        state = {"records": [vars(r) for r in self.records], "next_seq": self.next_seq}
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


@dataclass(order=True)
class _Timer:
    fire_at: datetime
    order: int
    kind: str = field(compare=False)  # "orch" | "trigger"
    action: Callable[[], None] = field(compare=False)
    key: tuple[str, str, int] | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)


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


class Engine:
    def __init__(
        self,
        functions: dict[str, FunctionInfo],
        store: Store,
        clock: Clock,
        invoker: Invoker,
        durable: DurableSettings,
    ) -> None:
        self.functions = functions
        self.store = store
        self.clock = clock
        self.invoker = invoker
        self.durable = durable
        self.cond = threading.Condition(threading.RLock())
        self.instances: dict[str, Instance] = {}
        self.busy = 0
        self._timers: list[_Timer] = []
        self._timer_order = itertools.count()
        self._timer_index: dict[tuple[str, str, int], _Timer] = {}
        self._orch_timers = 0
        self._orch_pool = ThreadPoolExecutor(durable.max_orchestrators, thread_name_prefix="orchestrator")
        self._activity_pool = ThreadPoolExecutor(durable.max_activities, thread_name_prefix="activity")
        self._cleanup = ThreadPoolExecutor(1, thread_name_prefix="pending-cleanup")
        self._stopping = False
        self._scheduler: threading.Thread | None = None
        self.errors: list[str] = []
        self.activity_calls = 0
        self.client_binding_json: str | None = None  # set by LocalRunner once its HTTP API is up
        self.worker: Worker  # set by LocalRunner: the real worker's index of the app
        self.episodes = 0
        self.replay_seconds = 0.0  # time spent inside the SDK's orchestrator handle (the replay itself)
        self.clock_holds = 0  # while > 0 the virtual clock does not auto-advance

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._recover()
        self._scheduler = threading.Thread(target=self._schedule_loop, name="runner-scheduler", daemon=True)
        self._scheduler.start()

    def stop(self) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        if self._scheduler:
            self._scheduler.join(5)
        self._orch_pool.shutdown(wait=False, cancel_futures=True)
        self._activity_pool.shutdown(wait=False, cancel_futures=True)
        self._cleanup.shutdown(wait=True)

    def add_clock_hold(self, n: int) -> None:
        with self.cond:
            self.clock_holds += n
            self.cond.notify_all()

    def add_busy(self, n: int) -> None:
        with self.cond:
            self.busy += n
            self.cond.notify_all()

    # ------------------------------------------------------------------ client operations
    def start_new(self, name: str, instance_id: str | None, input_json: str | None) -> str:
        fi = self.functions.get(name)
        if fi is None or fi.trigger_type != "orchestrationTrigger":
            raise LookupError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function."
            )
        instance_id = instance_id or uuid.uuid4().hex
        self._create_instance(name, instance_id, input_json, None, None)
        return instance_id

    def _create_instance(
        self,
        name: str,
        instance_id: str,
        input_json: str | None,
        parent_id: str | None,
        parent_seq: int | None,
    ) -> None:
        with self.cond:
            existing = self.instances.get(instance_id)
            row = None if existing else self.store.get_instance(instance_id)
            status = existing.status if existing else (row["status"] if row else None)
            if status is not None:
                blocked = self.durable.overridable_states.lower() == "nonrunningstates" and (
                    status in NON_RUNNING_OVERRIDE_BLOCKED
                )
                if blocked:
                    raise InstanceExistsError(
                        f"An Orchestration instance with the status {status} already exists."
                    )
                if existing and existing.status in ACTIVE:
                    self._cancel_timers(existing)
                self.store.delete_history(instance_id)
                self.store.delete_pending(instance_id, [m for m, _ in self.store.load_pending(instance_id)])
            now = iso(self.clock.now())
            inst = Instance(
                instance_id=instance_id, name=name, execution_id=uuid.uuid4().hex, status="Pending",
                input=input_json, created=now, updated=now, parent_id=parent_id, parent_seq=parent_seq,
                needs_start=True,
            )  # fmt: skip
            self.store.put_instance(inst.row())
            self.instances[instance_id] = inst
            self._schedule_episode(inst)

    def raise_event(self, instance_id: str, name: str, input_json: str | None) -> int:
        """202 when accepted, 404 unknown, 410 no longer running (the extension's status codes)."""
        with self.cond:
            inst = self.instances.get(instance_id)
            if inst is None:
                row = self.store.get_instance(instance_id)
                return 404 if row is None else 410
            if inst.status not in ACTIVE:
                return 410
            exec_id = inst.execution_id
        ev = event(EventType.EventRaised, self.clock.now(), Name=name, Input=input_json)
        self._deliver(instance_id, exec_id, ev)
        return 202

    def terminate(self, instance_id: str, reason: str | None) -> int:
        with self.cond:
            inst = self.instances.get(instance_id)
            if inst is None:
                return 404 if self.store.get_instance(instance_id) is None else 410
            if inst.status not in ACTIVE:
                return 410
            exec_id = inst.execution_id
        ev = event(EventType.ExecutionTerminated, self.clock.now(), Input=json.dumps(reason))
        self._deliver(instance_id, exec_id, ev, special=["terminate"])
        return 202

    def purge(self, instance_id: str) -> int:
        with self.cond:
            inst = self.instances.get(instance_id)
            if inst is not None and inst.status in ACTIVE:
                return 0  # running instances are not purged (as in Azure)
            self.instances.pop(instance_id, None)
        return 1 if self.store.delete_instance(instance_id) else 0

    # ------------------------------------------------------------------ messages and episodes
    def _deliver(
        self, instance_id: str, exec_id: str, ev: dict[str, Any], special: list[Any] | None = None
    ) -> None:
        with self.cond:
            inst = self.instances.get(instance_id)
            if inst is None or inst.execution_id != exec_id or inst.status not in ACTIVE:
                return  # a late result for a finished or replaced execution: dropped, as DTFx does
            if special is None and ev["EventType"] in (
                EventType.TaskFailed,
                EventType.SubOrchestrationInstanceFailed,
            ):
                rec = inst.rec_by_seq(ev["TaskScheduledId"])
                if rec is not None and rec.retry is not None:
                    special = ["retry_failed", rec.idx]
        msg = Msg(_msg_id(), ev, special)
        ev["RunnerMessageId"] = msg.id  # lets recovery tell applied messages from unapplied ones
        self.store.put_pending(instance_id, msg.id, {"event": ev, "special": special, "exec": exec_id})
        with self.cond:
            inst = self.instances.get(instance_id)
            if inst is None or inst.execution_id != exec_id:
                return
            inst.inbox.append(msg)
            self._schedule_episode(inst)

    def _schedule_episode(self, inst: Instance) -> None:
        # caller holds the lock
        if inst.episode_active or inst.episode_queued or self._stopping:
            return
        if not (inst.inbox or inst.needs_start):
            return
        inst.episode_queued = True
        self.busy += 1
        self._orch_pool.submit(self._run_episode, inst.instance_id)

    def _run_episode(self, instance_id: str) -> None:
        with self.cond:
            inst = self.instances[instance_id]
            inst.episode_queued = False
            if inst.status not in ACTIVE:
                self.busy -= 1
                self.cond.notify_all()
                return
            inst.episode_active = True
            msgs: list[Msg] = []
            while inst.inbox:
                m = inst.inbox.pop(0)
                msgs.append(m)
                if m.special:
                    break  # special messages close an episode (see module docstring)
        effects: list[Callable[[], None]] = []
        try:
            effects = self._episode(inst, msgs)
        except Exception as exc:
            msg = f"runner error in orchestration {inst.name} ({instance_id}): {exc}"
            log.exception(redact(msg))
            self.errors.append(msg)
            # Never leave an instance silently stuck on a runner fault (e.g. storage down): fail it visibly.
            inst.status, inst.output = "Failed", json.dumps(redact(msg))
            try:
                self.store.put_instance(inst.row())
            except Exception:
                log.exception("could not record the failure of %s", instance_id)
        finally:
            with self.cond:
                inst.episode_active = False
                self.episodes += 1
                for fx in effects:
                    fx()
                if inst.status in ACTIVE:
                    self._schedule_episode(inst)
                else:
                    self._cancel_timers(inst)
                    inst.history, inst.records, inst.inbox, inst.seq_map = (
                        [],
                        [],
                        [],
                        {},
                    )  # kept in storage, not in memory
                self.busy -= 1
                self.cond.notify_all()

    def _episode(self, inst: Instance, msgs: list[Msg]) -> list[Callable[[], None]]:
        now = self.clock.now()
        new: list[dict[str, Any]] = [event(EventType.OrchestratorStarted, now)]
        first = not inst.history
        if first:
            started = event(
                EventType.ExecutionStarted, now, Name=inst.name, Input=inst.input, Version="",
                OrchestrationInstance={"InstanceId": inst.instance_id, "ExecutionId": inst.execution_id},
                ParentInstance=(
                    {"OrchestrationInstance": {"InstanceId": inst.parent_id}, "TaskScheduleId": inst.parent_seq}
                    if inst.parent_id else None
                ),
            )  # fmt: skip
            new.append(started)
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
        for i, a in enumerate(flat[: len(inst.records)]):
            rec = inst.records[i]
            if rec.kind == "timer" and a.get("isCanceled") and not rec.cancelled:
                rec.cancelled = True
                key = (inst.instance_id, inst.execution_id, rec.seq or 0)
                effects.append(lambda key=key: self._cancel_timer(key))
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

    def _deliver_async(self, instance_id: str, ev: dict[str, Any]) -> None:
        """Hand a message to another instance from a worker thread (never under our own lock's I/O)."""
        with self.cond:
            target = self.instances.get(instance_id)
            if target is None:
                return
            exec_id = target.execution_id
            self.busy += 1

        def go() -> None:
            try:
                self._deliver(instance_id, exec_id, ev)
            finally:
                self.add_busy(-1)

        self._orch_pool.submit(go)

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
        if msgs:
            # Off the critical path: recovery ignores messages whose RunnerMessageId is already in history.
            self._cleanup.submit(self._delete_pending, inst.instance_id, [m.id for m in msgs])
        return effects

    def _delete_pending(self, instance_id: str, msg_ids: list[str]) -> None:
        try:
            self.store.delete_pending(instance_id, msg_ids)
        except Exception:
            log.warning(
                "could not delete applied messages of %s (harmless: skipped on recovery)", instance_id
            )

    # ------------------------------------------------------------------ effects: activities, timers, children
    def _activity_effect(self, inst: Instance, rec: Record) -> Callable[[], None]:
        instance_id, exec_id, seq, name, inp = (
            inst.instance_id,
            inst.execution_id,
            rec.seq,
            rec.name,
            rec.input,
        )

        def start() -> None:  # runs under the lock
            self.busy += 1
            self._activity_pool.submit(self._run_activity, instance_id, exec_id, seq, name, inp)

        return start

    def _run_activity(
        self, instance_id: str, exec_id: str, seq: int, name: str, input_json: str | None
    ) -> None:
        try:
            now_ev: dict[str, Any]
            fi = self.functions.get(name)
            try:
                if fi is None or fi.trigger_type != "activityTrigger":
                    raise LookupError(f"The activity function '{name}' doesn't exist.")
                self.activity_calls += 1
                result = self.call_activity(fi, input_json, instance_id)
                now_ev = event(EventType.TaskCompleted, self.clock.now(), TaskScheduledId=seq, Result=result)
            except Exception as exc:
                reason = f"Activity function '{name}' failed: {type(exc).__name__}: {exc}"
                with self.invoker.scope(instance_id=instance_id, function_name=name):
                    log.warning(redact(f"{reason} (instance {instance_id})"))
                details = _user_traceback(exc)
                now_ev = event(
                    EventType.TaskFailed, self.clock.now(), TaskScheduledId=seq,
                    Reason=redact(reason), Details=redact(details),
                )  # fmt: skip
            self._deliver(instance_id, exec_id, now_ev)
        except Exception:
            log.exception(
                "runner error delivering the result of activity %s (instance %s)", name, instance_id
            )
        finally:
            self.add_busy(-1)

    def call_activity(self, fi: FunctionInfo, input_json: str | None, instance_id: str | None) -> str:
        """Decode the input, call the activity, encode its result: the real worker's converters."""
        inputs = {fi.trigger["name"]: self.worker.json_data(input_json or "null")}
        # Activities may take a durable client input binding too (e.g. to raise events to other instances).
        client = fi.client_binding
        if client is not None:
            inputs[client["name"]] = self.worker.string_data(self.client_binding_json or "")

        def call(f: Any, kwargs: dict[str, Any], is_async: bool) -> Any:
            return self.invoker.call(f, kwargs, is_async, instance_id=instance_id, function_name=fi.name)

        return typed_value(self.worker.invoke(fi.name, inputs, call))

    def _timer_effect(
        self, inst: Instance, seq: int, fire_at: datetime, special: list[Any] | None
    ) -> Callable[[], None]:
        instance_id, exec_id = inst.instance_id, inst.execution_id
        key = (instance_id, exec_id, seq)

        def fire() -> None:
            ev = event(EventType.TimerFired, fire_at, TimerId=seq, FireAt=iso(fire_at))
            self._deliver(instance_id, exec_id, ev, special)

        def arm() -> None:  # under the lock
            inst.timer_keys.add((exec_id, seq))
            self.add_timer(fire_at, fire, kind="orch", key=key)

        return arm

    def _suborch_effect(self, inst: Instance, rec: Record) -> Callable[[], None]:
        parent_id, exec_id, seq, name, child, inp = (
            inst.instance_id, inst.execution_id, rec.seq, rec.name, rec.child, rec.input,
        )  # fmt: skip

        def start() -> None:
            self.busy += 1

            def go() -> None:
                try:
                    fi = self.functions.get(name)
                    if fi is None or fi.trigger_type != "orchestrationTrigger":
                        raise LookupError(f"The orchestrator function '{name}' doesn't exist.")
                    self._create_instance(name, child, inp, parent_id, seq)
                except Exception as exc:
                    ev = event(
                        EventType.SubOrchestrationInstanceFailed, self.clock.now(), TaskScheduledId=seq,
                        Reason=redact(str(exc)), Details="",
                    )  # fmt: skip
                    self._deliver(parent_id, exec_id, ev)
                finally:
                    self.add_busy(-1)

            self._orch_pool.submit(go)

        return start

    # ------------------------------------------------------------------ timers and the clock
    def add_timer(
        self,
        fire_at: datetime,
        action: Callable[[], None],
        kind: str,
        key: tuple[str, str, int] | None = None,
    ) -> _Timer:
        with self.cond:
            t = _Timer(fire_at, next(self._timer_order), kind, action, key)
            heapq.heappush(self._timers, t)
            if kind == "orch":
                self._orch_timers += 1
            if key is not None:
                self._timer_index[key] = t
            self.cond.notify_all()
            return t

    def _cancel_timer(self, key: tuple[str, str, int]) -> None:
        with self.cond:
            t = self._timer_index.pop(key, None)
            if t is not None and not t.cancelled:
                t.cancelled = True
                if t.kind == "orch":
                    self._orch_timers -= 1
                self.cond.notify_all()

    def cancel_timer(self, t: _Timer) -> None:
        with self.cond:
            if not t.cancelled:
                t.cancelled = True
                if t.kind == "orch":
                    self._orch_timers -= 1

    def _cancel_timers(self, inst: Instance) -> None:
        with self.cond:
            for exec_id, seq in list(inst.timer_keys):
                self._cancel_timer((inst.instance_id, exec_id, seq))
            inst.timer_keys.clear()

    def pending_orchestration_timers(self) -> int:
        with self.cond:
            return self._orch_timers

    def next_timer_due(self, kind: str | None = None) -> datetime | None:
        with self.cond:
            live = [t.fire_at for t in self._timers if not t.cancelled and (kind is None or t.kind == kind)]
            return min(live) if live else None

    def _pop_due(self, now: datetime) -> list[_Timer]:
        due = []
        while self._timers and (self._timers[0].cancelled or self._timers[0].fire_at <= now):
            t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            t.cancelled = True  # fired: no longer pending
            if t.kind == "orch":
                self._orch_timers -= 1
            if t.key is not None:
                self._timer_index.pop(t.key, None)
            due.append(t)
        return due

    def _schedule_loop(self) -> None:
        quiet_since: float | None = None
        while True:
            with self.cond:
                if self._stopping:
                    return
                due = self._pop_due(self.clock.now())
                if due:
                    # counted busy while firing, so the virtual clock cannot move under the deliveries
                    self.busy += 1
                elif self.clock.virtual:
                    if self.busy == 0 and self._orch_timers > 0 and not self.clock_holds:
                        # nothing runnable: after a short settle, jump to the earliest timer of any kind
                        if quiet_since is None:
                            quiet_since = time.monotonic()
                        elif time.monotonic() - quiet_since >= 0.005:
                            head = next(t for t in sorted(self._timers) if not t.cancelled)
                            self.clock.advance_to(head.fire_at)
                            quiet_since = None
                            continue
                        self.cond.wait(0.005)
                    else:
                        quiet_since = None
                        self.cond.wait(0.05)
                    continue
                else:
                    head = next((t for t in self._timers if not t.cancelled), None)
                    wait = 0.5
                    if head is not None:
                        wait = min(wait, max(0.001, (head.fire_at - self.clock.now()).total_seconds()))
                    self.cond.wait(wait)
                    continue
            try:
                for t in due:
                    try:
                        t.action()
                    except Exception:
                        log.exception("runner error firing a timer")
            finally:
                self.add_busy(-1)

    def idle(self) -> bool:
        with self.cond:
            return self.busy == 0

    # ------------------------------------------------------------------ recovery after a restart
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
            inst.history = self.store.load_history(instance_id, inst.execution_id)
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
