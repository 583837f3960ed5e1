"""Reading drops for operators: a day's list (filtered, paged), one drop's rows, every drop of a file.

Everything is a point read or a single-partition query: a day is an outcome partition, a drop is a key
range inside it (its packages and retries sort after it), and a file's drops come from the ledger's index
(``Ledger.drops_of``), never from a scan.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from dmf.operators import OperatorError
from dmf.pipeline.drops import FINAL_DROP_STATUSES
from dmf.pipeline.services import Services
from dmf.storage.outcomes import safe_key

MAX_PAGE = 200
DEFAULT_PAGE = 50

# Query parameter → outcome column, and how the value is normalised (columns are stored that way).
FILTERS: dict[str, tuple[str, Any]] = {
    "status": ("Status", str),
    "environment": ("Environment", str.lower),
    "project": ("DataProject", str),
    "legalEntity": ("LegalEntity", str.upper),
}


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def encode_token(token: Any) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")


def decode_token(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        raise OperatorError("continuation token is not one this API gave out", 400) from None


def check_day(day: str | None) -> str:
    day = day or today()
    if len(day) != 8 or not day.isdigit():
        raise OperatorError(f"day must be yyyyMMdd, not {day!r}", 400)
    return day


def list_rows(
    svc: Services,
    day: str | None,
    kind: str,
    params: dict[str, str],
    *,
    token: str | None = None,
    page_size: int | None = None,
) -> dict[str, Any]:
    """One page of a day's rows of one kind, filtered on indexed-by-partition columns."""
    day = check_day(day)
    size = min(max(int(page_size or DEFAULT_PAGE), 1), MAX_PAGE)
    q = ["PartitionKey eq @pk", "Kind eq @kind"]
    values: dict[str, Any] = {"pk": day, "kind": kind}
    for name, (column, norm) in FILTERS.items():
        if params.get(name):
            q.append(f"{column} eq @{name}")
            values[name] = norm(params[name])
    if params.get("source"):  # a prefix: "inbound/USMF/" lists that folder's drops
        q.append("SourceBlob ge @src and SourceBlob lt @srcend")
        prefix = params["source"]
        # Everything from the prefix up to (not including) the prefix with its last character bumped.
        values["src"], values["srcend"] = prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)
    pages = svc.outcomes.table.query_entities(
        " and ".join(q), parameters=values, results_per_page=size
    ).by_page(continuation_token=decode_token(token))
    items: list[dict[str, Any]] = []
    next_token = None
    for page in pages:
        items = [summary(dict(e)) for e in page]
        next_token = pages.continuation_token
        break
    return {"day": day, "items": items, "continuationToken": encode_token(next_token)}


_SUMMARY = {
    "RowKey": "id",
    "Kind": "kind",
    "Status": "status",
    "Reason": "reason",
    "SourceBlob": "source",
    "ArchivedBlob": "archived",
    "Environment": "environment",
    "LegalEntity": "legalEntity",
    "DataProject": "project",
    "Entity": "entity",
    "Route": "route",
    "DropKind": "dropKind",
    "PackageCount": "packages",
    "Records": "records",
    "ErrorCount": "errorCount",
    "ErrorSummary": "errorSummary",
    "ExecutionId": "executionId",
    "StagedBlob": "staged",
    "ReceivedAt": "receivedAt",
    "StartedAt": "startedAt",
    "FinishedAt": "finishedAt",
    "DurationSeconds": "durationSeconds",
    "ImportRequestedAt": "importRequestedAt",
    "PollCount": "polls",
    "LastFnoStatus": "lastFnoStatus",
    "DuplicateOf": "duplicateOf",
    "EffectiveStatus": "effectiveStatus",
    "LastRetryId": "lastRetry",
    "RetryOf": "retryOf",
    "Export": "export",
    "Messages": "messages",
    "Duplicates": "duplicates",
    "CorrelationId": "correlationId",
    "Acked": "acked",
    "PackageName": "packageName",
    "PartitionKey": "day",
}


