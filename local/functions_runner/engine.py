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

import itertools
import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from dmf.redact import redact

from .app_loader import DurableSettings, FunctionInfo
from .clock import Clock
from .history import (
    EventType,
    event,
    iso,
)
from .instances import (
    ACTIVE,
    CUSTOM_STATUS_LIMIT_BYTES,
    NON_RUNNING_OVERRIDE_BLOCKED,
    TERMINAL,
    Instance,
    InstanceExistsError,
    Msg,
    NonDeterminismError,
    Record,
    _msg_id,
    _user_traceback,
    custom_status_too_large,
)
from .invoker import Invoker
from .recovery import Recovery
from .replay import Replayer
from .scheduler import Scheduler, _Timer
from .store import Store
from .worker import Worker, typed_value

__all__ = [
    "ACTIVE",
    "CUSTOM_STATUS_LIMIT_BYTES",
    "NON_RUNNING_OVERRIDE_BLOCKED",
    "TERMINAL",
    "Engine",
    "Instance",
    "InstanceExistsError",
    "Msg",
    "NonDeterminismError",
    "Record",
    "custom_status_too_large",
]

log = logging.getLogger("local.functions_runner")


class Engine(Replayer, Scheduler, Recovery):
    """Client operations, message delivery, episodes and effects; replay, timers and recovery are mixed in."""

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
                    # Ended: the row in storage is its record (status, raise, terminate and re-create read it,
                    # as after a restart); memory keeps only what runs, so a long-lived runner stays flat.
                    if self.instances.get(instance_id) is inst:
                        del self.instances[instance_id]
                self.busy -= 1
                self.cond.notify_all()

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
