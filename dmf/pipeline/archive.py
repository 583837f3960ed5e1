"""The archive of recurring-export messages: names, the archive index, and writing one message once.

- The archive path is claimed in an index (ledger table, partition ``outbound-archive``, one row per
  activity + correlation id) before any byte is written, and marked archived after the blob is committed
  and verified. A redelivered message (an id already in the index) is acked without a second archive; a
  crash between commit and index update is recognised from the blob's own metadata (``verified=1``).
- An archive is verified (size and MD5 against what was downloaded) before anything may acknowledge it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from dmf.fno.clients import recurring_api
from dmf.pipeline.ids import safe_name
from dmf.storage import clients
from dmf.storage.outcomes import safe_key
from dmf.storage.transfer import stream_to_blob

if TYPE_CHECKING:
    from azure.data.tables import TableClient
    from azure.storage.blob import BlobClient

    from dmf.fno.models import DequeuedMessage
    from dmf.pipeline.services import Services
    from dmf.settings import RecurringExport

log = logging.getLogger(__name__)

INDEX_PARTITION = "outbound-archive"
SMALL_MESSAGE_BYTES = 4 * 2**20  # up to this, one Put Blob; larger messages are staged in blocks

_EXTENSIONS = {
    "application/zip": ".zip",
    "application/x-zip-compressed": ".zip",
    "text/csv": ".csv",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/json": ".json",
    "text/plain": ".txt",
}


def archive_stem(export_name: str, day: str, correlation_id: str) -> str:
    """``<export>/<yyyy>/<MM>/<dd>/<correlation id>`` inside the archive container (extension added later)."""
    return f"{safe_name(export_name)}/{day[:4]}/{day[4:6]}/{day[6:8]}/{correlation_id}"


def archive_path(export_name: str, day: str, correlation_id: str, ext: str) -> str:
    return archive_stem(export_name, day, correlation_id) + ext


def _ext_for(content_type: str | None, head: bytes = b"") -> str:
    """From the content type, else from the first bytes (F&O serves everything as octet-stream)."""
    ext = _EXTENSIONS.get((content_type or "").split(";")[0].strip().lower())
    if ext:
        return ext
    if head.startswith(b"PK\x03\x04"):
        return ".zip"
    if head.lstrip(b"\xef\xbb\xbf\xff\xfe \r\n\t").startswith(b"<"):
        return ".xml"
    return ".bin"


# -- the archive index ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    path: str  # the blob name once archived; the claimed name without extension before
    archived: bool
    size: int | None = None
    md5: str | None = None
    fresh: bool = False  # claimed just now (no earlier attempt)


class ArchiveIndex:
    """Which recurring-export messages have an archive, keyed by activity and correlation id."""

    def __init__(self, table: TableClient) -> None:
        self.table = table

    @staticmethod
    def _key(activity_id: str, correlation_id: str) -> str:
        return safe_key(f"{activity_id.strip('{} ').lower()}|{correlation_id.lower()}")

    def get(self, activity_id: str, correlation_id: str) -> IndexEntry | None:
        try:
            e = self.table.get_entity(INDEX_PARTITION, self._key(activity_id, correlation_id))
        except ResourceNotFoundError:
            return None
        return IndexEntry(e["Path"], bool(e.get("Archived")), e.get("Size"), e.get("Md5"))

    def claim(self, activity_id: str, correlation_id: str, path: str, run_id: str) -> IndexEntry:
        """Record the path this message will be archived at; an earlier claim (and its path) wins."""
        entity = {
            "PartitionKey": INDEX_PARTITION,
            "RowKey": self._key(activity_id, correlation_id),
            "Path": path,
            "Archived": False,
            "ClaimedBy": run_id,
        }
        try:
            self.table.create_entity(entity)
            return IndexEntry(path, False, fresh=True)
        except ResourceExistsError:
            found = self.get(activity_id, correlation_id)
            assert found is not None
            return found

    def mark_archived(
        self, activity_id: str, correlation_id: str, path: str, size: int, md5: str | None
    ) -> None:
        from azure.data.tables import UpdateMode

        self.table.upsert_entity(
            {
                "PartitionKey": INDEX_PARTITION,
                "RowKey": self._key(activity_id, correlation_id),
                "Path": path,
                "Archived": True,
                "Size": size,
                "Md5": md5,
                "ArchivedAt": datetime.now(UTC),
            },
            mode=UpdateMode.MERGE,
        )


def archive_index(svc: Services) -> ArchiveIndex:
    return ArchiveIndex(clients.table(svc.settings, svc.settings.ledger_table))


class ArchiveMismatch(RuntimeError):
    """The committed archive does not match what was downloaded."""


class FileGone(RuntimeError):
    """F&O says the message's file no longer exists (retention); it can never be archived."""


