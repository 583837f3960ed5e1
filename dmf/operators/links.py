"""Short-lived read links to blobs we hold (copied F&O error files), for an authorised operator's answer.

Identity-based connection (Azure): a user delegation key signs the link, so no account key exists anywhere;
connection string (Azurite, local): the account key signs it. Links are read-only, one blob, at most
``MAX_MINUTES`` long, and are only ever put in an API answer: never logged, never stored.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from dmf.pipeline.services import Services
from dmf.storage import clients

MAX_MINUTES = 15

_lock = threading.Lock()
_delegation: dict[str, tuple[datetime, object]] = {}  # account url → (key expiry, key)


def _delegation_key(svc: Services, now: datetime, expiry: datetime) -> object:
    bs = clients.blob_service(svc.settings)
    with _lock:
        hit = _delegation.get(bs.url)
        if hit is not None and hit[0] >= expiry:
            return hit[1]
    # One key serves many links for an hour; each link still expires after MAX_MINUTES.
    key_expiry = now + timedelta(hours=1)
    key = bs.get_user_delegation_key(now - timedelta(minutes=5), key_expiry)
    with _lock:
        _delegation[bs.url] = (key_expiry, key)
    return key


def read_links(svc: Services, paths: list[str], minutes: int = MAX_MINUTES) -> dict[str, dict[str, str]]:
    """``{path: {"url": ..., "expires": ...}}`` for each ``container/name`` in ``paths``."""
    if not paths:
        return {}
    minutes = min(max(int(minutes), 1), MAX_MINUTES)
    now = datetime.now(UTC)
    expiry = now + timedelta(minutes=minutes)
    bs = clients.blob_service(svc.settings)
    account_key = getattr(bs.credential, "account_key", None) if svc.settings.uses_connection_string else None
    delegation = None if account_key else _delegation_key(svc, now, expiry)
    out = {}
    for path in paths:
        container, _, name = path.partition("/")
        sas = generate_blob_sas(
            bs.account_name,
            container,
            name,
            account_key=account_key,
            user_delegation_key=delegation,
            permission=BlobSasPermissions(read=True),
            start=now - timedelta(minutes=1),
            expiry=expiry,
            protocol=None if bs.url.startswith("http://") else "https",
        )
        url = f"{bs.url.rstrip('/')}/{quote(container)}/{quote(name, safe='/')}?{sas}"
        out[path] = {"url": url, "expires": expiry.isoformat()}
    return out
