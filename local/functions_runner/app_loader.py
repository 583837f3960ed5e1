"""Load a Functions app object and describe its functions the way the host indexes them.

``app.get_functions()`` yields each function's bindings (the same JSON the worker reports to the host
during indexing) and the callable the worker would invoke. ``%SETTING%`` tokens are resolved from the
environment, as the host does for trigger and binding properties.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SETTING = re.compile(r"%([^%]+)%")


class AppConfigurationError(RuntimeError):
    """The app declares something the runner (or the host) cannot run."""


def resolve_settings(value: Any, environ: dict[str, str] | None = None) -> Any:
    """Replace each ``%NAME%`` in a string with that app setting, failing loudly when it is missing."""
    if not isinstance(value, str):
        return value
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            raise AppConfigurationError(f"app setting {name!r} (used as %{name}%) is not set")
        return env[name]

    return _SETTING.sub(sub, value)


@dataclass
class FunctionInfo:
    name: str
    trigger_type: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    func: Any  # what the worker calls: the SDK's handle for orchestrators, the user function otherwise
    is_async: bool = False
    params: dict[str, inspect.Parameter] = field(default_factory=dict)

    @property
    def client_binding(self) -> dict[str, Any] | None:
        return next((b for b in self.bindings if b["type"] == "durableClient"), None)


SUPPORTED_TRIGGERS = {
    "orchestrationTrigger", "activityTrigger", "entityTrigger", "httpTrigger", "blobTrigger", "timerTrigger",
}  # fmt: skip
SUPPORTED_EXTRA_BINDINGS = {"durableClient", "http"}


def _parameters(user: Any) -> dict[str, inspect.Parameter]:
    """Parameters with annotations resolved, as the worker resolves them (string annotations included)."""
    try:
        sig = inspect.signature(user)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(inspect.unwrap(user))
    except Exception:
        hints = {}
    return {n: p.replace(annotation=hints.get(n, p.annotation)) for n, p in sig.parameters.items()}


def load_app(app: Any = None, app_module: str = "function_app") -> Any:
    if app is not None:
        return app
    module = importlib.import_module(app_module)
    found = getattr(module, "app", None)
    if found is None:
        raise AppConfigurationError(f"module {app_module!r} has no 'app' object")
    return found


_indexed: dict[int, tuple[Any, list[Any]]] = {}


def get_functions(app: Any) -> list[Any]:
    """``app.get_functions()`` once per app object: the SDK refuses a second indexing of the same app."""
    cached = _indexed.get(id(app))
    if cached is None or cached[0] is not app:
        cached = _indexed[id(app)] = (app, list(app.get_functions()))
    return cached[1]


def index_functions(app: Any) -> dict[str, FunctionInfo]:
    """Every registered function, keyed by function name; unsupported bindings fail at start-up."""
    out: dict[str, FunctionInfo] = {}
    for fn in get_functions(app):
        desc = json.loads(str(fn))
        bindings = desc["bindings"]
        trigger = next((b for b in bindings if b["type"].endswith("Trigger")), None)
        name = fn.get_function_name()
        if trigger is None or trigger["type"] not in SUPPORTED_TRIGGERS:
            kind = trigger["type"] if trigger else "no trigger"
            raise AppConfigurationError(f"function {name!r}: {kind} is not supported by the local runner")
        for b in bindings:
            if b is not trigger and b["type"] not in SUPPORTED_EXTRA_BINDINGS:
                raise AppConfigurationError(
                    f"function {name!r}: binding {b['type']!r} ({b.get('name')}) is not supported locally"
                )
        user = fn.get_user_function()
        params = _parameters(user)
        out[name] = FunctionInfo(
            name=name,
            trigger_type=trigger["type"],
            trigger=trigger,
            bindings=bindings,
            func=user,
            is_async=inspect.iscoroutinefunction(user),
            params=params,
        )
    return out


def load_host_json(path: Path | None) -> dict[str, Any]:
    if path is None or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text())


@dataclass
class DurableSettings:
    hub_name: str = "TestHubName"
    overridable_states: str = "NonRunningStates"
    max_activities: int = 10
    max_orchestrators: int = 5
    route_prefix: str = "api"
    storage_connection_name: str = "AzureWebJobsStorage"

    @classmethod
    def from_host_json(cls, host: dict[str, Any], environ: dict[str, str] | None = None) -> DurableSettings:
        ext = host.get("extensions", {})
        dt = ext.get("durableTask", {})
        s = cls()
        if "hubName" in dt:
            s.hub_name = resolve_settings(dt["hubName"], environ)
        s.overridable_states = dt.get("overridableExistingInstanceStates", s.overridable_states)
        s.max_activities = int(dt.get("maxConcurrentActivityFunctions", s.max_activities))
        s.max_orchestrators = int(dt.get("maxConcurrentOrchestratorFunctions", s.max_orchestrators))
        s.route_prefix = ext.get("http", {}).get("routePrefix", s.route_prefix).strip("/")
        sp = dt.get("storageProvider", {})
        s.storage_connection_name = (
            sp.get("connectionName") or sp.get("connectionStringName") or (s.storage_connection_name)
        )
        return s
