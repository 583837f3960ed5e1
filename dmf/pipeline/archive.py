"""The archive of recurring-export messages: names, the archive index, and writing one message once.

- The archive path is claimed in an index (ledger table, partition ``outbound-archive``, one row per
  activity + correlation id) before any byte is written. A redelivered message finds the claim: an archive
  committed and verified by the earlier attempt is recognised from the blob's own metadata (``verified=1``)
  and adopted, never written again. The index row is marked archived only when the drain could not
  acknowledge the message (``mark_archived``): that is the one case F&O redelivers a message whose archive
  is known, and the mark lets the redelivery be acked without listing blobs. An acked message never returns,
  so the mark would be a table write per message that nothing reads.
- An archive is verified (size and MD5 against what was downloaded, size against what F&O announced) before
  anything may acknowledge it: a small message in one Put Blob whose Content-MD5 the service checks as it
  commits, a large one read back after its blocks are committed.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from dmf.fno.clients import recurring_api
from dmf.pipeline.ids import safe_name
from dmf.storage import clients
from dmf.storage.outcomes import safe_key
from dmf.storage.transfer import stream_to_blob

if TYPE_CHECKING:
    from concurrent.futures import Executor

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


@dataclass(frozen=True)
class Archived:
    """Where a message's archive is, and whether this attempt wrote it, adopted it or found it indexed."""

    path: str
    size: int | None
    md5: str | None
    how: Literal["written", "adopted", "duplicate"]


def archive_once(
    svc: Services,
    index: ArchiveIndex,
    export: RecurringExport,
    msg: DequeuedMessage,
    stem: str,
    run_id: str,
    pool: Executor | None = None,
    downloaded: Callable[[], None] | None = None,
) -> Archived:
    """Claim ``stem`` in the index, then archive the message there, or adopt or find an earlier archive.

    On a first delivery the claim runs on ``pool`` while the download starts: nothing is written before the
    claim has answered, so the one-archive rule holds whichever comes back first. A redelivery (or a file
    F&O reports gone) is claimed first, so a message archived earlier is not downloaded again.
    ``downloaded()`` is called once every byte is in hand and the archive is being written.
    """
    cid = msg.correlation_id

    def claim() -> IndexEntry:
        return index.claim(export.activity_id, cid, stem, run_id)

    if pool is not None and not msg.last_dequeue_datetime and msg.is_download_file_exist is not False:
        pending = pool.submit(contextvars.copy_context().run, claim)
        return _download_and_write(svc, index, export, msg, pending.result, run_id, downloaded)
    entry = claim()
    earlier = _earlier_archive(svc, index, export, cid, entry)
    if earlier is not None:
        return earlier
    if msg.is_download_file_exist is False:
        raise FileGone(
            f"F&O reports the file is gone: {msg.file_download_error_message or 'IsDownLoadFileExist=false'}"
        )
    return _download_and_write(svc, index, export, msg, lambda: entry, run_id, downloaded)


def _earlier_archive(
    svc: Services, index: ArchiveIndex, export: RecurringExport, cid: str, entry: IndexEntry
) -> Archived | None:
    """The archive an earlier attempt left: indexed (a redelivery), or committed and verified before the
    attempt stopped (recognised by its metadata, then indexed); None when this attempt must write it."""
    if entry.archived:
        return Archived(entry.path, entry.size, entry.md5, "duplicate")
    if entry.fresh:
        return None
    cc = clients.container(svc.settings, svc.settings.archive_container)
    for props in cc.list_blobs(name_starts_with=entry.path, include=["metadata"]):
        adopted = _adopt_existing(cc.get_blob_client(props.name), cid)
        if adopted is not None:
            index.mark_archived(export.activity_id, cid, props.name, adopted[0], adopted[1])
            return Archived(props.name, adopted[0], adopted[1], "adopted")
    return None


def _download_and_write(
    svc: Services,
    index: ArchiveIndex,
    export: RecurringExport,
    msg: DequeuedMessage,
    claimed: Callable[[], IndexEntry],
    run_id: str,
    downloaded: Callable[[], None] | None = None,
) -> Archived:
    """Stream the download into the claimed archive name (extension from the first bytes), verified.

    ``claimed()`` gives the index entry (it may still be on its way); it is awaited before any write.
    """
    s = svc.settings
    cid = msg.correlation_id
    api = recurring_api(s, export.environment)
    with api.download(msg) as stream:
        chunks = stream.iter_bytes()
        first = next(chunks, b"")
        second = next(chunks, None) if len(first) < SMALL_MESSAGE_BYTES else b""
        entry = claimed()
        earlier = _earlier_archive(svc, index, export, cid, entry)
        if earlier is not None:
            return earlier
        path = entry.path + _ext_for(stream.content_type, first)
        blob = clients.container(s, s.archive_container).get_blob_client(path)
        metadata = _metadata(export, msg, run_id)
        if second is None:
            if downloaded is not None:
                downloaded()
            size, md5 = _put_small(blob, first, metadata, stream.content_type, stream.content_length)
        else:
            rest = itertools.chain((first, second), chunks)
            result = stream_to_blob(rest, blob, metadata=metadata, content_type=stream.content_type)
            size, md5 = result.size, result.md5
            if downloaded is not None:
                downloaded()
            _verify(blob, size, md5, stream.content_length)
            # Only a fully checked archive carries this mark; an interrupted one is never adopted later.
            blob.set_blob_metadata({**metadata, "verified": "1"})
    log.info("archived message %s as %s (%d bytes)", cid, path, size)
    return Archived(path, size, md5, "written")


def _metadata(export: RecurringExport, msg: DequeuedMessage, run_id: str) -> dict[str, str]:
    return {
        "correlation_id": msg.correlation_id,
        "activity_id": export.activity_id.strip("{}"),
        "export": safe_name(export.name),
        "environment": export.environment,
        "source": "recurring-export",
        "dequeued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "last_dequeue": msg.last_dequeue_datetime or "",
        "run_id": run_id,
    }


def _put_small(
    blob: BlobClient, data: bytes, metadata: dict[str, str], content_type: str | None, announced: int | None
) -> tuple[int, str]:
    """One Put Blob, verified as it commits: the service checks the body against its Content-MD5 and
    refuses a differing one, so the blob carries the ``verified`` mark from its first byte on."""
    from azure.storage.blob import ContentSettings

    if announced is not None and announced != len(data):
        raise ArchiveMismatch(f"F&O announced {announced} bytes, {len(data)} arrived")
    digest = hashlib.md5(data, usedforsecurity=False).digest()  # Azure's Content-MD5 integrity check
    blob.upload_blob(
        data,
        overwrite=True,
        metadata={**metadata, "verified": "1"},
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


def _verify(blob: BlobClient, size: int, md5: str | None, announced: int | None) -> None:
    """Read back a block-committed blob's properties: size and MD5 must match what was streamed, and the
    size what F&O announced. A mismatching blob is deleted (never left for a later attempt to adopt)."""
    props = blob.get_blob_properties()
    stored = props.content_settings.content_md5
    stored_b64 = base64.b64encode(bytes(stored)).decode() if stored else None
    problems = []
    if announced is not None and announced != size:
        problems.append(f"F&O announced {announced} bytes, {size} arrived")
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
