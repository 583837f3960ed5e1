"""The Recurring Integration API (``/api/connector``): enqueue, dequeue, download, ack.

Not available on-premises (Microsoft's note); the factory refuses on-premises environments.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO
from urllib.parse import quote, urlsplit

from dmf.fno.errors import PermanentFnoError
from dmf.fno.http import FnoHttp
from dmf.fno.models import DequeuedMessage
from dmf.fno.transfer import DownloadStream

log = logging.getLogger(__name__)


class SizedIterable:
    """An iterable of chunks that knows its total size, so requests sends Content-Length, not chunks."""

    def __init__(self, chunks: Iterable[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


def _activity(activity_id: str) -> str:
    # Activity ids are GUIDs, often written with braces: encode them as the samples do (%7B...%7D).
    return quote(activity_id.strip(), safe="")


class RecurringApi:
    def __init__(self, http: FnoHttp, api_root: str) -> None:
        self.http = http
        self.api_root = api_root.rstrip("/")
        self._host = (urlsplit(self.api_root).hostname or "").lower()

    def enqueue(
        self,
        activity_id: str,
        body: IO[bytes] | Iterable[bytes] | bytes,
        *,
        entity: str | None = None,
        company: str | None = None,
        external_id: str | None = None,
        length: int | None = None,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Stream a file or package to a recurring import job; returns the message id (unquoted).

        Not repeated after an ambiguous failure (a second enqueue is a second message): the caller
        checks by its ``external_id`` first. Give ``length`` with an iterable body to send a
        Content-Length instead of chunked transfer encoding (file objects report their own size).
        """
        if length is not None and not isinstance(body, bytes | bytearray) and not hasattr(body, "read"):
            body = SizedIterable(body, length)
        params = {k: v for k, v in (("entity", entity), ("company", company)) if v}
        headers = {"Content-Type": content_type}
        if external_id:
            headers["x-ms-dyn-externalidentifier"] = external_id
        resp = self.http.request(
            "POST",
            f"{self.api_root}/api/connector/enqueue/{_activity(activity_id)}",
            action="Enqueue",
            idempotent=False,
            data=body,
            params=params,
            headers=headers,
            transfer=True,
        )
        text = resp.text.strip()
        try:
            value = json.loads(text) if text.startswith('"') else text
        except ValueError:
            value = text
        message_id = str(value).strip().strip('"')
        if not message_id:
            raise PermanentFnoError("F&O Enqueue: empty message id in the response", action="Enqueue")
        return message_id

    def dequeue(self, activity_id: str) -> DequeuedMessage | None:
        """The next exported message, or None when the queue is empty (204 or an empty body).

        Repeating a dequeue whose answer was lost only hides that message for 30 minutes, after which F&O
        offers it again, so it is treated as safe to repeat.
        """
        resp = self.http.request(
            "GET",
            f"{self.api_root}/api/connector/dequeue/{_activity(activity_id)}",
            action="Dequeue",
            idempotent=True,
            headers={"Accept": "application/json"},
        )
        if resp.status_code == 204 or not resp.content.strip():
            return None
        try:
            return DequeuedMessage.from_raw(resp.content)
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise PermanentFnoError(
                f"F&O Dequeue: unexpected response ({type(exc).__name__}: {exc})",
                status=resp.status_code,
                action="Dequeue",
            ) from None

    @contextmanager
    def download(self, message: DequeuedMessage) -> Iterator[DownloadStream]:
        """Stream the message's file with the bearer token (``DownloadLocation``, already https).

        The token is only sent to the environment's own host.
        """
        url = message.download_location
        if (urlsplit(url).hostname or "").lower() != self._host:
            raise PermanentFnoError(
                "F&O Download: DownloadLocation is not on the environment's host; token not sent",
                action="Download",
            )
        resp = self.http.request(
            "GET", url, action="Download", idempotent=True, stream=True, transfer=True,
            allow_redirects=True,  # requests drops the token if a redirect leaves the host
        )  # fmt: skip
        try:
            yield DownloadStream(resp)
        finally:
            resp.close()

    def ack(self, activity_id: str, message: DequeuedMessage) -> None:
        """Acknowledge with the dequeue response body, verbatim. Safe to repeat."""
        self.http.request(
            "POST",
            f"{self.api_root}/api/connector/ack/{_activity(activity_id)}",
            action="Ack",
            idempotent=True,
            data=message.raw.encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
