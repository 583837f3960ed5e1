"""Soak (issue #14): ``python -m bench.soak [--drops N] [--messages N] [--wave N]``.

N drops and N recurring-export messages arrive in waves over virtual hours (virtual clock: one wave every
20 virtual minutes) while ~10% of every F&O call fails (429, 503, connection reset, or the answer lost after
F&O did the work: 2.5% each, seeded). Drains run each wave (and again after F&O's redelivery for what the
faults left un-acked); housekeeping runs every few waves with HISTORY_RETENTION_DAYS set so that its cutoff
falls in the middle of the run.

Reported (``bench/results/reliability-soak.md``, gathered into ``bench/RELIABILITY.md``):

- RSS of this process (the local runner and the app: what a Functions worker holds), of the F&O emulator
  (run apart, as F&O is: its job history and data grow by design) and of Azurite: at start (after warm-up),
  peak, end, and per quarter of the run; where this process's memory sits (allocators, owners);
- outcome rows: every drop has exactly one drop row, Succeeded, its data in F&O, imported once, never two
  imports at once; every message archived once, acknowledged, one Archived row, no ack before its archive;
- housekeeping: every ended orchestration created before the cutoff purged (instance and history), every
  other one kept.

Exit status 1 when any count is off. Full scale (2,000 + 2,000) is the default; ``--drops 200 --messages 200``
for a shorter run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from bench.memory import Breakdown, breakdown, deep_size, trimmed
from local.azurite import Azurite
from local.embedded_stack import VIRTUAL_START
from local.reliability import EXPORT_ACTIVITY, NEVER, World, app_overrides, audit_acks, count

OUT = Path(__file__).resolve().parent / "results" / "reliability-soak.md"
WAVE_MINUTES = 20


def _arena_cap(wanted: int, argv: list[str] | None) -> None:
    """Run under ``MALLOC_ARENA_MAX=wanted`` as the deployment does (glibc reads it only at process start,
    hence the re-exec). 0 leaves glibc's default (8 arenas per core)."""
    if wanted and os.environ.get("MALLOC_ARENA_MAX") != str(wanted):
        env = {**os.environ, "MALLOC_ARENA_MAX": str(wanted)}
        args = sys.argv[1:] if argv is None else argv
        os.execve(sys.executable, [sys.executable, "-m", "bench.soak", *args], env)  # noqa: S606  # nosec B606


