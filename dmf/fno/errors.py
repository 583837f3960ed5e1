"""Typed F&O errors: transient (retry later) or permanent, carrying F&O's own message, never a secret."""

from __future__ import annotations

import json
from typing import Any

from dmf.redact import scrub

NOT_FOUND_MARKER = "execution details were not found"


class FnoError(Exception):
    """Base of every error the F&O client raises.

    ``transient`` says whether the same call may succeed later; ``retry_after`` (seconds) is the server's
    hint when it gave one, so a durable caller can wait with a timer instead of blocking a worker.
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        fno_message: str | None = None,
        action: str | None = None,
        retry_after: float | None = None,
        transient: bool | None = None,
    ) -> None:
        # Everything that may end up in a log line or a table row is redacted once, here.
        self.message = scrub(message)
        self.status = status
        self.fno_message = scrub(fno_message) if fno_message else None
        self.action = action
        self.retry_after = retry_after
        if transient is not None:
            self.transient = transient
        super().__init__(self.message)

    @property
    def refused(self) -> bool:
        """F&O turned the request away before running it ("not done"): 429, or 503 with Retry-After.

        Such a call may be sent again after ``retry_after`` even when it starts a job; anything else that
        failed after the request was sent (other 5xx, timeouts, lost connections) is ambiguous.
        """
        return self.status == 429 or (self.status == 503 and self.retry_after is not None)

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status})")
        if self.fno_message and self.fno_message not in self.message:
            parts.append(f"F&O: {self.fno_message}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary for activity results and table rows."""
        return {
            "type": type(self).__name__,
            "transient": self.transient,
            "status": self.status,
            "action": self.action,
            "message": self.message,
            "fno_message": self.fno_message,
            "retry_after": self.retry_after,
            "refused": self.refused,
        }


class TransientFnoError(FnoError):
    """Throttling, 5xx, timeouts, connection failures: the same call may succeed later."""

    transient = True


class PermanentFnoError(FnoError):
    """A request F&O refused (4xx other than throttling) or a response we cannot use: retrying won't help."""

    transient = False


class ExecutionNotFound(TransientFnoError):
    """HTTP 400 "Execution details were not found": the execution has not started yet, or never existed.

    Transient: right after a start call this is normal, so callers poll again within a grace period
    (``POLL_NOT_FOUND_GRACE_SECONDS``) before believing the execution is missing. Never retried by the
    HTTP layer itself: the answer is the news.
    """


class FnoAuthError(FnoError):
    """Token acquisition failed, or F&O answered 401/403 (app not registered in F&O, wrong scope, ...)."""

    transient = False


def odata_error_message(body: bytes | str | None) -> str | None:
    """F&O's message from an OData error body: ``error.innererror.message`` first, then ``error.message``."""
    if not body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    err = doc.get("error") if isinstance(doc.get("error"), dict) else doc.get("odata.error")
    if not isinstance(err, dict):
        msg = doc.get("Message") or doc.get("message")  # plain Web API errors
        return str(msg) if msg else None
    inner = err.get("innererror")
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])
    msg = err.get("message")
    if isinstance(msg, dict):  # OData v3 shape: {"message": {"lang": .., "value": ..}}
        msg = msg.get("value")
    return str(msg) if msg else None


def names_existing_execution(exc: FnoError, execution_id: str) -> bool:
    """F&O refused a start call because our own execution id already exists: an earlier call whose answer
    was lost started it (the message names the id, as the emulator's "Execution id X already exists.")."""
    text = (exc.fno_message or "").lower()
    return exc.status == 400 and "already exists" in text and execution_id.lower() in text


TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def error_for_status(
    status: int,
    body: bytes | str | None,
    *,
    action: str,
    retry_after: float | None = None,
) -> FnoError:
    """Map an HTTP failure to the right error type, keeping F&O's message."""
    fno_message = odata_error_message(body)
    if fno_message is None and body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        fno_message = text.strip()[:500] or None
    kwargs: dict[str, Any] = {
        "status": status,
        "fno_message": fno_message,
        "action": action,
        "retry_after": retry_after,
    }
    summary = f"F&O {action} failed"
    if status == 400 and fno_message and NOT_FOUND_MARKER in fno_message.lower():
        return ExecutionNotFound(f"F&O {action}: execution details were not found", **kwargs)
    if status in (401, 403):
        return FnoAuthError(summary + " (check the app registration in F&O and the token scope)", **kwargs)
    if 300 <= status < 400:
        # F&O redirects to a sign-in page when the base URL or the token is wrong.
        return PermanentFnoError(summary + " with a redirect (check the base URL and auth)", **kwargs)
    if status in TRANSIENT_STATUSES:
        return TransientFnoError(summary, **kwargs)
    return PermanentFnoError(summary, **kwargs)
