"""Commands over the app's HTTP API: status, show, retry, cancel, pause/resume, drain-now, export-now."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from dmf.cli.api import Answer, Api, ConnectionFailed, seg, without_secrets
from dmf.cli.output import emit_json, fields, table

OK, FAILED, USAGE = 0, 1, 2
# Drops a day's summary lists as failures (by their effective status, i.e. after retries).
NOT_OK = {"Failed", "Rejected", "PartiallySucceeded", "TimedOut", "Canceled", "Gone", "Unknown"}
MAX_PAGES = 100


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--url", help="the app's base URL (env DMF_API_URL; default http://127.0.0.1:7071)")
    g.add_argument(
        "--key", help="a function key (env DMF_FUNCTION_KEY); sent as x-functions-key, never shown"
    )
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON (for scripts)")
    return p


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = _common()

    def add(name: str, handler: Any, help_: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_, **kw)
        p.set_defaults(cli_handler=lambda a: _run(handler, a))
        return p

    p = add("status", status, "health (deep check), import gates and a day's failures; exit 1 when unhealthy")
    p.add_argument("--day", help="yyyyMMdd (UTC; default today)")
    p = add("show", show, "a drop's detail (DROP_ID) or every drop of a file (<container>/<blob name>)")
    p.add_argument("target", metavar="DROP_ID|PATH")
    p.add_argument(
        "--links", action="store_true", help="include the error files' read links (SAS URLs, 15 min)"
    )
    p = add(
        "retry", retry, "import again the drop's packages that ended Failed or TimedOut; exit 1 if refused"
    )
    p.add_argument("drop_id", metavar="DROP_ID")
    _wait_args(p, "until the retry ends; exit 1 unless it Succeeded")
    p = add("cancel", cancel, "cancel a drop waiting at the import gate; exit 1 if it is not waiting")
    p.add_argument("drop_id", metavar="DROP_ID")
    p = add("pause", pause, "pause an F&O environment's import gate (imports in flight finish)")
    p.add_argument("environment", metavar="ENVIRONMENT")
    p.add_argument("--reason", help="why (shown to other operators)")
    p = add("resume", resume, "resume an F&O environment's import gate (waiters go at once)")
    p.add_argument("environment", metavar="ENVIRONMENT")
    p = add("drain-now", drain_now, "drain a recurring export (RECURRING_EXPORTS) now; exit 1 if one runs")
    p.add_argument("name", metavar="NAME")
    _wait_args(p, "until the drain ends; exit 1 unless its orchestration Completed")
    p = add("export-now", export_now, "run an export job (EXPORT_JOBS) now; exit 1 if one runs")
    p.add_argument("name", metavar="NAME")
    _wait_args(p, "until the export ends; exit 1 unless its orchestration Completed")


def _wait_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true", help=f"wait {what}")
    p.add_argument("--wait-timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="give up waiting after this long (exit 1; default 3600)")  # fmt: skip


def _run(handler: Any, args: argparse.Namespace) -> int:
    api = Api(args.url, args.key, args.timeout)
    args.api = api
    try:
        return int(handler(api, args))
    except ConnectionFailed as exc:
        sys.stderr.write(f"error: {exc}\n")
        return USAGE


def _refused(ans: Answer, args: argparse.Namespace) -> int:
    """A non-2xx answer: 401/403/400 are usage errors (2), anything else a failure or refusal (1)."""
    if args.json:
        emit_json({"status": ans.status, "error": ans.error})
    sys.stderr.write(f"error: {ans.error}\n")
    return USAGE if ans.status in (400, 401, 403) else FAILED


# -- status ---------------------------------------------------------------------------------------------
def _day_drops(api: Api, day: str) -> tuple[list[dict[str, Any]], Answer | None]:
    items: list[dict[str, Any]] = []
    token = None
    for _ in range(MAX_PAGES):
        ans = api.get("drops", day=day, top=200, continuationToken=token)
        if not ans.ok:
            return items, ans
        items += ans.body.get("items", [])
        token = ans.body.get("continuationToken")
        if not token:
            break
    return items, None


def status(api: Api, args: argparse.Namespace) -> int:
    day = args.day or datetime.now(UTC).strftime("%Y%m%d")
    health = api.get("health", deep=1)
    if health.status in (400, 401, 403) or not isinstance(health.body, dict):
        return _refused(health, args)
    gates = api.get("gates")
    if not gates.ok:
        return _refused(gates, args)
    drops, bad = _day_drops(api, day)
    if bad is not None:
        return _refused(bad, args)
    counts = Counter(d.get("effectiveStatus") or d.get("status") or "?" for d in drops)
    failures = [
        {**d, "effective": d.get("effectiveStatus") or d.get("status")}
        for d in drops
        if (d.get("effectiveStatus") or d.get("status")) in NOT_OK
    ]
    healthy = health.ok and health.body.get("status") == "ok"
    if args.json:
        emit_json(
            {
                "healthy": healthy,
                "health": health.body,
                "gates": gates.body.get("gates", []),
                "day": day,
                "drops": dict(sorted(counts.items())),
                "failures": failures,
            }
        )
        return OK if healthy else FAILED
    h = health.body
    print(f"health: {h.get('status')}")
    for p in h.get("problems") or []:
        print(f"  problem: {p}")
    for w in h.get("warnings") or []:
        print(f"  warning: {w}")
    for d in h.get("disabled_functions") or []:
        print(f"  disabled: {d.get('function')} (missing {', '.join(d.get('missing_settings', []))})")
    print("\nimport gates:")
    rows = [
        {
            "environment": g.get("environment"),
            "state": "PAUSED" if g.get("paused") else "open",
            "holders": ", ".join(x.get("instance_id", "?") for x in g.get("holders", [])) or "-",
            "waiting": len(g.get("waiters", [])),
            "note": (f"by {g.get('paused_by')}: {g.get('pause_reason') or ''}" if g.get("paused") else ""),
        }
        for g in gates.body.get("gates", [])
    ]
    table(rows, [("environment", "ENV"), ("state", "STATE"), ("holders", "HOLDER"),
                 ("waiting", "WAITING"), ("note", "NOTE")])  # fmt: skip
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    print(f"\ndrops on {day}: {summary}")
    if failures:
        print("failures:")
        table(
            failures,
            [("id", "DROP"), ("effective", "STATUS"), ("source", "FILE"), ("reason", "REASON")],
            wide=("id", "source"),
        )
    return OK if healthy else FAILED


# -- show ----------------------------------------------------------------------------------------------
def show(api: Api, args: argparse.Namespace) -> int:
    target = args.target.strip()
    if "/" in target:
        return _file_history(api, args, target)
    ans = api.get(f"drops/{seg(target)}")
    if not ans.ok:
        return _refused(ans, args)
    d = without_secrets(ans.body, keep_links=args.links)
    if args.json:
        emit_json(d)
        return OK
    live = d.get("live") or {}
    current = live.get("current") or {}
    stage = live.get("runtimeStatus")
    if stage in ("Running", "Pending"):  # the orchestration's own progress, and its current package's
        stage = " · ".join(str(x) for x in (stage, live.get("stage"), current.get("stage")) if x)
    fields(
        [
            ("drop", d.get("id")),
            ("status", d.get("status")),
            ("effective", d.get("effectiveStatus") if d.get("effectiveStatus") != d.get("status") else None),
            ("file", d.get("source")),
            ("moved to", d.get("archived")),
            ("route", d.get("route")),
            ("environment", d.get("environment")),
            ("legal entity", d.get("legalEntity")),
            ("data project", d.get("project")),
            ("received", d.get("receivedAt")),
            ("finished", d.get("finishedAt")),
            ("live", stage),
            ("reason", d.get("reason")),
            ("retriable", ", ".join(f"package {n}" for n in d.get("retriable", []))),
        ]
    )
    print("\npackages:")
    _packages(d.get("packages", []), args.links)
    if d.get("rejected"):
        print("\nrejected items:")
        table(d["rejected"], [("seq", "SEQ"), ("source", "SOURCE"), ("reason", "REASON")], max_width=100)
    for r in d.get("retries", []):
        print(f"\nretry {r.get('id')}: {r.get('status')}" + (f" — {r['reason']}" if r.get("reason") else ""))
        _packages(r.get("packages", []), args.links)
    return OK


def _packages(packages: list[dict[str, Any]], links: bool) -> None:
    table(
        packages,
        [("seq", "SEQ"), ("status", "STATUS"), ("executionId", "EXECUTION ID"), ("records", "RECORDS"),
         ("errorCount", "ERRORS"), ("errorSummary", "F&O SAYS")],
        wide=("executionId",),
        max_width=80,
    )  # fmt: skip
    for p in packages:
        for f in p.get("errorFiles", []):
            link = f" {f['url']}" if links and f.get("url") else ""
            print(f"  package {p.get('seq')} error file: {f['path']}{link}")


def _file_history(api: Api, args: argparse.Namespace, path: str) -> int:
    ans = api.get("files", path=path)
    if not ans.ok:
        return _refused(ans, args)
    if args.json:
        emit_json(ans.body)
        return OK
    drops = ans.body.get("drops", [])
    print(f"{ans.body.get('path')}: {len(drops)} drop(s), newest first")
    table(
        drops,
        [("id", "DROP"), ("status", "STATUS"), ("effectiveStatus", "EFFECTIVE"), ("receivedAt", "RECEIVED"),
         ("finishedAt", "FINISHED"), ("reason", "REASON")],
        wide=("id",),
    )  # fmt: skip
    return OK


# -- actions -------------------------------------------------------------------------------------------
def _started(ans: Answer, args: argparse.Namespace, what: str, **extra: Any) -> int:
    """A 202 with the Durable check-status payload: print the instance id, never its key-bearing URLs;
    with ``--wait``, follow the instance until it ends."""
    if not ans.ok:
        return _refused(ans, args)
    body: dict[str, Any] = {"started": True, "id": (ans.body or {}).get("id"), **extra}
    if not args.json:
        print(f"{what} started: {body['id']}", flush=True)
    rc = OK
    if getattr(args, "wait", False):
        final = _follow(args.api, (ans.body or {}).get("statusQueryGetUri"), args.wait_timeout)
        body["runtimeStatus"] = final.get("runtimeStatus")
        if final.get("output") is not None:
            body["output"] = final["output"]
        rc = OK if body["runtimeStatus"] == "Completed" else FAILED
        if "drop" in extra and body["runtimeStatus"] == "Completed":  # a retry: what its packages did
            drop = args.api.get(f"drops/{seg(extra['drop'])}")
            run = next((r for r in (drop.body or {}).get("retries", []) if r.get("id") == body["id"]), {})
            body["status"], body["reason"] = run.get("status"), run.get("reason")
            rc = OK if body["status"] == "Succeeded" else FAILED
        if not args.json:
            ended = body.get("status") or body["runtimeStatus"]
            print(f"{body['id']} ended {ended}" + (f": {body['reason']}" if body.get("reason") else ""))
    if args.json:
        emit_json(without_secrets(body))
    return rc


def _follow(api: Api, status_url: str | None, timeout: float) -> dict[str, Any]:
    if not status_url:
        return {"runtimeStatus": "Unknown"}
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        ans = api.follow(status_url)
        body = ans.body if isinstance(ans.body, dict) else {}
        if body.get("runtimeStatus") in ("Completed", "Failed", "Terminated", "Canceled"):
            return body
        if ans.status in (400, 401, 403, 404) and not body.get("runtimeStatus"):
            return {"runtimeStatus": f"Unknown (HTTP {ans.status})"}
        if time.monotonic() > deadline:
            return {"runtimeStatus": body.get("runtimeStatus") or "Unknown", "output": "gave up waiting"}
        time.sleep(delay)
        delay = min(delay * 1.5, 10.0)


def retry(api: Api, args: argparse.Namespace) -> int:
    ans = api.post(f"drops/{seg(args.drop_id)}/retry")
    return _started(ans, args, f"retry of {args.drop_id}", drop=args.drop_id)


def cancel(api: Api, args: argparse.Namespace) -> int:
    ans = api.post(f"drops/{seg(args.drop_id)}/cancel")
    if not ans.ok:
        return _refused(ans, args)
    if args.json:
        emit_json(ans.body)
    else:
        print(f"canceled at the import gate: {', '.join(ans.body.get('canceled', []))}")
    return OK


def _gate(api: Api, args: argparse.Namespace, action: str) -> int:
    body = {"reason": args.reason} if getattr(args, "reason", None) else None
    ans = api.post(f"gates/{seg(args.environment)}/{action}", body)
    if not ans.ok:
        return _refused(ans, args)
    g = ans.body
    if args.json:
        emit_json(g)
        return OK
    state = "paused" if g.get("paused") else "open"
    note = f" ({g['pause_reason']})" if g.get("paused") and g.get("pause_reason") else ""
    print(f"gate {g.get('environment')}: {state}{note}; {len(g.get('waiters', []))} waiting")
    return OK


def pause(api: Api, args: argparse.Namespace) -> int:
    return _gate(api, args, "pause")


def resume(api: Api, args: argparse.Namespace) -> int:
    return _gate(api, args, "resume")


def drain_now(api: Api, args: argparse.Namespace) -> int:
    return _started(api.post(f"outbound/drains/{seg(args.name)}"), args, f"drain of {args.name}")


def export_now(api: Api, args: argparse.Namespace) -> int:
    return _started(api.post(f"outbound/exports/{seg(args.name)}"), args, f"export {args.name}")
