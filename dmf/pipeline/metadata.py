"""The metadata snapshot of each F&O environment, cached in blob storage, and pre-flight for the pipeline.

Blob: ``METADATA_CONTAINER`` (default ``metadata``) / ``<environment>.json`` (the compact ``Snapshot``). Built by
``refresh`` (timer ``metadata_refresh`` on ``%METADATA_REFRESH_SCHEDULE%``, and ``POST /api/metadata/refresh``)
from the labels the routes need; a label first met in a drop is fetched then and added (``entity_for``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from dmf.fno.clients import http_for
from dmf.fno.errors import FnoError
from dmf.fno.metadata import EntityMeta, MetadataApi, MetadataError, Snapshot, SnapshotBuilder, build_snapshot
from dmf.package.catalogue import Catalogue
from dmf.routing import ResolvedRoute, RoutesFile, load_routes
from dmf.settings import Settings
from dmf.storage import clients

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cache: dict[tuple[str, str], tuple[str, Snapshot]] = {}  # (account url, env) -> (etag, snapshot)


def metadata_api(settings: Settings, env_name: str) -> MetadataApi:
    env = settings.environment(env_name)
    return MetadataApi(http_for(settings, env.name), env.api_root)


def route_labels(
    settings: Settings, env_name: str, catalogue: Catalogue, routes: RoutesFile | None = None
) -> list:
    """(label, AOT name hint) for every entity a route of this environment names, and the catalogue's."""
    routes = routes or load_routes(settings)
    default_env = settings.environment(None).name
    out: dict[str, tuple[str, str | None]] = {}
    for r in routes.routes:
        if (r.environment or default_env) != env_name or r.mode != "package" or not r.entity:
            continue
        info = catalogue.get(r.entity)
        out[r.entity.casefold()] = (r.entity, info.target_entity if info else None)
    for info in catalogue:
        out.setdefault(info.label.casefold(), (info.label, info.target_entity))
    return list(out.values())


def _blob(settings: Settings, env_name: str):
    return clients.container(settings, settings.metadata_container).get_blob_client(f"{env_name}.json")


def load(settings: Settings, env_name: str) -> tuple[Snapshot | None, str | None]:
    """The cached snapshot (read again only when its blob changed) and its etag."""
    blob = _blob(settings, env_name)
    key = (blob.url, env_name)
    try:
        etag = blob.get_blob_properties().etag
    except ResourceNotFoundError:
        return None, None
    with _lock:
        hit = _cache.get(key)
    if hit and hit[0] == etag:
        return hit[1], etag
    try:
        raw = blob.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified).readall()
    except (ResourceNotFoundError, ResourceModifiedError):
        return None, None
    try:
        snap = Snapshot.loads(raw)
    except (MetadataError, ValueError, KeyError) as exc:
        log.warning("metadata snapshot of %s is unreadable (%s): ignored", env_name, type(exc).__name__)
        return None, None
    with _lock:
        _cache[key] = (etag, snap)
    return snap, etag


def save(settings: Settings, env_name: str, snap: Snapshot, etag: str | None = None) -> bool:
    """Write the snapshot; with ``etag``, only over that version (False when someone wrote first)."""
    blob = _blob(settings, env_name)
    try:
        if etag:
            blob.upload_blob(
                snap.dumps(), overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        else:
            blob.upload_blob(snap.dumps(), overwrite=True)
    except (ResourceModifiedError, ResourceExistsError):
        return False
    return True


def refresh(settings: Settings, env_name: str, catalogue: Catalogue) -> dict[str, Any]:
    """Fetch a fresh snapshot of what the routes need and store it. Returns a summary (no secrets)."""
    env = settings.environment(env_name)
    failed: list[str] = []
    snap = build_snapshot(
        metadata_api(settings, env.name),
        env.name,
        route_labels(settings, env.name, catalogue),
        settings.metadata_language,
        on_error=lambda label, exc: failed.append(f"{label}: {type(exc).__name__}"),
    )
    save(settings, env.name, snap)
    return {
        "environment": env.name,
        "fetched_at": snap.fetched_at,
        "entities": sorted(e.label for e in snap.entities.values()),
        "unknown": snap.unknown,
        "names": len(snap.names),
        "failed": failed,
    }


def entity_for(settings: Settings, env_name: str, label: str, catalogue: Catalogue) -> Snapshot:
    """The environment's snapshot, with ``label`` in it (as an entity or as unknown): fetched from F&O
    and written back when the cached snapshot does not know it yet. Raises FnoError/MetadataError when F&O
    cannot be asked (the caller skips pre-flight with a warning)."""
    snap, etag = load(settings, env_name)
    if snap is not None and (snap.entity(label) is not None or snap.is_unknown(label)):
        return snap
    api = metadata_api(settings, env_name)
    if snap is None:
        snap = build_snapshot(api, env_name, [], settings.metadata_language)
    info = catalogue.get(label)
    SnapshotBuilder.extend(api, snap).add_label(label, info.target_entity if info else None)
    if save(settings, env_name, snap, etag):
        with _lock:
            _cache.pop((_blob(settings, env_name).url, env_name), None)
    return snap


def options_for(settings: Settings, route: ResolvedRoute):
    from dmf.package.preflight import PreflightOptions

    return PreflightOptions(
        mode=route.preflight or settings.preflight_default,
        date_format=route.date_format,
        datetime_format=route.datetime_format,
        xlsx_formulas=route.xlsx_formulas,
    )


def snapshot_file(path: str | Path) -> Snapshot:
    return Snapshot.loads(Path(path).read_bytes())


__all__ = ["EntityMeta", "FnoError", "entity_for", "load", "options_for", "refresh", "save"]