def summary(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for col, key in _SUMMARY.items():
        v = row.get(col)
        if v is None or v == "":
            continue
        out[key] = v.isoformat() if isinstance(v, datetime) else v
    return out


def find_day(svc: Services, drop_id: str, day: str | None = None) -> str:
    if day:
        return check_day(day)
    found = svc.ledger.drop_day(drop_id)
    if not found:
        raise OperatorError(f"no drop {drop_id!r} is known", 404)
    return found


def drop_rows(svc: Services, drop_id: str, day: str | None = None) -> dict[str, Any]:
    """A drop's summary row, its package rows, its rejected items and its retries (with their packages)."""
    if not drop_id.startswith("drop-") or safe_key(drop_id) != drop_id:
        raise OperatorError(f"{drop_id!r} is not a drop id", 400)
    day = find_day(svc, drop_id, day)
    rows = svc.outcomes.rows_for_run(day, drop_id)
    head = next((r for r in rows if r["RowKey"] == drop_id), None)
    if head is None:
        raise OperatorError(f"no drop {drop_id!r} on {day}", 404)
    packages, rejected, retries = [], [], {}
    for r in rows:
        key = r["RowKey"]
        if key == drop_id:
            continue
        rest = key[len(drop_id) :]
        if rest.startswith("~r"):
            rejected.append(r)
        elif rest.startswith("~"):
            packages.append(r)
        elif rest.startswith("-r"):
            run, _, _ = rest[1:].partition("~")
            retries.setdefault(drop_id + "-" + run, []).append(r)
    return {"day": day, "drop": head, "packages": packages, "rejected": rejected, "retries": retries}


def seq_of(row_key: str) -> int | None:
    tail = row_key.rpartition("~")[2]
    return int(tail) if tail.isdigit() else None


def latest_packages(detail: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Each package's latest attempt: the original row, replaced by the row of every later retry."""
    latest: dict[int, dict[str, Any]] = {}
    for r in detail["packages"]:
        if (n := seq_of(r["RowKey"])) is not None:
            latest[n] = r
    for run_id in sorted(detail["retries"]):
        for r in detail["retries"][run_id]:
            if r["RowKey"] != run_id and (n := seq_of(r["RowKey"])) is not None:
                latest[n] = r
    return latest


def error_files(row: dict[str, Any]) -> list[str]:
    raw = row.get("ErrorFiles")
    if not raw:
        return []
    try:
        files = json.loads(raw)
    except ValueError:
        return []
    return [f for f in files if isinstance(f, str)]


def error_file_paths(detail: dict[str, Any]) -> list[str]:
    """Every copied error file of a drop's packages and of its retries' packages."""
    rows = detail["packages"] + [r for rs in detail["retries"].values() for r in rs]
    return sorted({f for r in rows for f in error_files(r)})


def package_view(row: dict[str, Any], links: dict[str, dict[str, str]]) -> dict[str, Any]:
    """A package row as the API shows it, with read links (from ``read_links``) to its error files."""
    view = summary(row)
    view["seq"] = seq_of(row["RowKey"])
    view["errorFiles"] = [{"path": f, **links.get(f, {})} for f in error_files(row)]
    if row.get("SummaryPageUrl"):
        view["summaryPageUrl"] = row["SummaryPageUrl"]
    return view


def files(svc: Services, path: str) -> dict[str, Any]:
    """Every drop of ``container/name``, newest first, each with its current summary."""
    if not path or "/" not in path.strip("/"):
        raise OperatorError("path must be <container>/<blob name>", 400)
    path = path.strip("/")
    out = []
    for hit in svc.ledger.drops_of(path):
        if hit["status"] in FINAL_DROP_STATUSES:  # its end is on the index row: no further read
            item = {
                "id": hit["drop_id"],
                "day": hit["day"],
                "status": hit["status"],
                "effectiveStatus": hit["effective_status"],
                "reason": hit["reason"] or None,
                "finishedAt": hit["finished_at"].isoformat() if hit["finished_at"] else None,
            }
            item = {k: v for k, v in item.items() if v is not None}
        else:  # still going: its live row
            row = svc.outcomes.get(hit["day"], hit["drop_id"]) or {}
            item = summary(row) if row else {"id": hit["drop_id"], "day": hit["day"]}
        item["source"] = path
        item["receivedAt"] = hit["received_at"].isoformat() if hit["received_at"] else None
        out.append(item)
    return {"path": path, "drops": out}
