"""Streaming SHA-256 of content, to recognise the same file dropped again."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024


def sha256_stream(stream: BinaryIO, *, chunk_size: int = CHUNK) -> str:
    """Hex SHA-256 of everything left in ``stream``, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    # readinto a reused buffer avoids allocating a new bytes object per chunk.
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    # Only io objects promise readinto(buffer); the blob SDK's downloader has a readinto(stream) instead.
    if isinstance(stream, io.IOBase):
        while n := stream.readinto(view):  # type: ignore[attr-defined]
            h.update(view[:n])
    else:
        while chunk := stream.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)
