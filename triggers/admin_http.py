"""Operator HTTP endpoints: health and configuration check."""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func

from dmf.settings import SettingsError, get_settings

bp = df.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Reports whether the settings validate, naming each problem if not."""
    try:
        s = get_settings()
        body = {"status": "ok", "environments": sorted(s.environments)}
        code = 200
    except SettingsError as exc:
        body, code = {"status": "misconfigured", "problems": str(exc).splitlines()[1:]}, 500
    return func.HttpResponse(json.dumps(body), status_code=code, mimetype="application/json")
