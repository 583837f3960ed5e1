"""Storage clients built once per process from settings.

Locally ``DATA_STORAGE`` is a connection string (Azurite); in Azure the ``DATA_STORAGE__*ServiceUri``
settings and the user-assigned managed identity are used. Code never reads ``AzureWebJobsStorage``: with
identity-based connections it does not exist.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the SDKs load when the first client is built, not when the app is imported
    from azure.data.tables import TableClient, TableServiceClient
    from azure.storage.blob import BlobServiceClient, ContainerClient

    from dmf.settings import Settings

_lock = threading.Lock()
_created: set[tuple[str, str]] = set()


@functools.cache
def _credential(client_id: str | None):
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def _conn(settings: Settings) -> str | None:
    return settings.data_storage.get_secret_value() if settings.data_storage else None


@functools.cache
def _blob_service(conn: str | None, uri: str | None, client_id: str | None) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    if conn:
        return BlobServiceClient.from_connection_string(conn)
    return BlobServiceClient(uri, credential=_credential(client_id))


@functools.cache
def _table_service(conn: str | None, uri: str | None, client_id: str | None) -> TableServiceClient:
    from azure.data.tables import TableServiceClient

    if conn:
        return TableServiceClient.from_connection_string(conn)
    return TableServiceClient(uri, credential=_credential(client_id))


def blob_service(settings: Settings) -> BlobServiceClient:
    return _blob_service(_conn(settings), settings.blob_service_uri, settings.storage_client_id)


def table_service(settings: Settings) -> TableServiceClient:
    return _table_service(_conn(settings), settings.table_service_uri, settings.storage_client_id)


def container(settings: Settings, name: str, *, create: bool = True) -> ContainerClient:
    """A container client; the container is created once per process when missing (idempotent).

    In Azure the template creates every container; creating here keeps local runs and tests self-contained.
    """
    from azure.core.exceptions import ResourceExistsError

    cc = blob_service(settings).get_container_client(name)
    key = (blob_service(settings).url, name)
    if create and key not in _created:
        with _lock:
            if key not in _created:
                with contextlib.suppress(ResourceExistsError):
                    cc.create_container()
                _created.add(key)
    return cc


def table(settings: Settings, name: str, *, create: bool = True) -> TableClient:
    svc = table_service(settings)
    key = (svc.url, "table:" + name)
    if create and key not in _created:
        with _lock:
            if key not in _created:
                svc.create_table_if_not_exists(name)
                _created.add(key)
    return svc.get_table_client(name)
