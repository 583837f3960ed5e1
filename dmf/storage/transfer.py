"""Moving bytes between our containers and F&O's SAS URLs with bounded memory.

Two paths, chosen per call:
- **server-side**: async Copy Blob (``start_copy_from_url``) with a short-lived read SAS on the source. The
  storage service moves the bytes; nothing passes through the Functions worker. Works in Azure (also across
  accounts, e.g. into F&O's ``dmf`` container) and in Azurite (Put Blob/Block From URL do not work there,
  so those are not used).
- **streamed**: download in chunks and stage blocks on the destination, computing MD5 on the way. Used when
  the server-side copy is refused (source not reachable from the destination's service, permissions) and for
  sources that need a bearer token (recurring-integration downloads).

A streamed transfer of known size up to ``SINGLE_PUT_MAX`` goes up as **one Put Blob whose body streams**
(``upload_stream``): one request instead of one per 4 MiB block plus a commit, which Azurite serves at a
fraction of the CPU it spends on Put Block (and Azure bills as one transaction). Memory stays at the one
chunk being sent plus the reads ahead. A Put Blob replaces the blob whole or not at all, so a failure leaves
no half-written blob either; it is repeated whole (``PUT_ATTEMPTS``, the one retry layer for that call:
the SDK's own retries cannot rewind a streamed body, so they are off for it).

Other streamed transfers run in parallel with bounded memory: reads are ranged GETs with up to
``READ_CONCURRENCY`` ranges in flight ahead of the consumer (who still sees them in order), and uploads stage
up to ``MAX_CONCURRENCY`` blocks at once while the caller's thread reads and hashes the next one in order.
At most ``READ_CONCURRENCY + 1`` chunks (4 MiB) and ``MAX_CONCURRENCY + 2`` blocks (4 MiB) are held at a
time, whatever the size of the blob. Put Block and ranged GETs are idempotent, so the storage SDK's own
retries apply to each of them; blocks are committed only once every one of them is staged, so a failed
transfer never leaves a half-written blob presented as done.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

from dmf.redact import redact_url

log = logging.getLogger(__name__)

BLOCK_SIZE = 4 * 2**20  # staged block size (50,000 blocks cap a blob at ~195 GiB)
CHUNK_SIZE = 4 * 2**20  # ranged GET size
MAX_CONCURRENCY = 4  # blocks being staged at once
# Ranges read ahead of the consumer. Each ranged GET costs about 3x its size in resident memory inside the
# SDK and urllib3 while it runs (and allocates far more that is never touched), so reads go two at a time.
READ_CONCURRENCY = 2
# Put Blob takes up to 5,000 MiB (service version 2019-12-12 on); larger transfers are staged in blocks.
SINGLE_PUT_MAX = 4 * 2**30
PUT_ATTEMPTS = 3


@dataclass(frozen=True)
class CopyResult:
    method: str  # "server" or "stream"
    size: int
    md5: str | None = None  # base64, as Azure reports Content-MD5


def blob_client_for_url(
    url: str, *, ca_bundle: str | None = None, timeout: float = 3600, retry_total: int | None = None
) -> BlobClient:
    """A client for a SAS URL handed out by F&O (https in Azure; the emulator's point at Azurite).

    ``retry_total=0`` when the caller's own loop retries the step (docs/RETRIES.md); else the SDK's policy.
    """
    kwargs: dict[str, object] = {"connection_timeout": 30, "read_timeout": timeout}
    if retry_total is not None:
        kwargs["retry_total"] = retry_total
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


def _blocks(chunks: Iterable[bytes], block_size: int) -> Iterator[bytes]:
    """Re-cut a stream of chunks into blocks of exactly ``block_size`` (the last may be shorter).

    One copy per block at most; a chunk that already is a whole block passes through untouched.
    """
    parts: list[memoryview] = []
    have = 0
    for chunk in chunks:
        if not chunk:
            continue
        if not parts and len(chunk) == block_size:
            yield bytes(chunk)
            continue
        view = memoryview(chunk)
        while view:
            take = min(block_size - have, len(view))
            parts.append(view[:take])
            have += take
            view = view[take:]
            if have == block_size:
                yield b"".join(parts)
                parts.clear()
                have = 0
    if parts:
        yield b"".join(parts)


class _BoundedPool:
    """Runs at most ``limit`` jobs at once; ``submit`` waits for a free slot, so at most ``limit`` jobs'
    arguments (blocks) are alive besides the caller's own. The first failure is raised by ``submit`` or
    ``drain``; jobs not started yet are then cancelled."""

    def __init__(self, limit: int, name: str) -> None:
        self.limit = max(1, limit)
        self.pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix=name)
        self.running: set[Future] = set()

    def _reap(self, return_when: str) -> None:
        done, self.running = wait(self.running, return_when=return_when)
        for f in done:
            f.result()

    def submit(self, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        while len(self.running) >= self.limit:
            self._reap(FIRST_COMPLETED)
        self.running.add(self.pool.submit(fn, *args, **kwargs))

    def drain(self) -> None:
        while self.running:
            self._reap(FIRST_COMPLETED)

    def __enter__(self) -> _BoundedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.running:
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


def stream_to_blob(
    chunks: Iterable[bytes],
    dest: BlobClient,
    *,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
    block_size: int = BLOCK_SIZE,
    max_concurrency: int = MAX_CONCURRENCY,
) -> CopyResult:
    """Write an iterable of byte chunks to ``dest`` as staged blocks; returns size and MD5.

    The chunks are read and hashed in order on the caller's thread; up to ``max_concurrency`` blocks are
    staged in parallel. The block list is committed, with the whole blob's Content-MD5, only when every
    block is staged: on any failure nothing is committed and the exception propagates.
    """
    from azure.storage.blob import ContentSettings

    md5 = hashlib.md5(usedforsecurity=False)  # integrity check matching Azure's Content-MD5, not security
    blocks: list[str] = []
    size = 0
    with _BoundedPool(max_concurrency, "stage-block") as pool:
        for block in _blocks(chunks, block_size):
            md5.update(block)
            size += len(block)
            bid = _block_id(len(blocks))
            blocks.append(bid)
            pool.submit(dest.stage_block, bid, block, length=len(block))
            del block  # only the pool keeps it alive now
        if not blocks:
            bid = _block_id(0)
            blocks.append(bid)
            pool.submit(dest.stage_block, bid, b"", length=0)
        pool.drain()
    digest = md5.digest()
    settings = ContentSettings(content_type=content_type or "application/octet-stream", content_md5=digest)
    dest.commit_block_list(blocks, content_settings=settings, metadata=metadata)
    return CopyResult("stream", size, base64.b64encode(digest).decode())


class _Body:
    """A request body streamed from an iterator of chunks, hashed and counted as they go out.

    Iterable with a ``len()``: ``requests`` sends it with that Content-Length (not chunked), and the HTTP
    client writes each chunk as it comes (a file-like body would be read 16 KiB at a time)."""

    def __init__(self, chunks: Iterable[bytes], size: int, hash_it: bool = True) -> None:
        self._chunks = chunks
        self._size = size
        # Azure's Content-MD5, not security; not needed when the service checks a known one
        self.md5 = hashlib.md5(usedforsecurity=False) if hash_it else None
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self.sent + len(chunk) > self._size:
                raise OSError(f"the source gives more than the {self._size} bytes announced")
            if self.md5 is not None:
                self.md5.update(chunk)
            self.sent += len(chunk)
            yield chunk
        if self.sent != self._size:  # never leave the service waiting for announced bytes
            raise OSError(f"the source gave {self.sent} bytes, {self._size} were announced")


def _put_once(
    dest: BlobClient,
    chunks: Iterable[bytes],
    size: int,
    metadata: dict[str, str] | None,
    content_type: str | None,
    content_md5: bytes | None,
) -> str:
    from azure.storage.blob._generated.models import BlobHTTPHeaders

    body = _Body(chunks, size, hash_it=content_md5 is None)
    # The SDK's public upload_blob reads a single-put body into memory; its generated Put Blob operation
    # (the same pipeline: credential, timeouts, logging) streams a body of known length.
    dest._client.block_blob.upload(
        content_length=size,
        body=body,
        # As the public layer sends metadata (the generated operation's own parameter does not).
        headers={f"x-ms-meta-{k}": v for k, v in (metadata or {}).items()},
        transactional_content_md5=content_md5,  # when known up front, the service checks the body against it
        blob_http_headers=BlobHTTPHeaders(
            blob_content_type=content_type or "application/octet-stream", blob_content_md5=content_md5
        ),
        retry_total=0,  # a streamed body cannot be rewound: the whole Put is repeated below instead
    )
    if body.md5 is None:  # the service checked the body against content_md5 and stored it
        return base64.b64encode(content_md5 or b"").decode()
    digest = body.md5.digest()
    dest.set_http_headers(_content_settings(content_type, digest))
    return base64.b64encode(digest).decode()


def _content_settings(content_type: str | None, digest: bytes):
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type=content_type or "application/octet-stream", content_md5=digest)


def upload_stream(
    open_chunks: Callable[[], Iterable[bytes]],
    size: int,
    dest: BlobClient,
    *,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
    content_md5: bytes | None = None,
    attempts: int | None = None,
) -> CopyResult:
    """Write ``size`` bytes from ``open_chunks()`` (a fresh iterable per call) to ``dest``; size and MD5.

    Up to ``SINGLE_PUT_MAX``: one streamed Put Blob, repeated whole from a fresh ``open_chunks()`` on a
    connection failure or a 5xx (Put Blob replaces the blob whole, so repeating it is safe). Larger: staged
    blocks (``stream_to_blob``). ``content_md5`` (the source's, when known) is checked by the service.
    """
    if size > SINGLE_PUT_MAX:
        return stream_to_blob(open_chunks(), dest, metadata=metadata, content_type=content_type)
    attempts = attempts or PUT_ATTEMPTS  # 1 for a source that can be read only once
    for attempt in range(1, attempts + 1):
        try:
            md5 = _put_once(dest, open_chunks(), size, metadata, content_type, content_md5)
            return CopyResult("stream", size, md5)
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
            status = getattr(exc, "status_code", None)
            if attempt == attempts or (status is not None and status < 500):
                raise
            log.warning("put of %s failed (%s); repeating it whole", redact_url(dest.url), type(exc).__name__)
            time.sleep(attempt)
    raise AssertionError("unreachable")


def upload_path(
    path: os.PathLike[str] | str, dest: BlobClient, *, metadata: dict[str, str] | None = None,
    content_type: str | None = None,
) -> CopyResult:  # fmt: skip
    """Upload a local file (``upload_stream``: one streamed Put Blob up to ``SINGLE_PUT_MAX``)."""
    with open(path, "rb") as f:

        def chunks() -> Iterator[bytes]:
            f.seek(0)
            return iter_file(f)

        return upload_stream(
            chunks, os.fstat(f.fileno()).st_size, dest, metadata=metadata, content_type=content_type
        )


def iter_file(f: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := f.read(chunk_size):
        yield chunk


def _read_range(src: BlobClient, offset: int, length: int, pin: dict[str, object]) -> bytes:
    data = src.download_blob(offset=offset, length=length, **pin).readall()
    if len(data) != length:
        raise OSError(f"range {offset}+{length} of {redact_url(src.url)} returned {len(data)} bytes")
    return data


def stream_blob(
    src: BlobClient,
    chunk_size: int = CHUNK_SIZE,
    *,
    etag: str | None = None,
    max_concurrency: int = READ_CONCURRENCY,
) -> Iterator[bytes]:
    """Chunks of a blob, in order, downloaded as explicit ranges with up to ``max_concurrency`` in flight.

    Explicit ranges keep memory at ``max_concurrency + 1`` chunks (plus the SDK's buffers per GET): ``download_blob().chunks()`` with the
    SDK's default 32 MiB first GET was measured peaking near 3x the blob size against Azurite. Every read
    is pinned to one version of the blob: ``etag`` when given, else the version seen when the read began
    (``ResourceModifiedError`` if the blob is replaced meanwhile), so chunks of two versions never mix.
    """
    props = src.get_blob_properties(
        **({"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {})
    )
    pin = {"etag": etag or props.etag, "match_condition": MatchConditions.IfNotModified}
    size = props.size
    ranges = ((off, min(chunk_size, size - off)) for off in range(0, size, chunk_size))
    if max_concurrency <= 1 or size <= chunk_size:
        for off, length in ranges:
            yield _read_range(src, off, length, pin)
        return
    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="read-range")
    ahead: list[Future] = []
    try:
        for off, length in ranges:
            ahead.append(pool.submit(_read_range, src, off, length, pin))
            if len(ahead) == max_concurrency:
                break
        while ahead:
            data = ahead.pop(0).result()
            nxt = next(ranges, None)
            if nxt is not None:
                ahead.append(pool.submit(_read_range, src, *nxt, pin))
            yield data
            del data
    finally:
        for f in ahead:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


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
    attempts: int | None = None,
) -> CopyResult:
    """Copy ``src`` (one of ours, or any readable SAS URL via ``source_url``) to ``dest``.

    Server-side first when asked; on refusal, a streamed copy. The destination ends up complete or the
    exception says why: never a half-written blob presented as done (blocks are committed at the end).
    ``attempts=1`` when the caller's own loop is the retry layer for this copy (docs/RETRIES.md).
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
    props = src.get_blob_properties()
    md5 = props.content_settings.content_md5
    return upload_stream(
        lambda: stream_blob(src, etag=props.etag),
        props.size,
        dest,
        metadata=metadata,
        content_type=props.content_settings.content_type,
        content_md5=bytes(md5) if md5 else None,
        attempts=attempts,
    )


def new_block_blob_name(prefix: str, suffix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}{suffix}"
