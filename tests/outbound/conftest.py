"""Fixtures for outbound tests at the domain level: a fresh F&O emulator on the session's real Azurite and
the app's ``Services`` built from the same settings the app reads (unique containers and tables per test)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from dmf.pipeline.services import Services
from dmf.settings import load_settings
from local.azurite import Azurite
from local.fno_emulator import Emulator, EmulatorConfig
from tests.e2e_support import app_settings, reset_app_caches

EXPORT_ACTIVITY = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"  # the emulator's default recurring export
IMPORT_ACTIVITY = "{A0F6F6E5-6F1B-4E4A-9B7D-1E2C3D4F5A6B}"  # ...and its recurring import ("File" job)
DAY = "20261125"


@dataclass
class Env:
    emu: Emulator
    svc: Services
    values: dict[str, str]
    conn: str

    @property
    def archive(self):
        return BlobServiceClient.from_connection_string(self.conn).get_container_client(
            self.svc.settings.archive_container
        )

    def archive_blobs(self) -> list[str]:
        """The archive's blob names; [] only when the container does not exist (nothing was archived).

        Any other failure (a wrong account, an outage) raises: an empty answer must mean "nothing there".
        """
        try:
            return sorted(b.name for b in self.archive.list_blobs())
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise
            return []

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        t = TableServiceClient.from_connection_string(self.conn).get_table_client(
            self.svc.settings.outcomes_table
        )
        try:
            rows = [dict(e) for e in t.list_entities()]
        except ResourceNotFoundError:
            return []
        return sorted((r for r in rows if kind is None or r.get("Kind") == kind), key=lambda r: r["RowKey"])


@pytest.fixture
def make_env(azurite: Azurite, unique_name: str) -> Iterator[Callable[..., Env]]:
    started: list[Emulator] = []

    def make(config: EmulatorConfig | None = None, **overrides: Any) -> Env:
        cfg = config or EmulatorConfig()
        n = len(started)
        cfg = cfg.model_copy(update={"blob_container": f"{unique_name}{n}-dmf"})
        emu = Emulator(cfg, azurite.connection_string).start()
        started.append(emu)
        values = app_settings(
            azurite,
            emu,
            ARCHIVE_CONTAINER=f"{unique_name}{n}-archive",
            OUTCOMES_TABLE=f"{unique_name}{n}outcomes",
            LEDGER_TABLE=f"{unique_name}{n}ledger",
            FNO_MAX_RETRIES="1",
            RECURRING_EXPORTS=json.dumps(
                [{"name": "cust-groups", "environment": "main", "activity_id": EXPORT_ACTIVITY}]
            ),
            **overrides,
        )
        reset_app_caches()
        return Env(emu, Services(load_settings(values)), values, azurite.connection_string)

    yield make
    for emu in started:
        errors = emu.admin.server_errors()
        emu.stop()
        assert not errors, errors
    reset_app_caches()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()
