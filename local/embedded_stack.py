"""The embedded stack (used by the end-to-end tests and the demo): Azurite + F&O emulator + the app's settings (+ the local runner).

``app_settings`` builds the exact settings the app reads, pointing at the emulator over HTTPS (trusted through
``FNO_CA_BUNDLE``) and at Azurite. ``reset_app_caches`` clears the per-process caches (settings, storage and
F&O clients) so each test's settings take effect in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from local.azurite import Azurite
from local.fno_emulator import Emulator

VIRTUAL_START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # where a stack's virtual clock starts


def app_settings(az: Azurite, emu: Emulator, **overrides: Any) -> dict[str, str]:
    values = {
        "AzureWebJobsStorage": az.connection_string,
        "DATA_STORAGE": az.connection_string,
        "TASKHUB_NAME": "e2ehub",
        "INBOUND_BLOB_SOURCE": "LogsAndContainerScan",
        "INBOUND_CONTAINER": "inbound",
        "DRAIN_SCHEDULE": "0 */5 * * * *",
        "EXPORT_SCHEDULE": "0 * * * * *",
        "HOUSEKEEPING_SCHEDULE": "0 30 2 * * *",
        # Every virtual minute would cost a sweep; waiters recheck and leases cover the rest meanwhile.
        "GATE_SWEEP_SCHEDULE": "0 */30 * * * *",
        "METADATA_REFRESH_SCHEDULE": "0 15 3 * * *",
        "FNO_ENVIRONMENTS": "main",
        "FNO_MAIN_BASE_URL": emu.base_url,
        "FNO_MAIN_AUTHORITY": emu.authority,
        "FNO_MAIN_TENANT_ID": emu.tenant,
        "FNO_MAIN_CLIENT_ID": emu.client_id,
        "FNO_MAIN_CLIENT_SECRET": emu.client_secret,
        "FNO_MAIN_LEGAL_ENTITY": "USMF",
        "FNO_CA_BUNDLE": emu.ca_bundle_path,
        "POLL_INITIAL_SECONDS": "5",
        "GATE_RECHECK_SECONDS": "300",
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


class Stack:
    """Azurite (shared) + a fresh emulator + the app under the local runner, isolated by unique names.

    Each stack gets its own task hub, containers and tables, so tests sharing one Azurite never see each
    other's blobs, rows or orchestrations.
    """

    def __init__(
        self,
        az: Azurite,
        unique: str,
        *,
        virtual_clock: bool = True,
        emulator_config: Any = None,
        emulator_process: bool = False,
        runner_kwargs: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        from local.fno_emulator import EmulatorConfig
        from local.functions_runner import VirtualClock

        self.loop_blocks: list[Any] = []  # blocking calls client functions made on the event loop

        self.az = az
        self.unique = unique
        self.clock = VirtualClock(VIRTUAL_START) if virtual_clock else None
        cfg = emulator_config or EmulatorConfig()
        cfg.blob_container = f"{unique}-dmf"
        self.emu: Any
        if emulator_process:  # F&O's side apart, as in production (``fno_emulator/process.py``)
            from local.fno_emulator.process import EmulatorProcess

            self.emu = EmulatorProcess(cfg, az.connection_string, clock=self.clock)
        else:
            self.emu = Emulator(
                cfg,
                storage_connection_string=az.connection_string,
                clock=self.clock.now if self.clock else None,
            )
        self.names = {
            "TASKHUB_NAME": f"{unique}hub",
            "INBOUND_CONTAINER": f"{unique}-inbound",
            "STAGING_CONTAINER": f"{unique}-staging",
            "PROCESSED_CONTAINER": f"{unique}-processed",
            "FAILED_CONTAINER": f"{unique}-failed",
            "REJECTED_CONTAINER": f"{unique}-rejected",
            "ERRORS_CONTAINER": f"{unique}-errors",
            "ARCHIVE_CONTAINER": f"{unique}-archive",
            "OUTCOMES_TABLE": f"{unique}outcomes",
            "GATES_TABLE": f"{unique}gates",
            "LEDGER_TABLE": f"{unique}ledger",
        }
        self.extra = settings
        self.runner_kwargs = runner_kwargs or {}
        self.runner: Any = None

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Stack:
        from azure.storage.blob import BlobServiceClient

        self.emu.start()
        self.settings = app_settings(self.az, self.emu, **self.names, **self.extra)
        self.blobs = BlobServiceClient.from_connection_string(self.az.connection_string)
        self.blobs.create_container(self.names["INBOUND_CONTAINER"])
        self.start_runner()
        return self

    def start_runner(self) -> None:
        from local.functions_runner import LocalRunner

        reset_app_caches()
        kwargs = {"blob_poll_interval": 0.2, **self.runner_kwargs}
        self.runner = LocalRunner(
            app_module="function_app", settings=self.settings, clock=self.clock, **kwargs
        )
        self.runner.start()

    def enable_business_events(self, key: str | None = None, path: str = "/api/fno/events") -> None:
        """Let the emulator post F&O's DMF import-status business event to the app's endpoint (with the
        runner's function key unless ``key`` says otherwise) when an import finishes. With the virtual clock
        each finish time is also a runner timer, so the clock stops there and the events arrive at that
        virtual instant (the timer's action posts them and returns once the app has answered)."""
        events = self.emu.business_events
        events.configure(self.runner.http_base_url + path, self.runner.function_key if key is None else key)
        if self.clock is not None:
            events.on_scheduled = lambda when: self.runner.engine.add_timer(
                when, events.emit_due, kind="fno-business-event"
            )

    def stop_runner(self) -> None:
        if self.runner is not None:
            self.loop_blocks.extend(self.runner.loop_blocks)
            self.runner.stop()
            self.runner = None
        reset_app_caches()

    def stop(self) -> None:
        self.stop_runner()
        self.emu.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # actions ---------------------------------------------------------------------------------------
    def drop(self, name: str, data: bytes) -> None:
        self.blobs.get_blob_client(self.names["INBOUND_CONTAINER"], name).upload_blob(data, overwrite=True)

    def settle(self, timeout: float = 180.0) -> None:
        """Wait until every drop is picked up and nothing is runnable (virtual time advances meanwhile)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            self.runner.wait_until_idle(timeout=max(deadline - time.monotonic(), 1))
            time.sleep(0.6)  # let the blob scanner look once more
            self.runner.wait_until_idle(timeout=max(deadline - time.monotonic(), 1))
            if not list(self.container("INBOUND_CONTAINER").list_blobs()) or time.monotonic() > deadline:
                return
            if all(self._handled(b.name) for b in self.container("INBOUND_CONTAINER").list_blobs()):
                return

    def _handled(self, name: str) -> bool:
        return name.endswith(".reason.txt") or "/_" in "/" + name

    # reading ---------------------------------------------------------------------------------------
    def container(self, setting: str) -> Any:
        return self.blobs.get_container_client(self.names[setting])

    def blob_names(self, setting: str) -> list[str]:
        try:
            return sorted(b.name for b in self.container(setting).list_blobs())
        except Exception:
            return []

    def outcomes(self) -> list[dict[str, Any]]:
        from azure.data.tables import TableServiceClient

        t = TableServiceClient.from_connection_string(self.az.connection_string).get_table_client(
            self.names["OUTCOMES_TABLE"]
        )
        try:
            return sorted((dict(e) for e in t.list_entities()), key=lambda e: e["RowKey"])
        except Exception:
            return []

    def drops(self) -> list[dict[str, Any]]:
        return [r for r in self.outcomes() if r.get("Kind") == "drop"]

    def drop_row(self, name: str) -> dict[str, Any]:
        rows = [r for r in self.drops() if r.get("SourceBlob", "").endswith("/" + name)]
        assert len(rows) == 1, f"expected one drop row for {name}, got {rows}"
        return rows[0]

    def packages(self, drop: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in self.outcomes() if r["RowKey"].startswith(drop["RowKey"] + "~")]

    def import_calls(self) -> list[dict[str, Any]]:
        return [
            c
            for c in self.emu.admin.calls()
            if c["endpoint"] in ("ImportFromPackage", "ImportFromPackageAsync")
        ]
