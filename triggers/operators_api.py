"""Operators' API and console: drops, files, retry/cancel, gate pause/resume, outbound runs, OpenAPI.

Routes are FUNCTION-level (a function key, or App Service authentication in front: docs/OPERATIONS.md).
The logic lives in ``dmf.operators``; here requests are parsed and answered. ``async def`` routes run on
the worker's event loop, so every Table/Blob/F&O call goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from dmf.gate import gate_service
from dmf.operators import OperatorError, console, openapi
from dmf.operators import drops as ops_drops
from dmf.operators import retry as ops_retry
from dmf.operators.links import read_links
from dmf.pipeline.ids import package_instance_id
from dmf.pipeline.payloads import to_wire
from dmf.pipeline.services import services
from dmf.settings import SettingsError

bp = df.Blueprint()
log = logging.getLogger(__name__)

FN = func.AuthLevel.FUNCTION
_RUNNING = {df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending}


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=_default),
        status_code=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _default(v: object) -> object:
    return v.isoformat() if isinstance(v, datetime) else str(v)


def _error(exc: Exception) -> func.HttpResponse:
    if isinstance(exc, OperatorError):
        return _json({"error": str(exc)}, exc.status)
    if isinstance(exc, SettingsError):
        return _json({"error": "the app is misconfigured: see /api/health"}, 500)
    raise exc


def _who(req: func.HttpRequest) -> str:
    """The caller as App Service authentication names it (Entra ID in front), else 'function key'.

    The header is trusted only when App Service authentication is on (it then strips any such header a
    caller sends); without it, anyone holding a key could claim any name.
    """
    if os.environ.get("WEBSITE_AUTH_ENABLED", "").lower() == "true":
        name = req.headers.get("x-ms-client-principal-name")
        if name:
            return name[:200]
    return "function key"


def _listing(req: func.HttpRequest, kind: str) -> func.HttpResponse:
    try:
        p = req.params
        page = ops_drops.list_rows(
            services(),
            p.get("day"),
            kind,
            dict(p),
            token=p.get("continuationToken"),
            page_size=int(p["top"]) if p.get("top", "").isdigit() else None,
        )
    except (OperatorError, SettingsError) as exc:
        return _error(exc)
    return _json(page)


# -- drops -------------------------------------------------------------------------------------------
@bp.route(route="drops", methods=["GET"], auth_level=FN)
def list_drops(req: func.HttpRequest) -> func.HttpResponse:
    """One day's drops (default today, UTC), filtered, paged with ``continuationToken``."""
    return _listing(req, "drop")


def _progress(status: Any) -> dict[str, Any] | None:
    if status is None or status.runtime_status is None:
        return None
    custom = status.custom_status
    if isinstance(custom, str):
        try:
            custom = json.loads(custom)
        except ValueError:
            custom = {"stage": custom}
    return {"runtimeStatus": status.runtime_status.value, **(custom if isinstance(custom, dict) else {})}


async def _live(client: df.DurableOrchestrationClient, run_id: str) -> dict[str, Any] | None:
    """The run's progress and, while it imports, its current package's (waiting at the gate, polling)."""
    live = _progress(await client.get_status(run_id))
    if live and live.get("stage") == "importing":
        seq = live.get("seq") or live.get("package")
        if seq:
            live["current"] = _progress(await client.get_status(package_instance_id(run_id, int(seq))))
    return live


