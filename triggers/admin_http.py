"""Operator HTTP endpoints: health and configuration check (``?deep=1``: tokens, storage, gates)."""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func

from dmf.operators.health import deep_health
from dmf.pipeline.services import services
from dmf.settings import SettingsError, get_settings

bp = df.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Reports whether the settings validate, naming each problem if not. Cheap: no call leaves the process.

    ``?deep=1`` also gets a token for each F&O environment, reaches storage and reads every import gate
    (see ``dmf.operators.health``); 503 names what is wrong. A sync function: the worker runs it on a thread.
    """
    try:
        s = get_settings()
        body = {"status": "ok", "environments": sorted(s.environments)}
        code = 200
        if req.params.get("deep", "").lower() in ("1", "true", "yes"):
            body.update(deep_health(services()))
            code = 200 if body["status"] == "ok" else 503
    except SettingsError as exc:
        body, code = {"status": "misconfigured", "problems": str(exc).splitlines()[1:]}, 500
    return func.HttpResponse(json.dumps(body), status_code=code, mimetype="application/json")
