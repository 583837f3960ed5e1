"""Operator HTTP endpoints: health and configuration check (``?deep=1``: tokens, storage, gates).

``GET /api/health`` answers 200 ``ok`` only when the settings validate **and** every function is enabled.
Trigger bindings name app settings as ``%NAME%`` (the inbound container, the timer schedules): the host
resolves them when it indexes the functions, no code default can stand in, and an unset one disables that
function (the host and the local runner log it, nothing else notices). Health reports those functions:
503 ``degraded`` with ``disabled_functions`` (each with its missing settings); 500 ``misconfigured`` when
the settings themselves do not validate.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from dmf.operators.health import deep_health
from dmf.pipeline.services import services
from dmf.settings import SettingsError, get_settings

bp = df.Blueprint()

_SETTING = re.compile(r"%([^%]+)%")


def disabled_functions(functions: Iterable[Any], environ: Mapping[str, str] | None = None) -> list[dict]:
    """Functions whose bindings name an app setting (``%NAME%``) that is unset or empty."""
    env = os.environ if environ is None else environ
    out = []
    for fn in functions:
        missing: set[str] = set()
        for binding in fn.get_bindings():
            for value in binding.get_dict_repr().values():
                if isinstance(value, str):
                    missing |= {n for n in _SETTING.findall(value) if not env.get(n, "").strip()}
        if missing:
            out.append({"function": fn.get_function_name(), "missing_settings": sorted(missing)})
    return sorted(out, key=lambda d: d["function"])


def app_functions() -> list[Any]:
    """The functions of the app this blueprint is registered in (``function_app.app``, or whichever loaded
    app module holds the health function).

    Read from the app's function builders, not ``get_functions()``: the SDK refuses a second
    ``get_functions()`` on one app (the worker's indexing was the first).
    """
    modules = [sys.modules.get("function_app"), *list(sys.modules.values())]
    for module in modules:
        app = getattr(module, "app", None)
        if not isinstance(app, func.FunctionRegister):
            continue
        functions = [
            f for b in getattr(app, "_function_builders", []) if (f := getattr(b, "_function", None))
        ]
        if any(f.get_function_name() == "health" for f in functions):
            return functions
    return []


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Reports whether the settings validate, naming each problem if not. Cheap: no call leaves the process.

    ``?deep=1`` also gets a token for each F&O environment, reaches storage and reads every import gate
    (see ``dmf.operators.health``); 503 names what is wrong. A sync function: the worker runs it on a thread.
    """
    disabled = disabled_functions(app_functions())
    try:
        s = get_settings()
        body: dict[str, Any] = {"status": "ok", "environments": sorted(s.environments)}
        code = 200
        if req.params.get("deep", "").lower() in ("1", "true", "yes"):
            body.update(deep_health(services()))
            code = 200 if body["status"] == "ok" else 503
    except SettingsError as exc:
        body, code = {"status": "misconfigured", "problems": str(exc).splitlines()[1:]}, 500
    if disabled:
        body["disabled_functions"] = disabled
        if code == 200:
            body["status"], code = "degraded", 503
    return func.HttpResponse(json.dumps(body), status_code=code, mimetype="application/json")