class RssSampler:
    def __init__(self, pids: dict[str, int], every: float = 0.5) -> None:
        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        # One float per sample and process (MiB): the sampler is in the process it measures.
        self.samples = {k: array("f") for k in pids}
        self.every = every
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for k, p in self.procs.items():
            try:
                self.samples[k].append(p.memory_info().rss / 2**20)
            except psutil.Error:
                self.samples[k].append(0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def start(self) -> RssSampler:
        self._t.start()
        return self

    def stop(self) -> None:
        """Stop sampling, with a last sample; once (later calls do nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._t.join(5)
        self._sample()

    def summary(self, key: str) -> dict[str, float]:
        vals = list(self.samples[key])
        q = max(1, len(vals) // 4)
        quarters = [max(vals[i * q : (i + 1) * q] or [0]) for i in range(4)]
        return {"start": vals[0], "peak": max(vals), "end": vals[-1], "quarters": quarters}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drops", type=int, default=2000)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--wave", type=int, default=50, help="drops (and messages) per wave")
    p.add_argument("--fault-rate", type=float, default=0.10)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument(
        "--malloc-arena-max",
        type=int,
        default=2,
        help="glibc arenas, as infra/app/function.bicep sets (0: glibc's default)",
    )
    ns = p.parse_args(argv)
    _arena_cap(ns.malloc_arena_max, argv)
    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("LOG_LEVEL", "ERROR")

    from local.samples import customer_groups_csv

    started = time.monotonic()
    location = Path(tempfile.mkdtemp(prefix="azurite-soak-"))
    # What has started so far, stopped in reverse order however the run ends (a failed start included).
    cleanup = ExitStack()
    cleanup.callback(shutil.rmtree, location, ignore_errors=True)
    waves = max(1, -(-max(ns.drops, ns.messages) // ns.wave))
    virtual_span = timedelta(minutes=WAVE_MINUTES * waves)
    # The purge cutoff (real now - retention, as housekeeping computes it) falls mid-run on the virtual clock.
    retention_days = (datetime.now(UTC) - (VIRTUAL_START + virtual_span / 2)).total_seconds() / 86400
    try:
        stack, sampler, world = _start(ns, location, cleanup, retention_days)
    except BaseException:
        cleanup.close()
        raise
    admin = stack.emu.admin
    wave_log: list[str] = []
    wave_memory: list[Breakdown] = []
    held: list[dict[str, float]] = []  # whose state holds the memory in use: after wave 1, at the end
    try:
        d = m = 0
        for w in range(waves):
            t0 = time.monotonic()
            for _ in range(min(ns.wave, ns.drops - d)):
                name = f"USMF/CustomerGroups-Import/w{w:03d}/Customer groups__{d}.csv"
                world.drops.append(name)
                world.drop_ids.append(f"S{d}")
                stack.drop(name, customer_groups_csv([f"S{d}"]))
                d += 1
            for _ in range(min(ns.wave, ns.messages - m)):
                world.messages.append(
                    admin.seed_outbound(EXPORT_ACTIVITY, b"PK\x03\x04" + os.urandom(256 + m % 512))
                )
                m += 1
            stack.runner.fire_timer("drain_timer")
            stack.settle(timeout=900)
            if w % 4 == 3:
                stack.runner.fire_timer("housekeeping_timer")
            stack.runner.advance(timedelta(minutes=WAVE_MINUTES))
            wave_memory.append(breakdown())
            if w == 0:
                held.append(_held(stack, world, sampler))
            wave_log.append(
                f"wave {w + 1}/{waves}: {d} drops, {m} messages, {time.monotonic() - t0:.0f} s, {wave_memory[-1].line()}"
            )
            print(wave_log[-1], flush=True)
        # What the faults left un-acked comes back after F&O's visibility timeout.
        for _ in range(8):
            acked = {x["correlationId"]: x["status"] for x in admin.outbound(EXPORT_ACTIVITY)}
            if all(acked.get(c) == "Acked" for c in world.messages):
                break
            stack.runner.advance(timedelta(seconds=1801))
            stack.runner.fire_timer("drain_timer")
            stack.settle(timeout=600)
        stack.runner.wait_until_idle(timeout=300)
        sampler.stop()
        wave_memory.append(breakdown())
        held.append(_held(stack, world, sampler))
        after_trim = trimmed()
        admin.clear_faults()
        # Housekeeping as configured: ended instances created before the cutoff go, the rest stay.
        store = stack.runner.engine.store
        before = store.query_instances(None, None, None, None)
        # Re-aim the retention at the median creation time of what is left (the virtual clock ran past the
        # planned span while imports were polled), so the final purge must both purge and keep.
        created_all = sorted(datetime.fromisoformat(str(r["created"]).replace("Z", "+00:00")) for r in before)
        if created_all:
            median = created_all[len(created_all) // 2]
            retention_days = (datetime.now(UTC) - median).total_seconds() / 86400
            os.environ["HISTORY_RETENTION_DAYS"] = f"{retention_days:.9f}"
            from dmf.pipeline import services as services_mod
            from dmf.settings import get_settings

            get_settings.cache_clear()
            services_mod._services.cache_clear()
        stack.runner.fire_timer("housekeeping_timer")
        stack.runner.wait_until_idle(timeout=300)
        after = {r["instance_id"] for r in store.query_instances(None, None, None, None)}
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        terminal = {"Completed", "Failed", "Terminated", "Canceled"}

        def created(r: dict) -> datetime:
            return datetime.fromisoformat(str(r["created"]).replace("Z", "+00:00"))

        due = {r["instance_id"] for r in before if r["status"] in terminal and created(r) < cutoff}
        due.discard(None)
        kept_ok = {r["instance_id"] for r in before} - due
        house = {
            "instances before": len(before),
            "due for purge": len(due),
            "due but still there": len(due & after),
            "history left for purged": sum(1 for r in before if r["instance_id"] in due - after
                                           and store.load_history(r["instance_id"], r["execution_id"])),
            "not due but purged": len(kept_ok - after),
            "kept": len(after),
        }  # fmt: skip
        rows = stack.outcomes()
        counts = count(
            rows=rows, executions=admin.executions(),
            data_ids={r["CUSTOMERGROUPID"] for r in admin.data("USMF", "Customer groups")},
            outbound={x["correlationId"]: x["status"] for x in admin.outbound(EXPORT_ACTIVITY)},
            inbound_messages=[], archives=stack.blob_names("ARCHIVE_CONTAINER"), violations=admin.violations,
            peak_imports=admin.peak_concurrent_imports, world=world, flows=("inbound", "outbound drain"),
        )  # fmt: skip
        drop_rows = Counter(
            str(r.get("SourceBlob", "")).split("/", 1)[-1] for r in rows if r.get("Kind") == "drop"
        )
        exact = {
            "drops with no drop row": sum(1 for n in world.drops if drop_rows[n] == 0),
            "drops with more than one drop row": sum(1 for n in world.drops if drop_rows[n] > 1),
            "drop rows not Succeeded": sum(1 for r in rows if r.get("Kind") == "drop" and r.get("Status") != "Succeeded"),
        }  # fmt: skip
        calls, by_fault = admin.call_counts()
        faults = Counter(by_fault)
        errors = admin.server_errors()
    finally:
        cleanup.close()
    seconds = time.monotonic() - started
    proc, emu, azr = (sampler.summary(k) for k in ("process", "emulator", "azurite"))
    ok = (
        all(n == 0 for c in counts.values() for n in c.values())
        and all(n == 0 for n in exact.values())
        and house["due but still there"] == 0
        and house["history left for purged"] == 0
        and house["not due but purged"] == 0
        and not errors
    )
    cmd = "python -m bench.soak" + (
        "" if (ns.drops, ns.messages) == (2000, 2000) else f" --drops {ns.drops} --messages {ns.messages}"
    )
    lines = [
        f"# Reliability: soak of {len(world.drops):,} drops and {len(world.messages):,} messages",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; `{cmd}` (wave {ns.wave}); **{seconds:.0f} s** wall, "
        f"{virtual_span.total_seconds() / 3600:.1f} virtual hours ({waves} waves every {WAVE_MINUTES} virtual minutes).",
        f"Scale: **{len(world.drops)} drops and {len(world.messages)} outbound messages**; "
        f"{sum(faults.values())} of {calls} F&O calls faulted ({100 * sum(faults.values()) / max(calls, 1):.1f}%: "
        + ", ".join(f"{k} × {v}" for k, v in sorted(faults.items())) + ").",
        "",
        "| RSS (MiB) | start | peak | end | max per quarter of the run |",
        "|---|---|---|---|---|",
        *(f"| {label} | {r['start']:.0f} | {r['peak']:.0f} | {r['end']:.0f} | "
          + " / ".join(f"{q:.0f}" for q in r["quarters"]) + " |"
          for label, r in (("this process: local runner + app (the worker's share)", proc),
                           ("F&O emulator (run apart; grows with F&O's data and job history)", emu),
                           ("Azurite", azr))),
        "",
        *_memory_lines(wave_memory, after_trim, ns, len(world.drops)),
        "",
        *_held_lines(held, ns, len(world.drops)),
        "",
        "| check | count (must be 0) |",
        "|---|---|",
        *(f"| inbound: {k} | {v} |" for k, v in counts["inbound"].items()),
        *(f"| outbound drain: {k} | {v} |" for k, v in counts["outbound drain"].items()),
        *(f"| {k} | {v} |" for k, v in exact.items()),
        f"| housekeeping: ended instances created before the cutoff still there | {house['due but still there']} |",
        f"| housekeeping: history left for purged instances | {house['history left for purged']} |",
        f"| housekeeping: instances purged that were not due | {house['not due but purged']} |",
        f"| emulator errors | {len(errors)} |",
        "",
        f"Housekeeping: ran every 4 waves (HISTORY_RETENTION_DAYS aimed mid-run); for the final check it was "
        f"set to {retention_days:.6f} (cutoff at the median creation time of the instances left); of {house['instances before']} "
        f"instances, {house['due for purge']} were due and purged, {house['kept']} kept. Result: **{'all 0' if ok else 'FAILED'}**.",
        "",
        "<details><summary>waves</summary>",
        "",
        *(f"- {x}" for x in wave_log),
        "",
        "</details>",
    ]  # fmt: skip
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"counts": counts, "exact": exact, "house": house}))
    from bench.reliability import _gather

    _gather()
    return 0 if ok else 1


def _start(ns: argparse.Namespace, location: Path, cleanup: ExitStack, retention_days: float) -> tuple:
    """Azurite, the stack (F&O apart) with its faults, the ack audit and the RSS sampler; each registered
    with ``cleanup`` as it starts."""
    from local.embedded_stack import Stack
    from local.fno_emulator import EmulatorConfig

    az = Azurite(location=location).start()
    cleanup.callback(az.stop)
    cfg = EmulatorConfig()
    cfg.fault_seed = 14
    # The soak counts calls and faults (admin.call_counts), so F&O's call log need not keep every call: a
    # log of every call is the largest thing the process would otherwise hold at the end.
    cfg.call_log_size = 1000
    stack = Stack(
        az, "s" + uuid.uuid4().hex[:12], emulator_config=cfg, emulator_process=True,
        **app_overrides(HISTORY_RETENTION_DAYS=f"{retention_days:.9f}", ARCHIVE_RETENTION_DAYS="0",
                        HOUSEKEEPING_SCHEDULE=NEVER, LOG_LEVEL="ERROR"),
    )  # fmt: skip
    cleanup.callback(stack.stop)
    stack.start()
    logging.getLogger().setLevel(logging.ERROR)
    world = World(export=False)
    cleanup.callback(audit_acks(stack, world.early_acks))
    rate = ns.fault_rate / 4
    for kind in ("429", "503", "drop", "after_503"):
        stack.emu.admin.inject_fault("*", kind, rate=rate, retry_after=1 if kind == "429" else None)
    sampler = RssSampler({"process": os.getpid(), "emulator": stack.emu.pid, "azurite": az.proc.pid}).start()
    cleanup.callback(sampler.stop)
    return stack, sampler, world


def _module_state(*prefixes: str) -> list[dict]:
    """Module globals of these packages: where module-level caches and clients live."""
    return [
        vars(m)
        for n, m in list(sys.modules.items())
        if m and any(n == p or n.startswith(p + ".") for p in prefixes)
    ]


def _held(stack: object, world: object, sampler: RssSampler) -> dict[str, float]:
    """MiB of objects each part of this process holds. The soak's own records grow by design; the runner and
    the app must not. (The emulator runs apart; its RSS is in the table above.)"""
    app = _module_state("function_app", "dmf", "triggers", "activities", "orchestrators")
    runner = stack.runner  # type: ignore[attr-defined]
    return {
        "runner (host imitation)": deep_size(
            [runner, *_module_state("local.functions_runner")], stop=tuple(app)
        ),
        "app (module state: caches, clients)": deep_size(app, stop=(runner,)),
        "the soak's own records": deep_size([world, sampler.samples]),
    }


def _thousands_after_wave_1(ns: argparse.Namespace, drops: int) -> float:
    """Drop-and-message pairs after the first wave, in thousands: the unit growth is given in."""
    return max(drops - min(ns.wave, drops), 1) / 1000


def _held_lines(held: list[dict[str, float]], ns: argparse.Namespace, drops: int) -> list[str]:
    first, end = held[0], held[-1]
    pairs = _thousands_after_wave_1(ns, drops)
    return [
        "Objects each part of the process holds (MiB, reachable from it, counted once):",
        "",
        "| | after wave 1 | end | growth per 1,000 pairs |",
        "|---|---|---|---|",
        *(f"| {k} | {first[k]:.1f} | {end[k]:.1f} | {(end[k] - first[k]) / pairs:+.1f} |" for k in first),
    ]


def _memory_lines(waves: list[Breakdown], end: Breakdown, ns: argparse.Namespace, drops: int) -> list[str]:
    """Where the memory sits after the first wave (warm: every code path has run) and at the end, and the
    growth between them per 1,000 drop-and-message pairs."""
    first = waves[0]
    pairs = _thousands_after_wave_1(ns, drops)

    def per_k(a: float, b: float) -> str:
        return f"{(b - a) / pairs:+.1f}"

    arenas = f"MALLOC_ARENA_MAX={ns.malloc_arena_max}" if ns.malloc_arena_max else "glibc's default arenas"
    return [
        f"Where this process's memory sits ({arenas}; MiB; 'free' is held by the allocator, not in use):",
        "",
        "| | RSS | glibc heap in use | glibc heap free | Python objects (pymalloc) in use | pymalloc arenas | threads |",
        "|---|---|---|---|---|---|---|",
        *(f"| {label} | {b.rss:.0f} | {b.heap_in_use:.0f} | {b.heap_free:.0f} | {b.py_in_use:.0f} | {b.py_arenas:.0f} | {b.threads} |"
          for label, b in (("after wave 1", first), ("end", waves[-1]), ("end, after gc + malloc_trim(0)", end))),
        f"| growth per 1,000 pairs after wave 1 | {per_k(first.rss, waves[-1].rss)} | "
        f"{per_k(first.heap_in_use, waves[-1].heap_in_use)} | {per_k(first.heap_free, waves[-1].heap_free)} | "
        f"{per_k(first.py_in_use, waves[-1].py_in_use)} | {per_k(first.py_arenas, waves[-1].py_arenas)} | |",
    ]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
