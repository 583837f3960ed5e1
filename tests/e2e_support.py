"""The embedded stack for end-to-end tests: Azurite + F&O emulator + the app's settings (+ the local runner).

``app_settings`` builds the exact settings the app reads, pointing at the emulator over HTTPS (trusted through
``FNO_CA_BUNDLE``) and at Azurite. ``reset_app_caches`` clears the per-process caches (settings, storage and
F&O clients) so each test's settings take effect in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from local.azurite import Azurite
from local.fno_emulator import Emulator


def app_settings(az: Azurite, emu: Emulator, **overrides: Any) -> dict[str, str]:
    values = {
        "AzureWebJobsStorage": az.connection_string,
        "DATA_STORAGE": az.connection_string,
        "TASKHUB_NAME": "e2ehub",
        "INBOUND_BLOB_SOURCE": "LogsAndContainerScan",
        "INBOUND_CONTAINER": "inbound",
        "FNO_ENVIRONMENTS": "main",
        "FNO_MAIN_BASE_URL": emu.base_url,
        "FNO_MAIN_AUTHORITY": emu.authority,
        "FNO_MAIN_TENANT_ID": emu.tenant,
        "FNO_MAIN_CLIENT_ID": emu.client_id,
        "FNO_MAIN_CLIENT_SECRET": emu.client_secret,
        "FNO_MAIN_LEGAL_ENTITY": "USMF",
        "FNO_CA_BUNDLE": emu.ca_bundle_path,
        "POLL_INITIAL_SECONDS": "5",
        "POLL_MAX_INTERVAL_SECONDS": "300",
        "GATE_RECHECK_SECONDS": "30",
        "FNO_HTTP_TIMEOUT_SECONDS": "20",
        "ROUTES_JSON": '{"version": 1, "routes": []}',
    }
    values.update({k: str(v) for k, v in overrides.items()})
    return values


def reset_app_caches() -> None:
    from dmf.fno.clients import reset_clients
    from dmf.pipeline import services as services_mod
    from dmf.settings import get_settings
    from dmf.storage import clients as storage_clients

    get_settings.cache_clear()
    services_mod._services.cache_clear()
    for fn in (storage_clients._blob_service, storage_clients._table_service, storage_clients._credential):
        fn.cache_clear()
    storage_clients._created.clear()
    reset_clients()


@contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Apply settings to os.environ for the block (the app reads its settings from there)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    reset_app_caches()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_app_caches()


# -- test data -----------------------------------------------------------------------------------------
def customer_groups_csv(ids: list[str], *, bad_rows: int = 0, encoding: str = "utf-8", newline: str = "\r\n") -> bytes:
    lines = ["CUSTOMERGROUPID,DESCRIPTION,PAYMENTTERMID"]
    lines += [f"{i},Group {i},Net30" for i in ids]
    # Too long for CUSTOMERGROUPID (max 10): F&O rejects those rows, the rest import.
    lines += [f"TOOLONGGROUPID{n:04d},Bad {n},Net30" for n in range(bad_rows)]
    text = newline.join(lines) + newline
    return text.encode(encoding)