@bp.route(route="drops/{id}", methods=["GET"], auth_level=FN)
@bp.durable_client_input(client_name="client")
async def get_drop(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A drop: its packages (with F&O's errors and read links to the copied error files, ≤ 15 minutes),
    rejected items, retries and live progress."""
    drop_id = req.route_params.get("id", "")
    svc = services()
    try:
        detail = await asyncio.to_thread(ops_drops.drop_rows, svc, drop_id, req.params.get("day"))
        links = await asyncio.to_thread(read_links, svc, ops_drops.error_file_paths(detail))
    except (OperatorError, SettingsError) as exc:
        return _error(exc)
    latest = ops_drops.latest_packages(detail)
    retries = []
    for run_id, rows in sorted(detail["retries"].items()):
        head = next((r for r in rows if r["RowKey"] == run_id), {})
        retries.append(
            {
                **ops_drops.summary(head),
                "packages": [ops_drops.package_view(r, links) for r in rows if r["RowKey"] != run_id],
                "live": await _live(client, run_id)
                if head.get("Status") not in ("Succeeded", "Failed")
                else None,
            }
        )
    body = {
        **ops_drops.summary(detail["drop"]),
        "packages": [ops_drops.package_view(r, links) for r in detail["packages"]],
        "rejected": [
            {
                "seq": ops_drops.seq_of(r["RowKey"].replace("~r", "~")),
                "reason": r.get("Reason"),
                "source": r.get("SourceBlob"),
            }
            for r in detail["rejected"]
        ],
        "retries": retries,
        "retriable": sorted(n for n, r in latest.items() if r.get("Status") in ops_retry.RETRIABLE),
        "live": await _live(client, drop_id),
        "linksExpireMinutes": 15,
    }
    return _json(body)


@bp.route(route="files", methods=["GET"], auth_level=FN)
def file_history(req: func.HttpRequest) -> func.HttpResponse:
    """Every drop of one blob name (``path=<container>/<name>``), newest first, from the index."""
    try:
        return _json(ops_drops.files(services(), req.params.get("path", "")))
    except (OperatorError, SettingsError) as exc:
        return _error(exc)


@bp.route(route="drops/{id}/retry", methods=["POST"], auth_level=FN)
@bp.durable_client_input(client_name="client")
async def retry_drop_route(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Import again the drop's packages that ended Failed or TimedOut (never a Succeeded one)."""
    drop_id = req.route_params.get("id", "")
    svc = services()
    status = await client.get_status(drop_id)
    if status is not None and status.runtime_status in _RUNNING:
        return _json({"error": f"drop {drop_id} is still running: retry it once it has ended"}, 409)
    try:
        # A retry whose orchestration ended without recording its end (terminated, crashed) must not block.
        for run_id, asked_at in await asyncio.to_thread(ops_retry.unfinished_retries, svc, drop_id):
            st = await client.get_status(run_id)
            if st is None or st.runtime_status is None:
                # Not started (yet): another request may be between writing the row and starting it.
                if asked_at is None or (datetime.now(UTC) - asked_at).total_seconds() < 300:
                    continue
            elif st.runtime_status in _RUNNING:
                continue
            await asyncio.to_thread(ops_retry.abandon_run, svc, drop_id, run_id)
        plan = await asyncio.to_thread(ops_retry.plan_retry, svc, drop_id, _who(req))
    except (OperatorError, SettingsError) as exc:
        return _error(exc)
    try:
        await client.start_new("retry_drop", plan.retry_id, to_wire(plan))
    except Exception as exc:
        await asyncio.to_thread(ops_retry.abandon, svc, plan, f"could not start: {type(exc).__name__}")
        raise
    log.info("retry %s of %s started by %s", plan.retry_id, drop_id, _who(req))
    return client.create_check_status_response(req, plan.retry_id)


@bp.route(route="drops/{id}/cancel", methods=["POST"], auth_level=FN)
@bp.durable_client_input(client_name="client")
async def cancel_drop(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Cancel a drop (or its retry) whose package waits at the import gate: nothing of it reaches F&O.
    A drop already importing, or between steps, is not canceled (409 says what it is doing)."""
    drop_id = req.route_params.get("id", "")
    svc = services()
    now = datetime.now(UTC)

    def cancel() -> list[str]:
        detail = ops_drops.drop_rows(svc, drop_id)
        env = detail["drop"].get("Environment")
        if not env:
            raise OperatorError(f"drop {drop_id} has no environment yet (still planning)")
        return gate_service(svc).cancel_waiting(env, drop_id, now)

    try:
        canceled = await asyncio.to_thread(cancel)
    except (OperatorError, SettingsError) as exc:
        return _error(exc)
    if not canceled:
        live = await _live(client, drop_id)
        stage = (live or {}).get("stage") or (live or {}).get("runtimeStatus") or "not running"
        return _json({"error": f"drop {drop_id} is not waiting at the import gate (it is {stage})"}, 409)
    # Wake it now: it sees the cancel and records Canceled.
    await gate_service(svc).hand_over(client, canceled, reason="canceled")
    log.warning("drop %s canceled at the gate by %s (%s)", drop_id, _who(req), canceled)
    return _json({"canceled": canceled, "drop": drop_id}, 202)


# -- gates --------------------------------------------------------------------------------------------
async def _pause(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, paused: bool
) -> func.HttpResponse:
    name = req.route_params.get("environment", "")
    svc = services()
    try:
        body = req.get_json() if req.get_body() else {}
    except ValueError:
        body = {}
    reason = body.get("reason") if isinstance(body, dict) else None
    try:
        env = svc.settings.environment(name).name
    except Exception:
        return _json({"error": f"no F&O environment {name!r}"}, 404)

    def act() -> tuple[list[str], dict[str, Any]]:
        why = reason if isinstance(reason, str) else None
        wake = gates.pause(env, paused, datetime.now(UTC), by=_who(req), reason=why)
        return wake, gates.status(env)

    gates = gate_service(svc)
    wake, snap = await asyncio.to_thread(act)
    await gates.hand_over(client, wake)  # resumed: the first waiters go now, not at their next recheck
    return _json(snap)


@bp.route(route="gates/{environment}/pause", methods=["POST"], auth_level=FN)
@bp.durable_client_input(client_name="client")
async def pause_gate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """No new ImportFromPackage starts in the environment; imports in flight finish; waiters keep their place."""
    return await _pause(req, client, True)


@bp.route(route="gates/{environment}/resume", methods=["POST"], auth_level=FN)
@bp.durable_client_input(client_name="client")
async def resume_gate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _pause(req, client, False)


# -- outbound -----------------------------------------------------------------------------------------
@bp.route(route="outbound/drains", methods=["GET"], auth_level=FN)
def list_drains(req: func.HttpRequest) -> func.HttpResponse:
    """A day's drain runs of recurring exports, from the outcome table."""
    return _listing(req, "drain")


@bp.route(route="outbound/messages", methods=["GET"], auth_level=FN)
def list_messages(req: func.HttpRequest) -> func.HttpResponse:
    """A day's drained messages (archived, verified, acknowledged)."""
    return _listing(req, "message")


@bp.route(route="outbound/exports", methods=["GET"], auth_level=FN)
def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    """A day's scheduled export runs."""
    return _listing(req, "export")


# -- documents ----------------------------------------------------------------------------------------
@bp.route(route="openapi.json", methods=["GET"], auth_level=FN)
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    return _json(openapi.document())


@bp.route(route="console", methods=["GET"], auth_level=FN)
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    """The operators' console: one page, no build step; it reads its key from its own ``?code=``."""
    return func.HttpResponse(
        console.page(),
        mimetype="text/html",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",  # the page's URL carries the key
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        },
    )
