"""Blob ↔ local temp file helpers with bounded memory.

Reads and writes go through ``dmf.storage.transfer``: ranged GETs read ahead in parallel (written to the file
in order), and uploads stage blocks in parallel while the file is read and hashed in order; memory stays at
a few 4 MiB chunks and blocks whatever the size of the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azure.storage.blob import BlobClient

from dmf.storage.transfer import stream_blob, upload_path


def sha256_blob(blob: BlobClient, etag: str | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in stream_blob(blob, etag=etag):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


@contextmanager
def downloaded(blob: BlobClient, suffix: str = "", etag: str | None = None) -> Iterator[Path]:
    """The blob (pinned to ``etag`` when given) in a temporary file, removed afterwards."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="dmf-")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in stream_blob(blob, etag=etag):
                f.write(chunk)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def upload_file(path: Path, dest: BlobClient, metadata: dict[str, str] | None = None) -> int:
    return upload_path(path, dest, metadata=metadata, content_type="application/zip").size
