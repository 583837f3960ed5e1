"""DMF's blob container, kept in Azurite: SAS URLs with an expiry, uploads, downloads by URL, retention.

F&O hands out SAS URLs to its own storage account; the emulator hands out SAS URLs to Azurite. Azurite
checks SAS expiry against real time; the emulator also checks it against its own clock wherever it
reads a URL itself, so expiry can be tested by advancing the clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from .clock import Clock


class BlobFetchError(Exception):
    """Reading a package URL failed; message phrased like the .NET WebException F&O reports."""


class BlobStore:
    def __init__(
        self, connection_string: str, container: str, clock: Clock, retention_seconds: float
    ) -> None:
        self._service = BlobServiceClient.from_connection_string(connection_string)
        self._container = self._service.get_container_client(container)
        self._clock = clock
        self._retention = timedelta(seconds=retention_seconds)
        self._created: dict[str, datetime] = {}  # blob name -> creation time by the emulator clock
        self._sas_expiry: dict[str, datetime] = {}  # SAS signature -> expiry by the emulator clock
        self._earliest_expiry: datetime | None = None  # when purge_due() next has work
        self._lock = threading.Lock()
        self._short = threading.local()  # a sas_expired fault: this request's SAS lifetime
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass

    @property
    def container_url(self) -> str:
        return self._container.url

    def _sas(self, name: str, permission: BlobSasPermissions, ttl_seconds: float) -> str:
        # No start time and an expiry Azurite accepts whichever clock is ahead; the emulator itself
        # enforces the expiry by its own clock (remembered per signature) when it reads a URL.
        ttl = timedelta(seconds=ttl_seconds)
        emulated_expiry = self._clock.now() + ttl
        expiry = max(emulated_expiry, datetime.now(UTC) + ttl)
        short = getattr(self._short, "seconds", None)
        if short is not None:  # expires by both clocks (Azurite checks real time)
            emulated_expiry = self._clock.now() + timedelta(seconds=short)
            expiry = datetime.now(UTC) + timedelta(seconds=short)
        token = generate_blob_sas(
            account_name=self._service.account_name,
            container_name=self._container.container_name,
            blob_name=name,
            account_key=self._service.credential.account_key,
            permission=permission,
            expiry=expiry,
            protocol="https,http",
        )
        sig = parse_qs(token).get("sig", [""])[0]
        with self._lock:
            self._sas_expiry[sig] = emulated_expiry
        return f"{self._container.url}/{name}?{token}"

    def expire_sas_in(self, seconds: float | None) -> None:
        """SAS URLs this thread issues expire ``seconds`` after issue (a ``sas_expired`` fault); None: normal."""
        self._short.seconds = seconds

    def write_url(self, name: str, ttl_seconds: float) -> str:
        self.track(name)
        return self._sas(name, BlobSasPermissions(read=True, write=True, create=True), ttl_seconds)

    def read_url(self, name: str, ttl_seconds: float) -> str:
        return self._sas(name, BlobSasPermissions(read=True), ttl_seconds)

    def _note_created(self, name: str, when: datetime, replace: bool) -> None:
        with self._lock:
            if replace or name not in self._created:
                self._created[name] = when
            expiry = when + self._retention
            if self._earliest_expiry is None or expiry < self._earliest_expiry:
                self._earliest_expiry = expiry

    def track(self, name: str) -> None:
        self._note_created(name, self._clock.now(), replace=False)

    def upload(self, name: str, data: bytes | Iterator[bytes], length: int | None = None) -> None:
        self._container.upload_blob(name, data, length=length, overwrite=True)
        self._note_created(name, self._clock.now(), replace=True)

    def open_stream(self, name: str) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of a blob, or ResourceNotFoundError (also when retention deleted it)."""
        if self.purge_if_expired(name):
            raise ResourceNotFoundError(f"blob {name} expired")
        downloader = self._container.download_blob(name)
        return downloader.size, downloader.chunks()

    def owns(self, url: str) -> str | None:
        """The blob name when ``url`` points into this container, else None."""
        base = self._container.url.rstrip("/") + "/"
        plain = url.split("?", 1)[0]
        return plain[len(base) :] if plain.startswith(base) else None

    def fetch(self, url: str) -> bytes:
        """GET a package URL as F&O would, enforcing SAS expiry and retention by the emulator clock."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BlobFetchError("Invalid URI: The format of the URI could not be determined.")
        sig = parse_qs(parts.query).get("sig", [""])[0]
        with self._lock:
            expiry = self._sas_expiry.get(sig)
        if expiry is not None and expiry <= self._clock.now():
            raise BlobFetchError("The remote server returned an error: (403) Forbidden.")
        name = self.owns(url)
        if name is not None and self.purge_if_expired(name):
            raise BlobFetchError("The remote server returned an error: (404) Not Found.")
        try:
            resp = requests.get(url, timeout=60)
        except requests.RequestException as exc:
            raise BlobFetchError(f"Unable to connect to the remote server: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            reason = resp.reason or ""
            raise BlobFetchError(f"The remote server returned an error: ({resp.status_code}) {reason}.")
        return resp.content

    def purge_if_expired(self, name: str) -> bool:
        """Delete a blob older than the retention period (by the emulator clock). True if it is gone."""
        with self._lock:
            created = self._created.get(name)
            if created is None or self._clock.now() - created < self._retention:
                return False
            del self._created[name]
        try:
            self._container.delete_blob(name)
        except ResourceNotFoundError:
            pass
        return True

    def purge_expired(self) -> int:
        with self._lock:
            names = list(self._created)
        purged = sum(self.purge_if_expired(n) for n in names)
        with self._lock:
            self._earliest_expiry = min(self._created.values(), default=None)
            if self._earliest_expiry is not None:
                self._earliest_expiry += self._retention
        return purged

    def purge_due(self) -> int:
        """Cheap to call on every request: deletes expired files only when one is due."""
        due = self._earliest_expiry
        if due is None or self._clock.now() < due:
            return 0
        return self.purge_expired()

    def exists(self, name: str) -> bool:
        return self._container.get_blob_client(name).exists()
