"""Benchmark: the operators' questions answered from the index vs a full-table scan, 10,000 outcome rows.

Run:  .venv/bin/python -m bench.operators_index [--drops 5000] [--days 10] [--files 2000] [--repeat 20]
Writes bench/results/operators.md. Azurite holds ``--drops`` drop rows with one package row each (10,000
outcome rows by default) over ``--days`` day partitions, ~10 % of them Failed, from ``--files`` source blob
names (each dropped about 2.5 times), plus the ledger's index rows written the way ``plan_drop`` writes them.

- "What happened to file X": ``dmf.operators.drops.files`` (one read of the file's index partition, whose
  rows carry each ended drop's status and reason) against a scan of the whole outcome table for ``SourceBlob eq X`` (what one would do without the
  index), over ``--repeat`` random files; medians compared.
- "One day's failures": ``dmf.operators.drops.list_rows`` (the day's partition, Kind and Status filters,
  every page) against a scan of the whole table for failed drops, keeping that day's.
Both answers are checked equal before timing counts.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.data.tables import TableServiceClient  # noqa: E402

from dmf.ledger import _INVERT_MS, Ledger, file_partition  # noqa: E402
from dmf.operators import drops as ops  # noqa: E402
from dmf.pipeline.ids import drop_instance_id  # noqa: E402
from dmf.storage.outcomes import OutcomeStore  # noqa: E402
from local.azurite import Azurite  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def load(svc: SimpleNamespace, n_drops: int, n_days: int, n_files: int, seed: int = 7) -> dict:
    rnd = random.Random(seed)
    names = [f"inbound/LE{i % 7}/Project{i % 13}/file-{i:05d}.csv" for i in range(n_files)]
    by_day: dict[str, list[dict]] = {}
    index: list[tuple[str, str, str, datetime]] = []
    for k in range(n_drops):
        source = rnd.choice(names)
        received = T0 + timedelta(seconds=k * (n_days * 86400 / n_drops))
        day = received.strftime("%Y%m%d")
        drop_id = drop_instance_id("inbound", source.partition("/")[2], f"0x{k:x}")
        status = "Failed" if rnd.random() < 0.1 else "Succeeded"
        common = {
            "PartitionKey": day,
            "Environment": "main",
            "LegalEntity": source.split("/")[1],
            "DataProject": source.split("/")[2],
            "SourceBlob": source,
        }
        by_day.setdefault(day, []).append(
            {
                **common,
                "RowKey": drop_id,
                "Kind": "drop",
                "Status": status,
                "ReceivedAt": received,
                "Reason": "bad rows" if status == "Failed" else "",
            }
        )
        by_day[day].append(
            {
                **common,
                "RowKey": f"{drop_id}~001",
                "Kind": "package",
                "Status": status,
                "ExecutionId": f"Project-{drop_id}-p001",
            }
        )
        index.append((source, drop_id, day, received, status))
    t = time.perf_counter()
    for rows in by_day.values():
        for i in range(0, len(rows), 100):
            svc.outcomes.table.submit_transaction([("upsert", r) for r in rows[i : i + 100]])

    def index_row(source: str, drop_id: str, day: str, received: datetime, status: str) -> None:
        svc.ledger.index_drop(source, drop_id, day, received)  # as plan_drop writes it
        ms = int(received.timestamp() * 1000)  # and what finalize_drop's update_index adds to it
        svc.ledger.table.upsert_entity(
            {"PartitionKey": file_partition(source), "RowKey": f"{_INVERT_MS - ms:015d}~{drop_id}", "Status": status,
             "Reason": "bad rows" if status == "Failed" else "", "FinishedAt": received + timedelta(minutes=3)}
        )  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda a: index_row(*a), index))
    return {
        "names": names,
        "days": sorted(by_day),
        "rows": sum(len(r) for r in by_day.values()),
        "load_s": time.perf_counter() - t,
    }


def scan_file(svc: SimpleNamespace, path: str) -> list[str]:
    rows = svc.outcomes.table.query_entities("SourceBlob eq @s and Kind eq 'drop'", parameters={"s": path})
    return [r["RowKey"] for r in sorted(rows, key=lambda r: r["ReceivedAt"], reverse=True)]


def index_file(svc: SimpleNamespace, path: str) -> list[str]:
    return [d["id"] for d in ops.files(svc, path)["drops"]]


def scan_failures(svc: SimpleNamespace, day: str) -> list[str]:
    rows = svc.outcomes.table.query_entities("Kind eq 'drop' and Status eq 'Failed'")
    return sorted(r["RowKey"] for r in rows if r["PartitionKey"] == day)


def index_failures(svc: SimpleNamespace, day: str) -> list[str]:
    out, token = [], None
    while True:
        page = ops.list_rows(svc, day, "drop", {"status": "Failed"}, token=token, page_size=200)
        out += [d["id"] for d in page["items"]]
        token = page["continuationToken"]
        if not token:
            return sorted(out)


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    res = fn(*args)
    return time.perf_counter() - t, res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drops", type=int, default=5000)
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=20)
    ns = p.parse_args()
    with Azurite() as az:
        ts = TableServiceClient.from_connection_string(az.connection_string)
        u = "b" + uuid.uuid4().hex[:10]
        svc = SimpleNamespace(
            outcomes=OutcomeStore(ts.create_table(f"{u}outcomes")),
            ledger=Ledger(ts.create_table(f"{u}ledger")),
        )
        info = load(svc, ns.drops, ns.days, ns.files)
        rnd = random.Random(11)
        files_idx, files_scan, days_idx, days_scan, hits, fails = [], [], [], [], [], []
        for path in rnd.sample(info["names"], ns.repeat):
            a, got = timed(index_file, svc, path)
            b, want = timed(scan_file, svc, path)
            assert got == want, (path, got, want)
            hits.append(len(got))
            files_idx.append(a)
            files_scan.append(b)
        for day in [rnd.choice(info["days"]) for _ in range(max(ns.repeat // 4, 3))]:
            a, got = timed(index_failures, svc, day)
            b, want = timed(scan_failures, svc, day)
            assert got == want and got, (day, len(got), len(want))
            fails.append(len(got))
            days_idx.append(a)
            days_scan.append(b)
    med = statistics.median
    f_i, f_s, d_i, d_s = med(files_idx), med(files_scan), med(days_idx), med(days_scan)
    lines = [
        "# Operators' index benchmarks",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {__import__('os').cpu_count()} CPUs, "
        f"Python {platform.python_version()}; `.venv/bin/python -m bench.operators_index --drops {ns.drops} "
        f"--days {ns.days} --files {ns.files} --repeat {ns.repeat}`. Azurite on loopback holds {info['rows']:,} "
        f"outcome rows ({ns.drops:,} drops + one package each) over {ns.days} days from {ns.files:,} file names, "
        f"plus the index rows (loaded in {info['load_s']:.1f} s). Answers checked equal; medians.",
        "",
        "| Question | ours (index / day partition) | baseline: full-table scan | ratio (scan / ours) | rows the service reads: ours / scan |",
        "|---|---|---|---|---|",
        f"| what happened to file X (`GET /api/files`), {ns.repeat} files, {statistics.mean(hits):.1f} drops each | {f_i * 1000:.1f} ms | {f_s * 1000:.1f} ms | {f_s / f_i:.2f} | {statistics.mean(hits):.1f} / {info['rows']:,} |",
        f"| one day's failures (`GET /api/drops?status=Failed`), {len(days_idx)} days, {statistics.mean(fails):.0f} failures each | {d_i * 1000:.1f} ms | {d_s * 1000:.1f} ms | {d_s / d_i:.2f} | {info['rows'] // ns.days:,} / {info['rows']:,} |",
        "",
        "Both questions are one request either way here. The index answers from one small partition (its rows carry",
        "each ended drop's status and reason); a day's list reads one partition. A scan makes the service read every",
        "row of the table. Azurite keeps tables in memory and filters 10,000 rows in a few milliseconds, so a scan",
        "with a selective filter costs about one request's overhead: the file question comes out about even here.",
        "The day's failures are several times faster from the day's partition: the scan returns every day's failures",
        "and the client keeps one day's. In Azure Table Storage a query without a PartitionKey is a server-side scan that grows with the",
        "table and pages at partition boundaries; the index's cost stays one partition read however large it grows.",
        "",
    ]
    out = ROOT / "bench" / "results" / "operators.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
