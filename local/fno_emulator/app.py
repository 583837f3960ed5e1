"""Wiring of the emulator's parts and its HTTP routes (token, Package API, Recurring Integration)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from urllib.parse import parse_qs

from . import metadata as md
from .blobs import BlobStore
from .calls import CallLog
from .clock import Clock
from .config import EmulatorConfig
from .datastore import DataStore
from .engine import Engine, ODataError
from .faults import FaultInjector
from .recurring import RecurringQueues
from .server import Handler, Result, Route, _Reply, odata_error_body
from .tokens import TokenService

ACTION_PREFIX = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
ONPREM_PREFIX = "/namespaces/AXSF"

_TOKEN_V2 = re.compile(r"^/([^/]+)/oauth2/v2\.0/token/?$")
_DISCOVERY_V2 = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration/?$")
_CONNECTOR = re.compile(r"^/api/connector/(enqueue|dequeue|ack|download|jobstatus)/([^/?]+)/?$")


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> Result:
    return status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers or {}


def _param(body: dict, *names: str, required: bool = True, action: str = "") -> str:
    for n in names:
        if n in body and body[n] is not None:
            return str(body[n])
    if required:
        raise ODataError(
            400, f"The parameter '{names[0]}' is missing.", action, "Microsoft.OData.ODataException"
        )
    return ""


def _bool(body: dict, name: str, default: bool) -> bool:
    v = body.get(name, default)
    return v if isinstance(v, bool) else str(v).lower() == "true"


class EmulatorApp:
    def __init__(self, config: EmulatorConfig, clock: Clock, storage_connection_string: str) -> None:
        self.config = config
        self.clock = clock
        self.store = DataStore()
        self.blobs = BlobStore(
            storage_connection_string, config.blob_container, clock, config.timings.retention_seconds
        )
        self.engine = Engine(config, clock, self.store, self.blobs)
        self.recurring = RecurringQueues(self.engine)
        self.tokens = TokenService(config)
        self.faults = FaultInjector(config.faults, config.fault_seed)
        self.calls = CallLog(clock.now, config.call_log_size)
        self.errors: list[str] = []  # unexpected exceptions (redacted tracebacks), for tests to assert on
        self.base_url = ""
        self.admin_routes: Callable[[str, str], tuple[str, Route]] | None = None

    def set_base_url(self, base_url: str) -> None:
        self.base_url = base_url
        self.tokens.base_url = base_url
        self.recurring.api_root = self.api_root

    @property
    def api_root(self) -> str:
        return self.base_url + (ONPREM_PREFIX if self.config.deployment == "onprem" else "")

    # -- routing ----------------------------------------------------------------------------------
    def route(self, method: str, path: str) -> tuple[str, Route]:
        if path.startswith("/_emulator/") and self.admin_routes is not None:
            return self.admin_routes(method, path)
        if method == "POST" and (m := _TOKEN_V2.match(path)):
            tenant = m.group(1)
            return "token", lambda h, p, q: self._token(h, tenant, adfs=False)
        if method == "POST" and path.rstrip("/") == "/adfs/oauth2/token":
            return "token", lambda h, p, q: self._token(h, "adfs", adfs=True)
        if method == "GET" and (m := _DISCOVERY_V2.match(path)):
            tenant = m.group(1)
            return "discovery", lambda h, p, q: _json(200, self.tokens.openid_configuration(tenant))
        if method == "GET" and path.rstrip("/") == "/adfs/.well-known/openid-configuration":
            return "discovery", lambda h, p, q: _json(200, self.tokens.adfs_openid_configuration())
        if method == "GET" and path.rstrip("/") == "/common/discovery/instance":
            return "discovery", lambda h, p, q: _json(
                200, self.tokens.instance_discovery(q.get("authorization_endpoint", ""))
            )
        api_path = path
        if self.config.deployment == "onprem":
            if not path.startswith(ONPREM_PREFIX + "/"):
                return "not-found", self._not_found
            api_path = path[len(ONPREM_PREFIX) :]
        if api_path.startswith(ACTION_PREFIX) and method == "POST":
            action = api_path[len(ACTION_PREFIX) :].strip("/")
            return action, lambda h, p, q: self._action(h, action)
        if method == "GET" and api_path.lower().startswith("/metadata/"):
            return "metadata", lambda h, p, q: self._metadata(h, api_path[len("/metadata/") :], q)
        if method == "GET" and api_path.rstrip("/") == "/data/DataManagementTargetMapEntities":
            return "metadata", lambda h, p, q: self._target_map(h, q)
        if (m := _CONNECTOR.match(api_path)) and self.config.deployment == "cloud":
            verb, activity = m.group(1), m.group(2)
            expected = "POST" if verb in ("enqueue", "ack") else "GET"
            if method == expected:
                return verb, lambda h, p, q: self._connector(h, verb, activity, q)
        return "not-found", self._not_found

    def _not_found(self, h: Handler, path: str, query: dict[str, str]) -> Result:
        return _json(404, {"Message": f"No HTTP resource was found that matches the request URI '{path}'."})

    def _token(self, h: Handler, tenant: str, adfs: bool) -> Result:
        form = {k: v[0] for k, v in parse_qs(h.body().decode("utf-8", "replace")).items()}
        return _json(200, self.tokens.issue(tenant, form, adfs=adfs), {"Cache-Control": "no-store"})

    def _authorize(self, h: Handler) -> None:
        reason = self.tokens.check(h.headers.get("Authorization"))
        if reason is not None:
            raise _Reply(
                401,
                b"",
                "text/plain",
                {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'},
            )

    # -- Package API ------------------------------------------------------------------------------
    def _envelope(self, value: object, edm: str = "Edm.String") -> Result:
        return _json(200, {"@odata.context": f"{self.api_root}/data/$metadata#{edm}", "value": value},
                     {"OData-Version": "4.0"})  # fmt: skip

    def _action(self, h: Handler, action: str) -> Result:
        self._authorize(h)
        handler = getattr(self, "_a_" + action, None)
        if handler is None:
            raise _Reply(
                404,
                odata_error_body(
                    f"No HTTP resource was found that matches the request URI for action {action}."
                ),
            )
        return handler(h.json_body(), action)

    def _a_GetAzureWriteUrl(self, body: dict, action: str) -> Result:
        name = _param(body, "uniqueFileName", action=action).strip().lstrip("/")
        if not name:
            raise ODataError(400, "uniqueFileName must not be empty.", action)
        url = self.blobs.write_url(name, self.config.timings.sas_ttl_seconds)
        return self._envelope(json.dumps({"BlobId": "{" + str(uuid.uuid4()).upper() + "}", "BlobUrl": url}))

    def _import(self, body: dict, action: str) -> Result:
        execution_id = self.engine.import_from_package(
            package_url=_param(body, "packageUrl", action=action),
            definition_group=_param(body, "definitionGroupId", action=action),
            execution_id=_param(body, "executionId", required=False),
            execute=_bool(body, "execute", True),
            overwrite=_bool(body, "overwrite", True),
            legal_entity=_param(body, "legalEntityId", action=action),
            action=action,
        )
        return self._envelope(execution_id)

    _a_ImportFromPackage = _import
    _a_ImportFromPackageAsync = _import
    _a_ImportFromDMTPackage = _import

    def _export(self, body: dict, action: str) -> Result:
        count = body.get("count", body.get("exportPreviewCount"))
        execution_id = self.engine.export_to_package(
            definition_group=_param(body, "definitionGroupId", action=action),
            package_name=_param(body, "packageName", required=False),
            execution_id=_param(body, "executionId", required=False),
            legal_entity=_param(body, "legalEntityId", action=action),
            action=action,
            count=int(count) if count is not None and "Preview" in action else None,
        )
        if self.config.nested_value_quirk:
            return self._envelope({"value": execution_id})
        return self._envelope(execution_id)

    _a_ExportToPackage = _export
    _a_ExportToPackageAsync = _export
    _a_ExportToPackageDelta = _export
    _a_ExportToPackagePreview = _export
    _a_ExportToPackagePreviewAsync = _export

    def _a_ExportFromPackage(self, body: dict, action: str) -> Result:
        # Export with a package template: the template's data project drives the export.
        return self._export(body, action)

    def _a_GetExportedPackageUrl(self, body: dict, action: str) -> Result:
        url = self.engine.exported_package_url(_param(body, "executionId", action=action), action)
        return self._envelope({"value": url} if self.config.nested_value_quirk else url)

    def _a_GetExecutionSummaryStatus(self, body: dict, action: str) -> Result:
        e = self.engine.get(_param(body, "executionId", action=action), action)
        return self._envelope(e.status(self.clock.now()))

    def _a_GetEntityExecutionSummaryStatusList(self, body: dict, action: str) -> Result:
        e = self.engine.get(_param(body, "executionId", action=action), action)
        now = self.clock.now()
        overall = e.status(now)
        done = overall in ("Succeeded", "PartiallySucceeded", "Failed", "Canceled")
        items = [
            {
                "EntityName": r.label,
                "ExecutionStatus": r.status if done else overall,
                "ExecutionId": e.execution_id,
            }
            for r in e.results
        ]
        return self._envelope(items, "Collection(Microsoft.Dynamics.DataEntities.DMFEntityExecutionStatus)")

    def _a_GetExecutionErrors(self, body: dict, action: str) -> Result:
        return self._envelope(
            self.engine.execution_errors(_param(body, "executionId", action=action), action)
        )

    def _a_GenerateImportTargetErrorKeysFile(self, body: dict, action: str) -> Result:
        ok = self.engine.generate_error_keys(
            _param(body, "executionId", action=action), _param(body, "entityName", action=action), action
        )
        return self._envelope(ok, "Edm.Boolean")

    def _a_GetImportTargetErrorKeysFileUrl(self, body: dict, action: str) -> Result:
        url = self.engine.error_keys_url(
            _param(body, "executionId", action=action), _param(body, "entityName", action=action), action
        )
        return self._envelope(url)

    def _a_GetImportStagingErrorFileUrl(self, body: dict, action: str) -> Result:
        url = self.engine.staging_error_url(
            _param(body, "executionId", action=action), _param(body, "entityName", action=action), action
        )
        return self._envelope(url)

    def _a_GetExecutionSummaryPageUrl(self, body: dict, action: str) -> Result:
        e = self.engine.get(_param(body, "executionId", action=action), action)
        return self._envelope(
            f"{self.base_url}/?cmp={e.legal_entity}&mi=DMFExecutionSummary&executionId={e.execution_id}"
        )

    def _a_GetMessageStatus(self, body: dict, action: str) -> Result:
        return self._envelope(
            self.recurring.message_status(_param(body, "messageId", "_messageId", action=action))
        )

    def _a_GetExecutionIdByMessageId(self, body: dict, action: str) -> Result:
        return self._envelope(
            self.recurring.execution_id_by_message(_param(body, "_messageId", "messageId", action=action))
        )

    def _a_InitializeDataManagement(self, body: dict, action: str) -> Result:
        return self._envelope(True, "Edm.Boolean")

    _a_InitializeDataManagementAsync = _a_InitializeDataManagement

    def _a_DeleteExecutionHistoryJob(self, body: dict, action: str) -> Result:
        execution_id = _param(body, "executionId", action=action)
        with self.engine.lock:
            self.engine.executions.pop(execution_id, None)
        return self._envelope(True, "Edm.Boolean")

    def _a_GetEntitySequence(self, body: dict, action: str) -> Result:
        raw = _param(body, "listOfDataEntities", action=action)
        labels = [x.strip() for x in raw.split(",") if x.strip()]
        seq = [f"{label}:1:1:{i + 1}" for i, label in enumerate(labels)]
        return self._envelope(",".join(seq))

    def _a_ResetVersionToken(self, body: dict, action: str) -> Result:
        _param(body, "definitionGroupId", action=action)
        return self._envelope(True, "Edm.Boolean")

    # -- Metadata service and the DMF target map (see metadata.py) -------------------------------------
    def _odata_collection(self, set_name: str, items: list[dict], q: dict[str, str], base: str) -> Result:
        try:
            body = md.collection(self.api_root, set_name, items, q, self.config.metadata_page_size, base)
        except ValueError as exc:
            raise _Reply(400, odata_error_body(str(exc))) from None
        return _json(200, body, {"OData-Version": "4.0"})

    def _metadata(self, h: Handler, rest: str, q: dict[str, str]) -> Result:
        self._authorize(h)
        sets: dict[str, tuple[list[dict], str]] = {
            "dataentities": ([md.data_entity(e) for e in self.config.catalogue], "Name"),
            "publicentities": ([md.public_entity(e) for e in self.config.catalogue], "Name"),
            "publicenumerations": (md.enumerations(self.config), "Name"),
        }
        rest = rest.strip("/")
        names = {"dataentities": "DataEntities", "publicentities": "PublicEntities",
                 "publicenumerations": "PublicEnumerations"}  # fmt: skip
        if rest.lower() in sets:
            items, _ = sets[rest.lower()]
            return self._odata_collection(names[rest.lower()], items, q, "/Metadata")
        parsed = md.parse_item(rest)
        if parsed is not None:
            set_name, args = parsed
            low = set_name.lower()
            if low == "labels":
                label_id, lang = args.get("Id", ""), args.get("Language", "")
                text = next(
                    (e.label for e in self.config.catalogue if f"@DMF:{e.target_entity}Label" == label_id),
                    None,
                )
                if text is None or not lang:
                    return _json(404, {"error": {"code": "", "message": "Label not found."}})
                return _json(200, {"@odata.context": f"{self.api_root}/metadata/$metadata#Labels/$entity",
                                   "Id": label_id, "Language": lang, "Value": text})  # fmt: skip
            if low in sets:
                items, key = sets[low]
                want = args.get("") or args.get("Name") or ""
                item = next((i for i in items if i[key].lower() == want.lower()), None)
                if item is not None:
                    return _json(200, md.single(self.api_root, names[low], item), {"OData-Version": "4.0"})
                return _json(404, {"error": {"code": "", "message": f"{names[low]} '{want}' was not found."}})
        return self._not_found(h, "/Metadata/" + rest, q)

    def _target_map(self, h: Handler, q: dict[str, str]) -> Result:
        self._authorize(h)
        return self._odata_collection(
            "DataManagementTargetMapEntities", md.target_map(self.config), q, "/data"
        )

    # -- Recurring Integration API ----------------------------------------------------------------
    def _connector(self, h: Handler, verb: str, activity: str, query: dict[str, str]) -> Result:
        self._authorize(h)
        activity = activity.strip()
        if verb == "enqueue":
            limit = self.config.max_enqueue_bytes
            body = h.body_limited(limit) if limit else h.body()
            if body is None:
                return _json(413, {"Message": "The request entity is too large (RequestEntityTooLarge)."})
            message_id = self.recurring.enqueue(
                activity,
                body,
                entity=query.get("entity"),
                company=query.get("company"),
                external_id=h.headers.get("x-ms-dyn-externalidentifier"),
            )
            return 200, json.dumps(message_id).encode(), "application/json; charset=utf-8", {}
        if verb == "dequeue":
            payload = self.recurring.dequeue(activity)
            if payload is None:
                return 204, b"", "application/json", {}
            return _json(200, payload)
        if verb == "ack":
            self.recurring.ack(activity, h.json_body())
            return 200, b"", "application/json", {}
        if verb == "download":
            blob = self.recurring.download_blob(
                activity, query.get("correlation-id", ""), query.get("blob", "")
            )
            size, chunks = self.blobs.open_stream(blob)
            h.send_stream(size, chunks, "application/octet-stream")
            return None
        # jobstatus (legacy): a small DataJobStatusDetail
        message_id = query.get("jobId", "")
        state = self.recurring.message_status(message_id)
        return _json(200, {"DataJobStatus": {"DataJobIdentifier": message_id, "DataJobState": state}})
