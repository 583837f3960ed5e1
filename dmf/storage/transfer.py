"""Moving bytes between our containers and F&O's SAS URLs with bounded memory.

Two paths, chosen per call:
- **server-side**: async Copy Blob (``start_copy_from_url``) with a short-lived read SAS on the source. The
  storage service moves the bytes; nothing passes through the Functions worker. Works in Azure (also across
  accounts, e.g. into F&O's ``dmf`` container) and in Azurite (Put Blob/Block From URL do not work there,
  so those are not used).
- **streamed**: download in chunks and stage blocks on the destination, computing MD5 on the way. Used when
  the server-side copy is refused (source not reachable from the destination's service, permissions) and for
  sources that need a bearer token (recurring-integration downloads).
Memory stays at about one block (8 MiB by default) whichever path runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

from dmf.redact import redact_url

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 * 2**20


@dataclass(frozen=True)
class CopyResult:
    method: str  # "server" or "stream"
    size: int
    md5: str | None = None  # base64, as Azure reports Content-MD5


def blob_client_for_url(url: str, *, ca_bundle: str | None = None, timeout: float = 3600) -> BlobClient:
    """A client for a SAS URL handed out by F&O (https in Azure; the emulator's point at Azurite)."""
    kwargs: dict[str, object] = {"connection_timeout": 30, "read_timeout": timeout}
    if ca_bundle and url.startswith("https://"):
        kwargs["connection_verify"] = ca_bundle
    return BlobClient.from_blob_url(url, **kwargs)


def read_sas_url(blob: BlobClient, *, minutes: int = 60) -> str:
    """A read-only SAS URL for one of our blobs: account key locally, user delegation key in Azure."""
    now = datetime.now(UTC)
    start, expiry = now - timedelta(minutes=5), now + timedelta(minutes=minutes)
    cred = blob.credential
    if getattr(cred, "account_key", None):
        token = generate_blob_sas(
            blob.account_name,
            blob.container_name,
            blob.blob_name,
            account_key=cred.account_key,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=expiry,
        )
    else:
        from azure.storage.blob import BlobServiceClient

        svc = BlobServiceClient(blob.primary_endpoint.split(f"/{blob.container_name}/")[0], credential=cred)
        key = svc.get_user_delegation_key(start, expiry)
        token = generate_blob_sas(
            blob.account_name,
            blob.container_name,
            blob.blob_name,
            user_delegation_key=key,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=expiry,
        )
    return f"{blob.url}?{token}"


def _block_id(n: int) -> str:
    return base64.b64encode(f"{n:08d}".encode()).decode()


def stream_to_blob(
    chunks: Iterable[bytes],
    dest: BlobClient,
    *,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
    block_size: int = BLOCK_SIZE,
) -> CopyResult:
    """Write an iterable of byte chunks to ``dest`` as staged blocks; returns size and MD5."""
    from azure.storage.blob import ContentSettings

    md5 = hashlib.md5(usedforsecurity=False)  # integrity check matching Azure's Content-MD5, not security
    buf = bytearray()
    blocks: list[str] = []
    size = 0

    def flush() -> None:
        bid = _block_id(len(blocks))
        dest.stage_block(bid, bytes(buf), length=len(buf))
        blocks.append(bid)
        buf.clear()

    for chunk in chunks:
        if not chunk:
            continue
        md5.update(chunk)
        size += len(chunk)
        buf += chunk
        while len(buf) >= block_size:
            rest = bytes(buf[block_size:])
            del buf[block_size:]
            flush()
            buf += rest
    if buf or not blocks:
        flush()
    digest = md5.digest()
    settings = ContentSettings(content_type=content_type or "application/octet-stream", content_md5=digest)
    dest.commit_block_list(blocks, content_settings=settings, metadata=metadata)
    return CopyResult("stream", size, base64.b64encode(digest).decode())


def iter_file(f: BinaryIO, chunk_size: int = 4 * 2**20) -> Iterator[bytes]:
    while chunk := f.read(chunk_size):
        yield chunk


def stream_blob(src: BlobClient, chunk_size: int = 4 * 2**20, *, etag: str | None = None) -> Iterator[bytes]:
    """Chunks of a blob, downloaded as explicit ranges.

    Explicit ranges keep memory at one chunk: ``download_blob().chunks()`` with the SDK's default
    32 MiB first GET was measured peaking near 3x the blob size against Azurite. With ``etag``, every
    read is pinned to that version (``ResourceModifiedError`` if the blob was replaced meanwhile).
    """
    pin = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    size = src.get_blob_properties(**pin).size
    offset = 0
    while offset < size:
        length = min(chunk_size, size - offset)
        yield src.download_blob(offset=offset, length=length, **pin).readall()
        offset += length


def _wait_for_copy(dest: BlobClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        copy = dest.get_blob_properties().copy
        if copy.status != "pending":
            if copy.status != "success":
                msg = f"server-side copy ended {copy.status}: {copy.status_description}"
                raise HttpResponseError(message=msg)
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(AzureError):
                dest.abort_copy(copy.id)
            raise TimeoutError(f"server-side copy still pending after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def copy_blob(
    src: BlobClient,
    dest: BlobClient,
    *,
    prefer_server_side: bool = True,
    source_url: str | None = None,
    metadata: dict[str, str] | None = None,
    timeout: float = 3600,
) -> CopyResult:
    """Copy ``src`` (one of ours, or any readable SAS URL via ``source_url``) to ``dest``.

    Server-side first when asked; on refusal, a streamed copy. The destination ends up complete or the
    exception says why: never a half-written blob presented as done (blocks are committed at the end).
    """
    if prefer_server_side:
        try:
            url = source_url or read_sas_url(src)
            dest.start_copy_from_url(url, metadata=metadata)
            _wait_for_copy(dest, timeout)
            size = dest.get_blob_properties().size
            return CopyResult("server", size)
        except (AzureError, TimeoutError, ValueError) as exc:
            log.warning("server-side copy to %s refused (%s); streaming instead", redact_url(dest.url), exc)
    chunks = stream_blob(src)
    return stream_to_blob(chunks, dest, metadata=metadata)


def new_block_blob_name(prefix: str, suffix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}{suffix}"
