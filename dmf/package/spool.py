"""Streams copied to disk with a size limit: zip and openpyxl need a seekable file, and a blob download
stream is not one. Never to memory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024


def copy_limited(src: BinaryIO, dest: BinaryIO, limit: int | None) -> int | None:
    """Copy ``src`` to ``dest`` in 1 MiB chunks; the bytes copied, or None (and the copy stops before the
    chunk that crosses it) once there are more than ``limit``."""
    n = 0
    while chunk := src.read(CHUNK):
        n += len(chunk)
        if limit is not None and n > limit:
            return None
        dest.write(chunk)
    return n


def spool_to_file(stream: BinaryIO, dest_dir: str | None = None, max_bytes: int | None = None) -> Path | None:
    """Copy a stream to a temp file; None (and no file) if it exceeds ``max_bytes``. The caller deletes
    the file."""
    fd, name = tempfile.mkstemp(suffix=".zip", dir=dest_dir)
    with os.fdopen(fd, "wb") as f:
        copied = copy_limited(stream, f, max_bytes)
    if copied is None:
        os.unlink(name)
        return None
    return Path(name)
