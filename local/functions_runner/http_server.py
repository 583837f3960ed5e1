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
        seg = [unquote(s) for s in sub.strip("/").split("/")] if sub.strip("/") else []
        eng = self.engine
        text = body.decode() if body else ""
        payload = json.loads(text) if text.strip() else None
        if seg[:1] == ["orchestrators"] and method == "POST" and len(seg) in (2, 3):
            name, instance_id = seg[1], (seg[2] if len(seg) == 3 else None)
            # The SDK posts df_dumps(input) as JSON: the value received is the serialized input itself.
            input_json = payload if isinstance(payload, str) or payload is None else json.dumps(payload)
            try:
                iid = eng.start_new(name, instance_id, input_json)
            except LookupError as exc:
                return self._json(400, {"Message": "One or more of the arguments submitted is incorrect",
                                        "ExceptionMessage": str(exc)})  # fmt: skip
            except InstanceExistsError as exc:
                return self._json(400, {"Message": str(exc), "ExceptionMessage": str(exc)})
            mp = self._management_payload(iid)
            return self._json(202, mp, {"Location": mp["statusQueryGetUri"]})
        if seg[:1] != ["instances"]:
            return self._json(404, {"Message": f"unknown durable API route {sub}"})
        if len(seg) == 1 or (len(seg) == 2 and seg[1] == ""):
            created_from = parse_iso(q["createdTimeFrom"]) if q.get("createdTimeFrom") else None
            created_to = parse_iso(q["createdTimeTo"]) if q.get("createdTimeTo") else None
            statuses = [s for s in q.get("runtimeStatus", "").split(",") if s] or None
            rows = eng.store.query_instances(
                created_from, created_to, statuses, q.get("instanceIdPrefix") or None
            )
            if method == "GET":
                show_input = q.get("showInput", "").lower() == "true"
                return self._json(200, [status_json(r, show_input) for r in rows])
            if method == "DELETE":
                deleted = sum(eng.purge(r["instance_id"]) for r in rows if r["status"] in TERMINAL)
                return self._json(200 if deleted else 404, {"instancesDeleted": deleted})
        instance_id = seg[1]
        if len(seg) == 2:
            if method == "GET":
                row = eng.store.get_instance(instance_id)
                if row is None:
                    return self._json(404, f"No instance with ID '{instance_id}' found.")
                history = None
                if q.get("showHistory", "").lower() == "true":
                    history = eng.store.load_history(instance_id, row["execution_id"])
                body_out = status_json(row, q.get("showInput", "true").lower() != "false", history)
                code = 200 if row["status"] in TERMINAL else 202
                return self._json(code, body_out)
            if method == "DELETE":
                deleted = eng.purge(instance_id)
                return self._json(200 if deleted else 404, {"instancesDeleted": deleted})
        if len(seg) >= 3 and method == "POST":
            op = seg[2]
            if op == "raiseEvent" and len(seg) == 4:
                input_json = payload if isinstance(payload, str) or payload is None else json.dumps(payload)
                code = eng.raise_event(instance_id, seg[3], input_json)
                return self._json(code, None)
            if op == "terminate":
                return self._json(eng.terminate(instance_id, q.get("reason")), None)
        return self._json(501, {"Message": f"durable API operation {method} {sub} is not supported locally"})
