"""What every pipeline step needs, built once per worker process."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.storage.blob import BlobClient

from dmf.gate import ImportGate
from dmf.ledger import Ledger
from dmf.logs import log_context
from dmf.package.catalogue import Catalogue, EntityInfo, default_catalogue
from dmf.package.limits import Limits
from dmf.routing import load_routes
from dmf.settings import Settings, get_settings
from dmf.storage import clients
from dmf.storage.outcomes import OutcomeStore


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    # The time timers and housekeeping count from: the wall clock, or a test's (no real sleeps).
    clock: Callable[[], datetime] = field(default=utc_now, compare=False)

    def now(self) -> datetime:
        return self.clock()

    @functools.cached_property
    def outcomes(self) -> OutcomeStore:
        return OutcomeStore(clients.table(self.settings, self.settings.outcomes_table))

    @functools.cached_property
    def ledger(self) -> Ledger:
        return Ledger(clients.table(self.settings, self.settings.ledger_table))

    def gate(self, environment: str) -> ImportGate:
        env = self.settings.environment(environment)
        return ImportGate(
            clients.table(self.settings, self.settings.gates_table), env.name, env.import_permits
        )

    def blob(self, container: str, name: str) -> BlobClient:
        return clients.container(self.settings, container).get_blob_client(name)

    def blob_at(self, path: str) -> BlobClient:
        """A blob from ``container/name``."""
        container, _, name = path.partition("/")
        return self.blob(container, name)

    @functools.cached_property
    def catalogue(self) -> Catalogue:
        extra = [EntityInfo(**e) for e in load_routes(self.settings).entities]
        return default_catalogue().extended(extra)

    def limits(self, max_rows: int | None = None) -> Limits:
        s = self.settings
        values = {limit: getattr(s, setting) for limit, setting in _LIMIT_SETTINGS.items()}
        return Limits(**{**values, "max_rows_per_package": max_rows or s.package_max_rows})


# Limits field → the setting that sets it (docs/INBOUND.md "Limits").
_LIMIT_SETTINGS = {
    "max_rows_per_package": "package_max_rows",
    "max_bytes_per_package": "package_max_bytes",
    "max_uncompressed_bytes": "zip_max_uncompressed_bytes",
    "max_ratio": "zip_max_ratio",
    "max_entries": "zip_max_entries",
    "max_name_chars": "file_name_max_chars",
    "max_record_chars": "record_max_chars",
    "max_input_bytes": "input_max_bytes",
    "max_package_file_bytes": "package_file_max_bytes",
}


@functools.cache
def _services(settings_id: int) -> Services:
    return Services(get_settings())


def services() -> Services:
    s = get_settings()
    return _services(id(s))


P = TypeVar("P")
R = TypeVar("R")


def run_step(step: Callable[[Services, P], R], payload: P, **log_fields: Any) -> R:
    """An activity's pipeline step with this worker's services; its log lines carry ``log_fields``."""
    with log_context(**log_fields):
        return step(services(), payload)
