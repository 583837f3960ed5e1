"""The fault matrix (issue #14): every fault kind × every flow, on the embedded stack, with loss and
duplication counted from what F&O (the emulator), Azurite and the outcome table hold afterwards.

Flows, all running at once on one stack per fault kind:

- **inbound**: raw CSV drops imported with ImportFromPackage through the import gate;
- **outbound drain**: recurring-export messages dequeued, archived, verified, acknowledged;
- **scheduled export**: an ExportToPackage run copied into the archive;
- **enqueue**: drops routed to a recurring import job (``mode: enqueue``).

Counts per cell (every one must be 0):

| counter | inbound | drain | export | enqueue |
|---|---|---|---|---|
| lost | drop without its final row (right status) or rows missing in F&O | message never archived-and-acked | run not Succeeded or no archive | drop without its final row, or its data never in F&O although its row says it was enqueued |
| double | an execution imported twice / more imports than packages | — | a second export execution | a drop's file enqueued twice |
| overlapping | parallel-import violations (peak > 1) | — | — | — |
| archived twice | — | a message with two archive blobs or two Archived rows | two archive blobs for the run | — |
| acks before archive | — | an ack sent while the message had no verified archive | — | — |

An ambiguous enqueue (its answer lost) is not repeated by design (F&O has no lookup by external id): it ends
``Failed`` with a reason naming the external identifier. Those are reported as ``ambiguous (reported)``, not
lost, when the row says so; whether F&O has the message or not is counted too.

Fault kinds that need more than the emulator (Azurite restarted, the runner SIGKILLed in a subprocess,
archive writes failing in the storage SDK, a terminated gate holder) are driven here as well.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

EXPORT_ACTIVITY = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"  # the emulator's recurring export
IMPORT_ACTIVITY = "{A0F6F6E5-6F1B-4E4A-9B7D-1E2C3D4F5A6B}"  # ...and its recurring import
NEVER = "0 0 0 1 1 *"
JOB = {"name": "groups-nightly", "environment": "main", "data_project": "CustomerGroups-Export",
       "legal_entity": "USMF", "schedule": "0 0 2 * * *", "package_name": "{job}-{date}"}  # fmt: skip
ROUTES = {"version": 1, "routes": [
    {"name": "xslt", "pattern": "xslt/**", "mode": "enqueue", "environment": "main", "legal_entity_segment": 1,
     "entity": "Customer groups", "activity_id": IMPORT_ACTIVITY},
]}  # fmt: skip
FLOWS = ("inbound", "outbound drain", "scheduled export", "enqueue")
COUNTERS = ("lost", "double", "overlapping", "archived twice", "acks before archive")
# Which counters mean something for which flow ("—" in the table otherwise).
APPLIES = {
    "inbound": ("lost", "double", "overlapping"),
    "outbound drain": ("lost", "archived twice", "acks before archive"),
    "scheduled export": ("lost", "double", "archived twice"),
    "enqueue": ("lost", "double"),
}
API = ["GetAzureWriteUrl", "ImportFromPackageAsync", "GetExecutionSummaryStatus", "ExportToPackageAsync",
       "GetExportedPackageUrl", "GetExecutionErrors", "dequeue", "download", "ack", "enqueue",
       "GetMessageStatus"]  # fmt: skip


@dataclass
class Scale:
    drops: int = 4
    messages: int = 6
    enqueues: int = 2
    drain_rounds: int = 6

    def times(self, k: float) -> Scale:
        return Scale(max(1, round(self.drops * k)), max(1, round(self.messages * k)),
                     max(1, round(self.enqueues * k)), self.drain_rounds)  # fmt: skip


def app_overrides(**extra: Any) -> dict[str, str]:
    values = {
        "RECURRING_EXPORTS": json.dumps(
            [{"name": "cust-groups", "environment": "main", "activity_id": EXPORT_ACTIVITY}]
        ),
        "EXPORT_JOBS": json.dumps([JOB]),
        "ROUTES_JSON": json.dumps(ROUTES),
        "DRAIN_SCHEDULE": NEVER,
        "EXPORT_SCHEDULE": NEVER,
        "HOUSEKEEPING_SCHEDULE": NEVER,
        "FNO_HTTP_TIMEOUT_SECONDS": "5",
    }
    values.update({k: str(v) for k, v in extra.items()})
    return values


def enqueue_csv(ids: list[str]) -> bytes:
    from local.samples import customer_groups_csv

    return b"\xff\xfe" + customer_groups_csv(ids, encoding="utf-16-le")


# ---------------------------------------------------------------------------------------------- counting
@dataclass
class World:
    """What the flows were given, to count against."""

    drops: list[str] = field(default_factory=list)  # inbound blob names
    drop_ids: list[str] = field(default_factory=list)  # the CUSTOMERGROUPID each carries
    enqueues: list[str] = field(default_factory=list)
    enqueue_ids: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # correlation ids
    export: bool = True
    early_acks: list[str] = field(default_factory=list)
    expected_status: dict[str, str] = field(default_factory=dict)  # drop name -> status, default Succeeded


def count(
    *, rows: list[dict], executions: list[dict], data_ids: set[str], outbound: dict[str, str],
    inbound_messages: list[dict], archives: list[str], violations: int, peak_imports: int, world: World,
    flows: tuple[str, ...] = FLOWS,
) -> dict[str, dict[str, int]]:  # fmt: skip
    """The counters per flow (see the module docstring), from plain data: rows of the outcome table,
    F&O's executions, its data, its outbound/inbound messages, the archive's blob names."""
    out: dict[str, dict[str, int]] = {}
    drop_rows = [r for r in rows if r.get("Kind") == "drop"]

    def row_for(name: str) -> list[dict]:
        return [r for r in drop_rows if str(r.get("SourceBlob", "")).endswith("/" + name)]

    if "inbound" in flows:
        lost = 0
        for name, gid in zip(world.drops, world.drop_ids, strict=True):
            want = world.expected_status.get(name, "Succeeded")
            mine = row_for(name)
            if (
                len(mine) != 1
                or mine[0].get("Status") != want
                or (want == "Succeeded" and gid not in data_ids)
            ):
                lost += 1
        packages = [r for r in rows if r.get("Kind") == "package"]
        imports = Counter(
            e["executionId"] for e in executions if e["kind"] == "import" and not e.get("messageId")
        )
        out["inbound"] = {
            "lost": lost,
            "double": sum(n - 1 for n in imports.values()) + max(0, sum(imports.values()) - len(packages)),
            "overlapping": violations + max(0, peak_imports - 1),
        }
    if "outbound drain" in flows:
        per_cid = {c: [n for n in archives if c in n] for c in world.messages}
        archived_rows = Counter(
            r["CorrelationId"] for r in rows if r.get("Kind") == "message" and r.get("Status") == "Archived"
        )
        out["outbound drain"] = {
            "lost": sum(1 for c in world.messages if outbound.get(c) != "Acked" or not per_cid[c]),
            "archived twice": sum(1 for c in world.messages if len(per_cid[c]) > 1 or archived_rows[c] > 1),
            "acks before archive": len(world.early_acks),
        }
    if "scheduled export" in flows:
        runs = [r for r in rows if r.get("Kind") == "export"]
        exports = Counter(e["executionId"] for e in executions if e["kind"] == "export")
        export_archives = [n for n in archives if n.startswith("exports/")]
        out["scheduled export"] = {
            "lost": (sum(1 for r in runs if r.get("Status") != "Succeeded") + abs(1 - len(runs))
                     + (1 if not export_archives else 0)),
            "double": sum(n - 1 for n in exports.values()) + max(0, len(exports) - 1),
            "archived twice": max(0, len(export_archives) - 1),
        }  # fmt: skip
    if "enqueue" in flows:
        by_ext = Counter(m["externalId"] for m in inbound_messages)
        lost = ambiguous = 0
        for name, gid in zip(world.enqueues, world.enqueue_ids, strict=True):
            mine = row_for(name)
            sent = by_ext.get(name, 0)
            if len(mine) != 1:
                lost += 1
            elif mine[0].get("Status") == "Succeeded":
                lost += 0 if (sent and gid in data_ids) else 1
            elif mine[0].get("Status") == "Failed" and _ambiguous_enqueue(mine[0], rows):
                ambiguous += 1  # reported, by design: the row names the external identifier
            else:
                lost += 1
        out["enqueue"] = {
            "lost": lost,
            "double": sum(n - 1 for n in by_ext.values() if n > 1),
            "ambiguous (reported)": ambiguous,
        }
    return out


# The app's two wordings of "this enqueue may or may not have reached F&O, so it is not sent again": the
# answer was lost in this attempt, or an earlier attempt (a killed host) ended without one.
AMBIGUOUS_ENQUEUE = ("not repeated", "not sent again")


def _ambiguous_enqueue(drop_row: dict, rows: list[dict]) -> bool:
    reasons = [str(drop_row.get("Reason", ""))] + [
        str(r.get("Reason"))
        for r in rows
        if r.get("Kind") == "enqueue" and r["RowKey"].startswith(drop_row["RowKey"])
    ]
    return any(marker in reason for reason in reasons for marker in AMBIGUOUS_ENQUEUE)


def not_as_expected(rows: list[dict], world: World) -> list[str]:
    """Drops (and export runs) that did not end as expected, with their reasons: for the report."""
    out = []
    for r in rows:
        if r.get("Kind") not in ("drop", "export", "enqueue", "package"):
            continue
        name = str(r.get("SourceBlob", "")).split("/", 1)[-1]
        want = world.expected_status.get(name, "Succeeded")
        if r.get("Status") != want and r.get("Kind") != "enqueue":
            out.append(
                f"{r.get('Kind')} {name or r['RowKey']}: {r.get('Status')}: {str(r.get('Reason'))[:300]}"
            )
    return out


def total(counts: dict[str, dict[str, int]]) -> int:
    return sum(n for c in counts.values() for k, n in c.items() if k in COUNTERS)


def stack_counts(stack: Any, world: World, flows: tuple[str, ...] = FLOWS) -> dict[str, dict[str, int]]:
    admin = stack.emu.admin
    return count(
        rows=stack.outcomes(),
        executions=admin.executions(),
        data_ids={r["CUSTOMERGROUPID"] for r in admin.data("USMF", "Customer groups")},
        outbound={m["correlationId"]: m["status"] for m in admin.outbound(EXPORT_ACTIVITY)},
        inbound_messages=admin.inbound(IMPORT_ACTIVITY),
        archives=stack.blob_names("ARCHIVE_CONTAINER"),
        violations=admin.violations,
        peak_imports=admin.peak_concurrent_imports,
        world=world,
        flows=flows,
    )


# ---------------------------------------------------------------------------------------------- faults
@dataclass
class Fault:
    name: str
    what: str
    na: dict[str, str] = field(default_factory=dict)  # flow -> why it does not apply
    setup: Callable[[Any, Any], None] | None = None  # (stack, ctx) before the work starts
    during: Callable[[Any, Any], None] | None = None  # (stack, ctx) once the work is under way
    wrap: Callable[[Any], Any] | None = None  # (stack) -> context manager around the run
    kind: str = "inproc"  # "inproc" | "subprocess"
    settings: dict[str, str] = field(default_factory=dict)
    private_azurite: bool = False

    def flows(self) -> tuple[str, ...]:
        return tuple(f for f in FLOWS if f not in self.na)


def _storm(stack: Any, ctx: Any) -> None:
    admin = stack.emu.admin
    admin.inject_fault("ImportFromPackageAsync", "429", next_n=1, retry_after=1)
    admin.inject_fault("ExportToPackageAsync", "429", next_n=1, retry_after=1)
    admin.inject_fault("enqueue", "429", next_n=1, retry_after=1)
    for n, endpoint in enumerate(API):
        admin.inject_fault(endpoint, "429", rate=0.5, retry_after=n % 2)


def _five_hundreds(stack: Any, ctx: Any) -> None:
    admin = stack.emu.admin
    admin.inject_fault("ImportFromPackageAsync", "500", next_n=1)
    admin.inject_fault("ExportToPackageAsync", "503", next_n=1)
    for kind in ("500", "502", "503"):
        admin.inject_fault("*", kind, rate=0.07)


def _resets(stack: Any, ctx: Any) -> None:
    admin = stack.emu.admin
    admin.inject_fault("ImportFromPackageAsync", "drop", next_n=1)
    admin.inject_fault("ExportToPackageAsync", "drop", next_n=1)
    admin.inject_fault("dequeue", "drop", next_n=1)
    admin.inject_fault("*", "drop", rate=0.1)


def _lost_answers(stack: Any, ctx: Any) -> None:
    admin = stack.emu.admin
    admin.inject_fault("ImportFromPackageAsync", "after_503", next_n=1)
    admin.inject_fault("ExportToPackageAsync", "after_drop", next_n=1)
    admin.inject_fault("ack", "after_503", next_n=2)
    admin.inject_fault("dequeue", "after_drop", next_n=1)
    admin.inject_fault("enqueue", "after_503", next_n=1)  # enqueued, answer lost: reported, not repeated
    admin.inject_fault("*", "after_503", rate=0.1)


def _token_down(stack: Any, ctx: Any) -> None:
    admin = stack.emu.admin
    # Every cached token stops working and the token endpoint is down (resets every connection) for 2
    # minutes of the virtual clock. (A 503 answer would be cached by MSAL for 5 s of wall time, which a
    # virtual clock never lets pass: every retry in the window would hit MSAL's cache, not the endpoint.)
    admin.inject_fault("token", "drop", rate=1.0, until=admin.now() + timedelta(minutes=2))
    admin.revoke_tokens()


def _sas_expired(stack: Any, ctx: Any) -> None:
    admin = stack.emu.admin
    # The first write URLs and exported-package URLs expire as the client starts using them.
    admin.inject_fault("GetAzureWriteUrl", "sas_expired", next_n=2, delay_seconds=0)
    admin.inject_fault("GetAzureWriteUrl", "sas_expired", rate=0.3, delay_seconds=0)
    admin.inject_fault("GetExportedPackageUrl", "sas_expired", next_n=1, delay_seconds=0)


def _terminate_gate_holder(stack: Any, ctx: Any) -> None:
    from azure.data.tables import TableServiceClient

    from dmf.gate import ImportGate

    table = TableServiceClient.from_connection_string(stack.az.connection_string).get_table_client(
        stack.names["GATES_TABLE"]
    )
    deadline = time.monotonic() + 120
    with stack.runner.hold_clock():
        while time.monotonic() < deadline:
            try:
                holders = ImportGate(table, "main").snapshot()["holders"]
            except Exception:
                holders = []
            if holders and stack.emu.admin.calls("ImportFromPackageAsync"):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError("no gate holder appeared")
        holder = holders[0]["instance_id"]
        status = stack.runner.get_status(holder) or {}
        drop = (status.get("input") or {}).get("source") if isinstance(status.get("input"), dict) else None
        stack.runner.terminate(holder, "operator stopped it (fault matrix)")
    ctx["terminated"] = holder
    ctx["terminated_source"] = drop


def _restart_azurite(stack: Any, ctx: Any) -> None:
    # Once imports and the drain are under way: Azurite goes away for a few seconds and comes back with
    # its data (same ports, same data directory).
    deadline = time.monotonic() + 60
    while not stack.emu.admin.calls("ImportFromPackageAsync") and time.monotonic() < deadline:
        time.sleep(0.05)
    az = stack.az
    # The outage lasts 3 s of real time: the virtual clock must not jump timers (gate leases, retry waits)
    # past minutes while storage is away, which a real outage this short never does.
    with stack.runner.hold_clock():
        az.stop()
        time.sleep(3)
        az.start()
    ctx["restarts"] = ctx.get("restarts", 0) + 1


@contextmanager
def failing_archive_writes(stack: Any, rate: float = 0.3, first: int = 3, seed: int = 14) -> Iterator[dict]:
    """Writes into the archive and processed containers fail (HTTP 503 from the storage SDK's point of
    view) for the first ``first`` calls and then at ``rate``: what a storage outage looks like to the app."""
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobClient

    targets = {stack.names["ARCHIVE_CONTAINER"], stack.names["PROCESSED_CONTAINER"]}
    rng = random.Random(seed)
    state = {"failed": 0, "calls": 0}
    lock = threading.Lock()
    names = ("upload_blob", "stage_block", "commit_block_list", "start_copy_from_url", "set_blob_metadata")
    saved = {n: getattr(BlobClient, n) for n in names}

    def make(name: str, real: Callable) -> Callable:
        def faulty(self, *a: Any, **kw: Any) -> Any:
            if self.container_name in targets:
                with lock:
                    state["calls"] += 1
                    fail = state["failed"] < first or rng.random() < rate
                    if fail:
                        state["failed"] += 1
                if fail:
                    raise HttpResponseError(message=f"fault matrix: {name} refused (503 ServerBusy)")
            return real(self, *a, **kw)

        return faulty

    for n, real in saved.items():
        setattr(BlobClient, n, make(n, real))
    try:
        yield state
    finally:
        for n, real in saved.items():
            setattr(BlobClient, n, real)


def _archive_wrap(stack: Any) -> Any:
    return failing_archive_writes(stack)


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault("429 storm", "half of every F&O call (token excluded) answers 429 with Retry-After 0-1 s; each "
              "start call at least once", setup=_storm),
        Fault("5xx 20%", "~20% of every call, token included, answers 500/502/503; each start call at least once",
              setup=_five_hundreds),
        Fault("connection resets", "~10% of every call is reset before F&O handles it; each start call and "
              "a dequeue at least once", setup=_resets),
        Fault("answers lost", "F&O does the work, then the answer is lost (503 or reset): ~10% of every call, "
              "each start call, two acks, a dequeue and an enqueue at least once", setup=_lost_answers),
        Fault("token endpoint down 2 min", "every token revoked, then the token endpoint resets every "
              "connection for 2 minutes of the virtual clock", setup=_token_down),
        Fault("SAS expiry mid-upload", "the first two package write URLs and ~30% after, and the first "
              "exported-package URL, expire as the client starts to use them",
              setup=_sas_expired,
              na={"outbound drain": "the connector's DownloadLocation is read with the bearer token, no SAS",
                  "enqueue": "the file is posted to F&O's enqueue endpoint itself, no SAS URL"}),
        Fault("Azurite restarted", "Azurite stopped for 3 s once the first import has started, then started "
              "again on the same ports and data", during=_restart_azurite, private_azurite=True),
        Fault("runner SIGKILLed", "the runner process (python -m local.functions_runner) SIGKILLs itself "
              "before and after each distinct activity (once each), and is restarted on the same task hub",
              kind="subprocess"),
        Fault("gate holder terminated", "the orchestration holding the import gate is terminated while "
              "F&O imports its package", during=_terminate_gate_holder,
              na={"outbound drain": "drains never take the import gate",
                  "scheduled export": "exports never take the import gate",
                  "enqueue": "enqueue never takes the import gate (F&O queues the messages itself)"}),
        Fault("archive writes failing", "the first 3 writes into the archive and processed containers "
              "and ~30% after fail with 503", wrap=_archive_wrap),
    ]
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- in-process
def audit_acks(stack: Any, early: list[str]) -> Callable[[], None]:
    """Record every ack sent while its message had no verified archive; returns an undo."""
    from dmf.fno.recurring_api import RecurringApi
    from dmf.pipeline.ids import safe_name

    real_ack = RecurringApi.ack

    exports = {e["activity_id"]: e["name"] for e in json.loads(stack.settings.get("RECURRING_EXPORTS", "[]"))}

    def verified(cid: str, prefix: str = "") -> bool:
        return any(
            cid in b.name and (b.metadata or {}).get("verified") == "1"
            for b in stack.container("ARCHIVE_CONTAINER").list_blobs(
                name_starts_with=prefix, include=["metadata"]
            )
        )

    def audited(self, activity_id, message):
        cid = message.correlation_id
        # Where the archive is filed first (<export>/<yyyy>/<MM>/<dd>/<id>, dated by the drain's start: the
        # wall clock's or the virtual clock's day): a listing of the whole archive per ack grows with the run.
        # Only what is not there is looked for everywhere.
        nows = [datetime.now(UTC)] + ([stack.clock.now()] if stack.clock else [])
        days = {(now - timedelta(days=k)).strftime("%Y/%m/%d") for now in nows for k in range(2)}
        stems = [f"{safe_name(exports.get(activity_id, ''))}/{day}/{cid}" for day in days]
        if not any(verified(cid, stem) for stem in stems) and not verified(cid):
            early.append(cid)
        return real_ack(self, activity_id, message)

    RecurringApi.ack = audited  # type: ignore[method-assign]

    def undo() -> None:
        RecurringApi.ack = real_ack  # type: ignore[method-assign]

    return undo


def _drain(stack: Any) -> None:
    stack.runner.fire_timer("drain_timer")
    stack.runner.wait_for_instance("drain-cust-groups", timeout=180)


def _acked(stack: Any) -> dict[str, str]:
    return {m["correlationId"]: m["status"] for m in stack.emu.admin.outbound(EXPORT_ACTIVITY)}


def _mark_export_due(stack: Any) -> None:
    from azure.data.tables import TableServiceClient

    ledger = TableServiceClient.from_connection_string(stack.az.connection_string).create_table_if_not_exists(
        stack.names["LEDGER_TABLE"]
    )
    ledger.upsert_entity({"PartitionKey": "export-schedule", "RowKey": JOB["name"],
                          "LastDue": stack.clock.now() - timedelta(days=1)})  # fmt: skip


def run_inproc(fault: Fault, az: Any, unique: str, scale: Scale, seed: int = 20261129) -> dict[str, Any]:
    from local.embedded_stack import Stack
    from local.fno_emulator import EmulatorConfig

    flows = fault.flows()
    cfg = EmulatorConfig()
    cfg.fault_seed = seed
    started = time.monotonic()
    ctx: dict[str, Any] = {}
    world = World(export="scheduled export" in flows)
    stack = Stack(az, unique, emulator_config=cfg, **app_overrides(**fault.settings))
    stack.start()
    undo = audit_acks(stack, world.early_acks)
    try:
        admin = stack.emu.admin
        _seed_outbound(stack, world, flows, scale)
        wrap = fault.wrap(stack) if fault.wrap else _nullcontext()
        with wrap as wrapped:
            _run_flows(stack, fault, world, flows, scale, ctx)
            if isinstance(wrapped, dict):
                ctx["archive writes refused"] = wrapped["failed"]
        _expect_terminated_failed(stack, world, ctx)
        counts = stack_counts(stack, world, flows)
        problems = not_as_expected(stack.outcomes(), world)
        faults = Counter(f"{c['endpoint']}:{c['fault']}" for c in admin.calls() if c["fault"])
        errors = admin.server_errors()
    finally:
        undo()
        loop_blocks = list(stack.runner.loop_blocks) if stack.runner else []
        stack.stop()
    return {
        "fault": fault.name,
        "counts": counts,
        "faults_injected": dict(faults),
        "context": {k: v for k, v in ctx.items() if k != "terminated_source"},
        "emulator_errors": errors,
        "problems": problems,
        "loop_blocks": len(loop_blocks),
        "seconds": round(time.monotonic() - started, 1),
        "scale": {"drops": len(world.drops), "messages": len(world.messages), "enqueues": len(world.enqueues),
                  "exports": int(world.export)},
    }  # fmt: skip


def _seed_outbound(stack: Any, world: World, flows: tuple[str, ...], scale: Scale) -> None:
    """F&O's recurring-export messages waiting to be drained, and the scheduled export due."""
    if "outbound drain" in flows:
        world.messages = [
            stack.emu.admin.seed_outbound(EXPORT_ACTIVITY, b"PK\x03\x04" + bytes([n % 251]) * (500 + n))
            for n in range(scale.messages)
        ]
    if "scheduled export" in flows:
        _mark_export_due(stack)


