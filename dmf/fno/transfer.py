"""A streamed HTTP download that reads like a file and iterates like chunks."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import requests

from dmf.fno.errors import TransientFnoError

CHUNK = 1024 * 1024


class DownloadStream(io.RawIOBase):
    """Wraps a streamed ``requests`` response: ``iter_bytes()`` for chunks, ``read()``/``readinto()`` for
    consumers that want a file object (``BlobClient.upload_blob`` accepts either).

    A connection dropped mid-body raises ``TransientFnoError``: the caller repeats the whole download.
    """

    def __init__(self, response: requests.Response) -> None:
        self._resp = response
        length = response.headers.get("Content-Length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None
        self.content_type: str | None = response.headers.get("Content-Type")
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._resp.raw.read(len(buffer), decode_content=True)
        except Exception as exc:  # urllib3 ProtocolError, socket timeouts, resets
            raise TransientFnoError(f"download interrupted: {type(exc).__name__}") from None
        n = len(data)
        buffer[:n] = data
        self.bytes_read += n
        self._check_complete(n)
        return n

    def iter_bytes(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def _check_complete(self, n: int) -> None:
        # EOF before Content-Length bytes means a truncated body, not a short file.
        if n == 0 and self.content_length is not None and self.bytes_read < self.content_length:
            raise TransientFnoError(f"download truncated at {self.bytes_read} of {self.content_length} bytes")

    def close(self) -> None:
        self._resp.close()
        super().close()


def chunk_source(
    data: IO[bytes] | Iterable[bytes] | bytes, chunk_size: int = 4 * CHUNK
) -> tuple[Callable[[], Iterable[bytes]], int]:
    """``data`` as a source for a streamed upload: a way to read it from its start, and how many times
    that works (a seekable file or bytes: as often as asked; an iterator: once, so no repeat)."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        return (lambda: (view[i : i + chunk_size] for i in range(0, len(view), chunk_size))), 3
    if hasattr(data, "read"):
        f: IO[bytes] = data  # type: ignore[assignment]
        start = f.tell() if f.seekable() else None

        def from_start() -> Iterator[bytes]:
            if start is not None:
                f.seek(start)
            return iter(lambda: f.read(chunk_size), b"")

        return from_start, (3 if start is not None else 1)
    return (lambda: data), 1  # type: ignore[return-value]