# -- writing one message -------------------------------------------------------------------------------


def archive_message(
    svc: Services,
    index: ArchiveIndex,
    export: RecurringExport,
    msg: DequeuedMessage,
    entry: IndexEntry,
    run_id: str,
) -> tuple[int, str | None, str, bool]:
    """Stream the download into the archive blob; returns (size, md5, path, adopted-existing).

    ``entry.path`` is the claimed name without its extension (known only once the first bytes arrive).
    """
    s = svc.settings
    cid = msg.correlation_id
    cc = clients.container(s, s.archive_container)
    if not entry.fresh:
        # Claimed by an earlier attempt that did not finish: its blob may have been committed before a crash.
        for props in cc.list_blobs(name_starts_with=entry.path, include=["metadata"]):
            adopted = _adopt_existing(cc.get_blob_client(props.name), cid)
            if adopted is not None:
                index.mark_archived(export.activity_id, cid, props.name, adopted[0], adopted[1])
                return adopted[0], adopted[1], props.name, True
    if msg.is_download_file_exist is False:
        raise FileGone(
            f"F&O reports the file is gone: {msg.file_download_error_message or 'IsDownLoadFileExist=false'}"
        )
    api = recurring_api(s, export.environment)
    metadata = {
        "correlation_id": cid,
        "activity_id": export.activity_id.strip("{}"),
        "export": safe_name(export.name),
        "environment": export.environment,
        "source": "recurring-export",
        "dequeued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_dequeue": msg.last_dequeue_datetime or "",
        "run_id": run_id,
    }
    with api.download(msg) as stream:
        chunks = stream.iter_bytes()
        first = next(chunks, b"")
        path = entry.path + _ext_for(stream.content_type, first)
        blob = cc.get_blob_client(path)
        second = next(chunks, None) if len(first) < SMALL_MESSAGE_BYTES else b""
        if second is None:
            # The whole message fits in one read: one Put Blob whose Content-MD5 the service checks.
            size, md5 = _put_small(blob, first, metadata, stream.content_type)
        else:
            rest = itertools.chain((first, second), chunks)
            result = stream_to_blob(rest, blob, metadata=metadata, content_type=stream.content_type)
            size, md5 = result.size, result.md5
            _verify(blob, size, md5)
        if stream.content_length is not None and stream.content_length != size:
            try:
                blob.delete_blob()  # never leave a short archive for a later attempt to adopt
            except AzureError:
                pass
            raise ArchiveMismatch(f"F&O announced {stream.content_length} bytes, {size} arrived")
        # Only a fully checked archive carries this mark; an interrupted one is never adopted later.
        blob.set_blob_metadata({**metadata, "verified": "1"})
    index.mark_archived(export.activity_id, cid, path, size, md5)
    log.info("archived message %s as %s (%d bytes)", cid, path, size)
    return size, md5, path, False


def _put_small(
    blob: BlobClient, data: bytes, metadata: dict[str, str], content_type: str | None
) -> tuple[int, str]:
    from azure.storage.blob import ContentSettings

    digest = hashlib.md5(data, usedforsecurity=False).digest()  # Azure's Content-MD5 integrity check
    blob.upload_blob(
        data,
        overwrite=True,
        metadata=metadata,
        validate_content=True,  # transactional MD5: the service rejects a body that differs
        content_settings=ContentSettings(
            content_type=content_type or "application/octet-stream", content_md5=bytearray(digest)
        ),
    )
    return len(data), base64.b64encode(digest).decode()


def _adopt_existing(blob: BlobClient, correlation_id: str) -> tuple[int, str | None] | None:
    try:
        props = blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    md5 = props.content_settings.content_md5
    meta = props.metadata or {}
    if meta.get("correlation_id") != correlation_id or meta.get("verified") != "1" or not md5:
        return None
    return props.size, base64.b64encode(bytes(md5)).decode()


def _verify(blob: BlobClient, size: int, md5: str | None) -> None:
    """Read back a block-committed blob's properties: size and MD5 must match what was streamed."""
    props = blob.get_blob_properties()
    stored = props.content_settings.content_md5
    stored_b64 = base64.b64encode(bytes(stored)).decode() if stored else None
    problems = []
    if props.size != size:
        problems.append(f"archive holds {props.size} bytes, {size} were downloaded")
    if md5 and stored_b64 != md5:
        problems.append("archive MD5 differs from the downloaded bytes")
    if problems:
        try:
            blob.delete_blob()
        except AzureError:
            pass
        raise ArchiveMismatch("; ".join(problems))