def _drop_inbound(stack: Any, world: World, flows: tuple[str, ...], scale: Scale) -> None:
    """The inbound drops (imported through the gate) and the enqueue drops (routed to a recurring job)."""
    from local.samples import customer_groups_csv

    for n in range(scale.drops if "inbound" in flows else 0):
        name = f"USMF/CustomerGroups-Import/Customer groups__{n}.csv"
        world.drops.append(name)
        world.drop_ids.append(f"I{n}")
        stack.drop(name, customer_groups_csv([f"I{n}"]))
    for n in range(scale.enqueues if "enqueue" in flows else 0):
        name = f"xslt/USMF/e{n}.csv"
        world.enqueues.append(name)
        world.enqueue_ids.append(f"E{n}")
        stack.drop(name, enqueue_csv([f"E{n}"]))


def _run_flows(
    stack: Any, fault: Fault, world: World, flows: tuple[str, ...], scale: Scale, ctx: dict[str, Any]
) -> None:
    """Every flow at once under the fault, until each has ended (drains repeated after F&O's redelivery)."""
    if fault.setup:
        fault.setup(stack, ctx)
    _drop_inbound(stack, world, flows, scale)
    if "scheduled export" in flows:
        stack.runner.fire_timer("export_timer")
    if fault.during:
        fault.during(stack, ctx)
    if "outbound drain" in flows:
        _drain(stack)
    stack.settle(timeout=300)
    if "scheduled export" in flows:
        stack.runner.wait_for_instance("export-groups-nightly", timeout=180)
    if "outbound drain" in flows:
        for _ in range(scale.drain_rounds):
            if all(s == "Acked" for s in _acked(stack).values()):
                break
            stack.runner.advance(timedelta(seconds=1801))  # F&O offers un-acked messages again
            _drain(stack)
    stack.runner.wait_until_idle(timeout=120)


