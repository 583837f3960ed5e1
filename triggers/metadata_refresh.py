"""Entity metadata snapshots (issue #12): refreshed on a schedule and on an operator's request.

- ``metadata_refresh`` (timer, ``%METADATA_REFRESH_SCHEDULE%``): every F&O environment's snapshot. An unset
  setting disables the trigger (the host applies no default to a binding expression); ``/api/health`` says so.
- ``POST /api/metadata/refresh`` (FUNCTION level; optional body ``{"environment": "main"}``): the same now,
  answering what each snapshot holds (labels, unknown labels, entity count; never a URL or token).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from dmf.fno.errors import FnoError
from dmf.fno.metadata import MetadataError
from dmf.pipeline import metadata as pm
from dmf.pipeline.services import services
from dmf.settings import SettingsError

bp = df.Blueprint()
log = logging.getLogger(__name__)


def refresh_all(environment: str | None = None) -> list[dict[str, Any]]:
    svc = services()
    names = [svc.settings.environment(environment).name] if environment else list(svc.settings.environments)
    out = []
    for name in names:
        try:
            out.append(pm.refresh(svc.settings, name, svc.catalogue))
        except (FnoError, MetadataError) as exc:
            log.warning("metadata refresh of %s failed: %s", name, type(exc).__name__)
            out.append({"environment": name, "error": f"{type(exc).__name__}: {getattr(exc, 'status', '')}"})
    return out


@bp.timer_trigger(
    schedule="%METADATA_REFRESH_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True
)
async def metadata_refresh(timer: func.TimerRequest) -> None:
    for r in await asyncio.to_thread(refresh_all):
        log.info("metadata snapshot %s", json.dumps(r))


@bp.route(route="metadata/refresh", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def metadata_refresh_now(req: func.HttpRequest) -> func.HttpResponse:
    env = None
    body = req.get_body()
    if body:
        try:
            env = (json.loads(body) or {}).get("environment")
        except (ValueError, AttributeError):
            return func.HttpResponse(
                '{"error": "body must be JSON"}', status_code=400, mimetype="application/json"
            )
    try:
        results = await asyncio.to_thread(refresh_all, env)
    except SettingsError as exc:
        return func.HttpResponse(
            json.dumps({"error": str(exc)}), status_code=400, mimetype="application/json"
        )
    code = 200 if all("error" not in r for r in results) else 502
    return func.HttpResponse(
        json.dumps({"snapshots": results}), status_code=code, mimetype="application/json"
    )
