"""One loopback HTTP server for the app's HTTP routes and the Durable extension's webhook API.

The SDK's ``DurableOrchestrationClient`` talks to ``rpcBaseUrl`` (``/durabletask/...``); the management URLs
it hands out (``statusQueryGetUri`` …) use ``/runtime/webhooks/durabletask/...``. Both are served here
with the extension's status codes, so the SDK's own client class runs unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dmf.redact import redact

from .app_loader import FunctionInfo
from .engine import TERMINAL, Engine, InstanceExistsError
from .history import parse_iso
from .keys import HostKeys

log = logging.getLogger("local.functions_runner")

RPC_PREFIX = "/durabletask/"
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask/"


def status_json(
    row: dict[str, Any], show_input: bool = True, history: list[dict] | None = None
) -> dict[str, Any]:
    def load(v: str | None) -> Any:
        return None if v is None else json.loads(v)

    out = {
        "name": row["name"],
        "instanceId": row["instance_id"],
        "runtimeStatus": row["status"],
        "input": load(row.get("input")) if show_input else None,
        "customStatus": load(row.get("custom_status")),
        "output": load(row.get("output")),
        "createdTime": row["created"],
        "lastUpdatedTime": row["updated"],
    }
    if history is not None:
        out["historyEvents"] = history
    return out


def _route_regex(template: str) -> re.Pattern[str]:
    """ASP.NET-style route template (``items/{id}``, ``{id?}``, ``{id:int}``, ``{*rest}``) to a regex."""
    parts = []
    for seg in template.strip("/").split("/"):
        m = re.fullmatch(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(\??)\}", seg)
        if m:
            catch_all, name, optional = m.groups()
            body = f"(?P<{name}>.*)" if catch_all else f"(?P<{name}>[^/]+)"
            parts.append(f"(?:/{body})?" if optional or catch_all else f"/{body}")
        else:
            parts.append("/" + re.escape(seg))
    return re.compile("".join(parts) + "/?$", re.IGNORECASE)


class RunnerHttpServer:
    def __init__(
        self,
        engine: Engine,
        functions: dict[str, FunctionInfo],
        invoke_http: Callable[[FunctionInfo, dict[str, Any]], tuple[int, dict[str, str], bytes]],
        route_prefix: str = "api",
        port: int = 0,
        keys: HostKeys | None = None,
    ) -> None:
        self.engine = engine
        self.invoke_http = invoke_http
        self.keys = keys or HostKeys()
        prefix = f"/{route_prefix}" if route_prefix else ""
        self.routes: list[tuple[re.Pattern[str], set[str] | None, FunctionInfo]] = []
        for fi in functions.values():
            if fi.trigger_type == "httpTrigger":
                route = fi.trigger.get("route") or fi.name
                methods = {m.upper() for m in fi.trigger.get("methods") or []} or None
                self.routes.append((re.compile(re.escape(prefix) + _route_regex(route).pattern), methods, fi))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http %s", redact(fmt % args))

            def _serve(self) -> None:
                outer.engine.add_busy(1)
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else b""
                    status, headers, payload = outer.dispatch(
                        self.command, self.path, dict(self.headers), body
                    )
                except Exception as exc:
                    log.exception("runner HTTP handler error")
                    status, headers = 500, {"Content-Type": "application/json"}
                    payload = json.dumps({"Message": redact(str(exc))}).encode()
                finally:
                    outer.engine.add_busy(-1)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="runner-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ binding data for durable clients
    def client_binding(self, task_hub: str) -> str:
        base = f"{self.base_url}{WEBHOOK_PREFIX.rstrip('/')}"
        qs = f"taskHub={task_hub}&connection=Storage&code={self.keys.system_key}"
        inst = f"{base}/instances/INSTANCEID"
        return json.dumps({
            "taskHubName": task_hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?{qs}",
                "createAndWaitOnNewInstancePostUri":
                    f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?timeout={{timeoutInSeconds}}"
                    f"&pollingInterval={{intervalInSeconds}}&{qs}",
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{inst}?{qs}",
                "sendEventPostUri": f"{inst}/raiseEvent/{{eventName}}?{qs}",
                "terminatePostUri": f"{inst}/terminate?reason={{text}}&{qs}",
                "rewindPostUri": f"{inst}/rewind?reason={{text}}&{qs}",
                "purgeHistoryDeleteUri": f"{inst}?{qs}",
                "restartPostUri": f"{inst}/restart?{qs}",
                "suspendPostUri": f"{inst}/suspend?reason={{text}}&{qs}",
                "resumePostUri": f"{inst}/resume?reason={{text}}&{qs}",
            },
            "baseUrl": base,
            "requiredQueryStringParameters": qs,
            "rpcBaseUrl": f"{self.base_url}{RPC_PREFIX}",
            "httpBaseUrl": "",
        })  # fmt: skip

    def _management_payload(self, instance_id: str) -> dict[str, str]:
        binding = json.loads(self.client_binding(self.engine.durable.hub_name))
        return {k: v.replace("INSTANCEID", quote(instance_id)) for k, v in binding["managementUrls"].items()}

    # ------------------------------------------------------------------ dispatch
    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes):
        parts = urlsplit(raw_path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path.startswith(RPC_PREFIX):  # the worker's own loopback channel: no key, as on the host
            return self._durable(method, path[len(RPC_PREFIX) :], query, body)
        if path.startswith(WEBHOOK_PREFIX):
            if not self.keys.allows_system(headers, query):
                return 401, {}, b""
            return self._durable(method, path[len(WEBHOOK_PREFIX) :], query, body)
        for regex, methods, fi in self.routes:
            m = regex.match(path)
            if m and (methods is None or method in methods):
                if not self.keys.allows(fi.trigger.get("authLevel"), headers, query):
                    return 401, {}, b""  # the host answers a missing or wrong key with an empty 401
                request = {
                    "method": method,
                    "url": f"{self.base_url}{raw_path}",
                    "headers": headers,
                    "query": query,
                    "params": {k: unquote(v) for k, v in m.groupdict().items() if v is not None},
                    "body": body,
                }
                return self.invoke_http(fi, request)
        return 404, {"Content-Type": "text/plain"}, b"Not Found"

    def _json(self, status: int, value: Any, extra: dict[str, str] | None = None):
        return status, {"Content-Type": "application/json", **(extra or {})}, json.dumps(value).encode()

    def _durable(self, method: str, sub: str, q: dict[str, str], body: bytes):
        """The extension's HTTP API: the request's shape and method pick a handler from ``_DURABLE``."""
        seg = [unquote(s) for s in sub.strip("/").split("/")] if sub.strip("/") else []
        text = body.decode() if body else ""
        payload = json.loads(text) if text.strip() else None
        handler = _DURABLE.get((_shape(seg), method))
        if handler is not None:
            return handler(self, seg, q, payload)
        if seg[:1] != ["instances"]:
            return self._json(404, {"Message": f"unknown durable API route {sub}"})
        return self._json(501, {"Message": f"durable API operation {method} {sub} is not supported locally"})

    # ------------------------------------------------------------------ durable API handlers
    def _start(self, seg: list[str], q: dict[str, str], payload: Any):
        name, instance_id = seg[1], (seg[2] if len(seg) == 3 else None)
        try:
            iid = self.engine.start_new(name, instance_id, _input_json(payload))
        except LookupError as exc:
            return self._json(400, {"Message": "One or more of the arguments submitted is incorrect",
                                    "ExceptionMessage": str(exc)})  # fmt: skip
        except InstanceExistsError as exc:
            return self._json(400, {"Message": str(exc), "ExceptionMessage": str(exc)})
        mp = self._management_payload(iid)
        return self._json(202, mp, {"Location": mp["statusQueryGetUri"]})

    def _query(self, q: dict[str, str], payloads: bool = True) -> list[dict[str, Any]]:
        created_from = parse_iso(q["createdTimeFrom"]) if q.get("createdTimeFrom") else None
        created_to = parse_iso(q["createdTimeTo"]) if q.get("createdTimeTo") else None
        statuses = [s for s in q.get("runtimeStatus", "").split(",") if s] or None
        return self.engine.store.query_instances(
            created_from, created_to, statuses, q.get("instanceIdPrefix") or None, payloads=payloads
        )

    def _list(self, seg: list[str], q: dict[str, str], payload: Any):
        show_input = q.get("showInput", "").lower() == "true"
        return self._json(200, [status_json(r, show_input) for r in self._query(q)])

    def _purge_many(self, seg: list[str], q: dict[str, str], payload: Any):
        deleted = sum(
            self.engine.purge(r["instance_id"])
            for r in self._query(q, payloads=False)
            if r["status"] in TERMINAL
        )
        return self._json(200 if deleted else 404, {"instancesDeleted": deleted})

    def _status(self, seg: list[str], q: dict[str, str], payload: Any):
        instance_id = seg[1]
        row = self.engine.store.get_instance(instance_id)
        if row is None:
            return self._json(404, f"No instance with ID '{instance_id}' found.")
        history = None
        if q.get("showHistory", "").lower() == "true":
            history = self.engine.store.load_history(instance_id, row["execution_id"])
        body_out = status_json(row, q.get("showInput", "true").lower() != "false", history)
        return self._json(200 if row["status"] in TERMINAL else 202, body_out)

    def _purge_one(self, seg: list[str], q: dict[str, str], payload: Any):
        deleted = self.engine.purge(seg[1])
        return self._json(200 if deleted else 404, {"instancesDeleted": deleted})

    def _raise_event(self, seg: list[str], q: dict[str, str], payload: Any):
        return self._json(self.engine.raise_event(seg[1], seg[3], _input_json(payload)), None)

    def _terminate(self, seg: list[str], q: dict[str, str], payload: Any):
        return self._json(self.engine.terminate(seg[1], q.get("reason")), None)


def _input_json(payload: Any) -> str | None:
    """The SDK posts df_dumps(input) as JSON: the value received is the serialized input itself."""
    return payload if isinstance(payload, str) or payload is None else json.dumps(payload)


def _shape(seg: list[str]) -> str | None:
    """Which durable API resource a path names: orchestrators/{name}[/{id}], instances, instances/{id}, …"""
    if seg[:1] == ["orchestrators"]:
        return "orchestrators" if len(seg) in (2, 3) else None
    if seg[:1] != ["instances"]:
        return None
    if len(seg) == 1 or seg[1:] == [""]:
        return "instances"
    if len(seg) == 2:
        return "instance"
    if seg[2] == "raiseEvent":
        return "raiseEvent" if len(seg) == 4 else None
    return "terminate" if seg[2] == "terminate" else None


_DURABLE: dict[tuple[str | None, str], Callable[..., tuple[int, dict[str, str], bytes]]] = {
    ("orchestrators", "POST"): RunnerHttpServer._start,
    ("instances", "GET"): RunnerHttpServer._list,
    ("instances", "DELETE"): RunnerHttpServer._purge_many,
    ("instance", "GET"): RunnerHttpServer._status,
    ("instance", "DELETE"): RunnerHttpServer._purge_one,
    ("raiseEvent", "POST"): RunnerHttpServer._raise_event,
    ("terminate", "POST"): RunnerHttpServer._terminate,
}