def _expect_terminated_failed(stack: Any, world: World, ctx: dict[str, Any]) -> None:
    """The drop whose import an operator terminated ends Failed (with a reason), not Succeeded; so does its
    package row once the gate sweeper has run (every minute in Azure; on demand here, as the flows settle
    before the virtual clock reaches its next run)."""
    term = ctx.get("terminated")
    if not term:
        return
    stack.runner.fire_timer("gate_sweeper")
    stack.runner.wait_until_idle(timeout=120)
    for name in world.drops:
        rows = [r for r in stack.drops() if str(r.get("SourceBlob", "")).endswith("/" + name)]
        iid = rows[0].get("InstanceId") if rows else None
        if iid and (term == iid or term.startswith(iid + "-")):  # the holder: the drop's import
            world.expected_status[name] = "Failed"


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield None


# ---------------------------------------------------------------------------------------------- subprocess
def run_killed(
    az: Any, unique: str, scale: Scale, max_kills: int | None = None, timeout: float = 600,
    kill_only: list[str] | None = None,
) -> dict:  # fmt: skip
    """The runner as its own process (``python -m local.functions_runner``, real clock, short F&O timings),
    SIGKILLing itself at each activity boundary in turn (see ``local/reliability_app.py``) and started
    again on the same task hub until every flow has finished."""
    from local.embedded_stack import Stack, app_settings, reset_app_caches
    from local.fno_emulator import Emulator

    started = time.monotonic()
    world = World()
    work = Path(tempfile.mkdtemp(prefix="reliability-kill-"))
    with Emulator(
        _killed_emulator_config(unique), storage_connection_string=az.connection_string
    ).start() as emu:
        names = Stack(az, unique).names
        values = app_settings(
            az, emu, **names, **app_overrides(POLL_INITIAL_SECONDS="1", GATE_RECHECK_SECONDS="2",
                                              FNO_HTTP_TIMEOUT_SECONDS="5")
        )  # fmt: skip
        values["RELIABILITY_BOUNDARY_LOG"] = str(work / "boundaries.log")
        values["RELIABILITY_ACK_AUDIT"] = str(work / "early-acks.log")
        values["RELIABILITY_KILLED"] = str(work / "killed.txt")
        (work / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        _seed_killed_world(az, names, emu, world, scale)
        view = _View(az, names, emu)
        runner = _KilledRunner(work, max_kills, kill_only)
        try:
            finished = runner.drive(view, world, time.monotonic() + timeout)
        finally:
            runner.stop()
            reset_app_caches()
        audit = work / "early-acks.log"
        world.early_acks = audit.read_text().split() if audit.exists() else []
        view_rows = view.rows()
        counts = count(
            rows=view_rows, executions=emu.admin.executions(),
            data_ids={r["CUSTOMERGROUPID"] for r in emu.admin.data("USMF", "Customer groups")},
            outbound={m["correlationId"]: m["status"] for m in emu.admin.outbound(EXPORT_ACTIVITY)},
            inbound_messages=emu.admin.inbound(IMPORT_ACTIVITY), archives=view.archives(),
            violations=emu.admin.violations, peak_imports=emu.admin.peak_concurrent_imports, world=world,
        )  # fmt: skip
        boundaries = (
            (work / "boundaries.log").read_text().splitlines() if (work / "boundaries.log").exists() else []
        )
        errors = emu.admin.server_errors()
    seen = sorted({b.split(" ", 1)[1] for b in boundaries})
    return {
        "fault": "runner SIGKILLed",
        "counts": counts,
        "finished": finished,
        "kills": runner.kills,
        "problems": not_as_expected(view_rows, world),
        "boundaries_seen": seen,
        "boundaries_not_killed": sorted(set(seen) - set(runner.kills)),
        "emulator_errors": errors,
        "log": str(runner.log),
        "seconds": round(time.monotonic() - started, 1),
        "scale": {"drops": len(world.drops), "messages": len(world.messages), "enqueues": len(world.enqueues),
                  "exports": 1},
    }  # fmt: skip


def _killed_emulator_config(unique: str) -> Any:
    """Short F&O timings (the SIGKILL row runs on the real clock)."""
    from local.fno_emulator import EmulatorConfig
    from local.fno_emulator.config import DataProject, ProjectEntity

    cfg = EmulatorConfig()
    cfg.blob_container = f"{unique}-dmf"
    cfg.timings.recurring_pickup_seconds = 1
    cfg.timings.visibility_timeout_seconds = 20
    for p in cfg.data_projects:
        p.base_seconds, p.per_row_seconds = 2, 0
    if not any(p.name == "CustomerGroups-Import" for p in cfg.data_projects):
        cfg.data_projects.append(DataProject(name="CustomerGroups-Import",
                                             entities=[ProjectEntity(entity="Customer groups")]))  # fmt: skip
    return cfg


def _seed_killed_world(az: Any, names: dict[str, str], emu: Any, world: World, scale: Scale) -> None:
    """Messages waiting in F&O, and the inbound and enqueue drops already in the inbound container."""
    from azure.storage.blob import BlobServiceClient

    from local.samples import customer_groups_csv

    inbound = BlobServiceClient.from_connection_string(az.connection_string).create_container(
        names["INBOUND_CONTAINER"]
    )
    world.messages = [
        emu.admin.seed_outbound(EXPORT_ACTIVITY, b"PK\x03\x04" + bytes([n % 251]) * (500 + n))
        for n in range(scale.messages)
    ]
    for n in range(scale.drops):
        name = f"USMF/CustomerGroups-Import/Customer groups__{n}.csv"
        world.drops.append(name)
        world.drop_ids.append(f"K{n}")
        inbound.upload_blob(name, customer_groups_csv([f"K{n}"]))
    for n in range(scale.enqueues):
        name = f"xslt/USMF/e{n}.csv"
        world.enqueues.append(name)
        world.enqueue_ids.append(f"E{n}")
        inbound.upload_blob(name, enqueue_csv([f"E{n}"]))


class _KilledRunner:
    """The runner subprocess of the SIGKILL row: started again each time it has killed itself."""

    def __init__(self, work: Path, max_kills: int | None, kill_only: list[str] | None) -> None:
        self.work = work
        self.settings = work / "local.settings.json"
        self.keys = work / "keys.json"
        self.log = work / "runner.log"
        self.max_kills = max_kills
        self.kill_only = kill_only or []
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.kills: list[str] = []
        self.crashes = 0

    def drive(self, view: _View, world: World, deadline: float) -> bool:
        """Keep a runner up, start the export once, ask for drains until all is acked; True when done."""
        export_started = False
        last_drain = 0.0
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                self._restart()
                continue
            if not export_started:
                export_started = self.post("/api/outbound/exports/groups-nightly") in (202, 409)
            if time.monotonic() - last_drain > 5 and not view.all_acked(world):
                self.post("/api/outbound/drains/cust-groups")
                last_drain = time.monotonic()
            if view.done(world):
                return True
            time.sleep(0.5)
        return view.done(world)

    def _restart(self) -> None:
        if self.proc is not None and self.proc.returncode == -signal.SIGKILL:
            self.kills.append((self.work / "killed.txt").read_text().strip().splitlines()[-1])
        elif self.proc is not None:
            self.crashes += 1
            if self.crashes >= 3:
                raise RuntimeError(f"the runner keeps exiting ({self.proc.returncode}): see {self.log}")
        self._spawn(kill=self.max_kills is None or len(self.kills) < self.max_kills)

    def _spawn(self, kill: bool) -> None:
        import requests

        from local.azurite import free_port

        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RELIABILITY_KILL": "1" if kill else "0",
               "RELIABILITY_KILL_ONLY": ",".join(self.kill_only)}  # fmt: skip
        self.proc = p = subprocess.Popen(
            [sys.executable, "-m", "local.functions_runner", "--settings", str(self.settings),
             "--app", "local.reliability_app", "--port", str(self.port), "--blob-poll-interval", "0.3",
             "--key-file", str(self.keys), "--host-json", str(ROOT / "host.json")],
            cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and p.poll() is None:  # (or it killed itself already)
            try:
                requests.get(f"http://127.0.0.1:{self.port}/api/health", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)

    def post(self, path: str) -> int:
        import requests

        try:
            key = json.loads(self.keys.read_text())["function_key"]
            r = requests.post(
                f"http://127.0.0.1:{self.port}{path}", headers={"x-functions-key": key}, timeout=10
            )
            return r.status_code
        except (OSError, ValueError, KeyError, requests.RequestException) as exc:
            print(f"  (post {path} failed: {type(exc).__name__}; the next round asks again)", flush=True)
            return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class _View:
    """Reads the outcome table, archive and the runner's instances table from outside the runner."""

    def __init__(self, az: Any, names: dict[str, str], emu: Any) -> None:
        from azure.data.tables import TableServiceClient
        from azure.storage.blob import BlobServiceClient

        self.tables = TableServiceClient.from_connection_string(az.connection_string)
        self.blobs = BlobServiceClient.from_connection_string(az.connection_string)
        self.names = names
        self.emu = emu

    def rows(self) -> list[dict]:
        try:
            return [
                dict(e) for e in self.tables.get_table_client(self.names["OUTCOMES_TABLE"]).list_entities()
            ]
        except Exception:
            return []

    def archives(self) -> list[str]:
        try:
            return sorted(
                b.name for b in self.blobs.get_container_client(self.names["ARCHIVE_CONTAINER"]).list_blobs()
            )
        except Exception:
            return []

    def all_acked(self, world: World) -> bool:
        acked = {m["correlationId"]: m["status"] for m in self.emu.admin.outbound(EXPORT_ACTIVITY)}
        return all(acked.get(c) == "Acked" for c in world.messages)

    def done(self, world: World) -> bool:
        rows = self.rows()
        drops = [r for r in rows if r.get("Kind") == "drop"]
        final = [r for r in drops if r.get("Status") not in ("Planning", "Importing", None)]
        exports = [
            r for r in rows if r.get("Kind") == "export" and r.get("Status") in ("Succeeded", "Failed")
        ]
        return (
            len(final) >= len(world.drops) + len(world.enqueues) and bool(exports) and self.all_acked(world)
        )


# ---------------------------------------------------------------------------------------------- report
def cell_text(counts: dict[str, int] | None, flow: str) -> str:
    if counts is None:
        return "n/a"
    t = sum(n for k, n in counts.items() if k in COUNTERS)
    extra = counts.get("ambiguous (reported)")
    return f"{t}" + (f" ({extra} ambiguous, reported)" if extra else "")


def write_markdown(results: list[dict], path: Path, scale: Scale) -> str:
    """The matrix: one row per fault kind, its latest result (each row says when and by which command)."""
    import platform

    runs = Counter((r.get("run", "?"), r.get("command", "?")) for r in results)
    lines = [
        "# Reliability: fault matrix",
        "",
        f"On {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. The latest result "
        "of each fault kind (the `run` column); runs: "
        + "; ".join(
            f"{run}: `{cmd}` ({n} row{'s' if n > 1 else ''})" for (run, cmd), n in sorted(runs.items())
        )
        + ".",
        f"Scale per fault kind: {scale.drops} inbound drops, {scale.messages} recurring-export messages, "
        f"1 scheduled export, {scale.enqueues} enqueue drops, all at once on one stack (virtual clock, except "
        "the SIGKILL row: real clock and short F&O timings).",
        "",
        "Each cell is the sum of the counters below for that flow; every one must be 0. `n/a`: the fault "
        "cannot reach that flow (why: under the table).",
        "",
        "| fault | " + " | ".join(FLOWS) + " | seconds | run |",
        "|---|" + "---|" * len(FLOWS) + "---|---|",
    ]
    for r in results:
        cells = [cell_text(r["counts"].get(f), f) if f in r["counts"] else "n/a" for f in FLOWS]
        lines.append(
            f"| {r['fault']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} | {r.get('run', '?')} |"
        )
    lines += ["", "## Counters per cell", "", "| fault | flow | " + " | ".join(COUNTERS) + " | notes |",
              "|---|---|" + "---|" * len(COUNTERS) + "---|"]  # fmt: skip
    for r in results:
        for f in FLOWS:
            c = r["counts"].get(f)
            if c is None:
                why = FAULTS[r["fault"]].na.get(f, "") if r["fault"] in FAULTS else ""
                lines.append(
                    f"| {r['fault']} | {f} | " + " | ".join("—" for _ in COUNTERS) + f" | n/a: {why} |"
                )
                continue
            vals = [str(c[k]) if k in c else "—" for k in COUNTERS]
            note = (
                f"{c['ambiguous (reported)']} ambiguous enqueue(s) reported Failed, not repeated"
                if c.get("ambiguous (reported)")
                else ""
            )
            lines.append(f"| {r['fault']} | {f} | " + " | ".join(vals) + f" | {note} |")
    lines += ["", "## What each fault did", ""]
    for r in results:
        f = FAULTS.get(r["fault"])
        lines.append(f"- **{r['fault']}**: {f.what if f else ''}.")
        if r.get("faults_injected"):
            top = sorted(r["faults_injected"].items(), key=lambda kv: -kv[1])
            lines.append("  Injected (endpoint:kind × n): " + ", ".join(f"{k} × {v}" for k, v in top[:12])
                         + (" …" if len(top) > 12 else "") + ".")  # fmt: skip
        if r.get("context"):
            lines.append("  " + ", ".join(f"{k}: {v}" for k, v in r["context"].items()) + ".")
        if "kills" in r:
            lines.append(f"  {len(r['kills'])} kills, at: " + ", ".join(f"`{k}`" for k in r["kills"]) + ".")
            if r.get("boundaries_not_killed"):
                lines.append("  Boundaries seen but not killed (kill budget): "
                             + ", ".join(f"`{k}`" for k in r["boundaries_not_killed"]) + ".")  # fmt: skip
            lines.append(f"  Finished: {r.get('finished')}.")
        if r.get("emulator_errors"):
            lines.append(f"  Emulator errors: {len(r['emulator_errors'])}.")
        for f2, why in f.na.items() if f else []:
            lines.append(f"  n/a for {f2}: {why}.")
    lines += ["", "## Counters", "",
              "| counter | inbound | drain | export | enqueue |", "|---|---|---|---|---|",
              "| lost | drop without its one final row with the right status, or its rows missing in F&O | message never archived-and-acked (after F&O's redelivery) | run not Succeeded or without its archive | drop without its final row, or Succeeded without its data in F&O |",
              "| double | an execution imported twice, or more imports than packages | — | a second export execution | one file enqueued twice |",
              "| overlapping | F&O's parallel-import violations, peak concurrent imports above 1 | — | — | — |",
              "| archived twice | — | two archive blobs or two Archived rows for one message | two archives for the run | — |",
              "| acks before archive | — | an ack sent while its message had no verified archive | — | — |",
              "", "An enqueue whose answer is lost is not sent again (F&O has no lookup by external identifier): "
              "the drop ends Failed with a reason naming the identifier. Counted as *ambiguous, reported*, "
              "not as lost."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text
