"""A small client for the app's operators' HTTP API (docs/OPERATIONS.md): the function key goes in
``x-functions-key`` and never into a URL, a message or a log line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

DEFAULT_URL = "http://127.0.0.1:7071"


class ConnectionFailed(Exception):
    """The app could not be reached (exit code 2)."""


@dataclass
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        if isinstance(self.body, dict) and self.body.get("error"):
            return str(self.body["error"])
        if isinstance(self.body, dict) and self.body.get("reason"):
            return str(self.body["reason"])
        if self.status == 401:
            return "401: the app wants a function key (--key or DMF_FUNCTION_KEY)"
        return f"HTTP {self.status}"


class Api:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60.0) -> None:
        self.base = (url or os.environ.get("DMF_API_URL") or DEFAULT_URL).rstrip("/")
        self._key = key if key is not None else os.environ.get("DMF_FUNCTION_KEY")
        self.timeout = timeout
        self._session = requests.Session()

    def __repr__(self) -> str:  # never the key
        return f"Api({self.base!r})"

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Answer:
        headers = {"Accept": "application/json"}
        if self._key:
            headers["x-functions-key"] = self._key
        url = f"{self.base}/api/{path}"
        try:
            r = self._session.request(
                method, url, params=params, json=json, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            # The URL holds no key (the key is a header), so naming it is safe.
            raise ConnectionFailed(f"cannot reach {self.base}: {type(exc).__name__}") from None
        try:
            body = r.json() if r.content else None
        except ValueError:
            body = (
                {"error": f"HTTP {r.status_code}: the answer is not JSON"} if r.status_code >= 300 else None
            )
        return Answer(r.status_code, body)

    def follow(self, status_url: str) -> Answer:
        """GET a Durable check-status URL. It carries its own (system) key: it is never shown, and no
        function key is sent with it."""
        try:
            r = self._session.get(status_url, headers={"Accept": "application/json"}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ConnectionFailed(f"cannot reach {self.base}: {type(exc).__name__}") from None
        try:
            return Answer(r.status_code, r.json() if r.content else None)
        except ValueError:
            return Answer(r.status_code, None)

    def get(self, route: str, /, **params: Any) -> Answer:
        return self.call("GET", route, params={k: v for k, v in params.items() if v is not None})

    def post(self, route: str, body: Any = None) -> Answer:
        return self.call("POST", route, json=body)


def seg(text: str) -> str:
    """One URL path segment."""
    return quote(text, safe="")


def without_secrets(body: Any, *, keep_links: bool = False) -> Any:
    """The answer without check-status URLs (``...Uri``: they carry the Durable system key) and, unless
    ``keep_links``, without the error files' read links (``url``: SAS URLs, valid 15 minutes)."""
    if isinstance(body, dict):
        return {
            k: without_secrets(v, keep_links=keep_links)
            for k, v in body.items()
            if not k.endswith("Uri") and (keep_links or k != "url")
        }
    if isinstance(body, list):
        return [without_secrets(v, keep_links=keep_links) for v in body]
    return body
