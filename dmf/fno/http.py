"""One HTTP session per F&O environment: timeouts, bearer auth, typed errors and safe retries.

One retry layer per call path (the budget, per endpoint, is in docs/RETRIES.md):
- Calls in ``SENT_ONCE`` are sent exactly once here. Their callers are durable loops that call again when
  they fail (the import/export/enqueue start loops, the error-keys and package-URL loops), so a repeat here
  would multiply with the loop's. A refusal (429, or 503 with Retry-After:
  ``FnoError.refused``) goes back with ``retry_after``; the orchestrator waits with a durable timer and the
  worker never sleeps while the import gate is held. Repeating a start could also start a second job.
- Every other call is safe to repeat and the caller does not repeat it: up to ``max_retries`` repeats here
  on 429, 5xx, timeouts and dropped connections, with jittered exponential backoff, or ``Retry-After`` when
  F&O gives one. A hint longer than ``max_retry_after`` is not slept through: the error carries
  ``retry_after`` so a durable caller can wait with a timer instead of holding a worker.
- The bearer token's request is retried by azure-identity only (below MSAL's throttling cache, see
  ``dmf/fno/auth.py``); a call that got no token raises ``FnoAuthError`` at once, never repeated here.
"""

from __future__ import annotations

import email.utils
import io
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from dmf.fno.errors import ExecutionNotFound, FnoError, TransientFnoError, error_for_status
from dmf.redact import install_log_redaction, redact_url, scrub

log = logging.getLogger(__name__)

USER_AGENT = "fno-dmf-integration/0.1"
_ERROR_BODY_LIMIT = 64 * 1024


# Sent once by this layer: the caller's durable loop is the retry layer (docs/RETRIES.md). The starts are
# never repeated here in any case (a repeat could start a second job); the rest are asked for by loops that
# count a failure as one of their tries. Status polls are not among them: a poll is repeated by its schedule,
# not because it failed, and the start steps' "did it start?" check must not be lost to one failure.
SENT_ONCE: frozenset[str] = frozenset(
    {
        "ImportFromPackage",
        "ImportFromPackageAsync",
        "ExportToPackage",
        "ExportToPackageAsync",
        "Enqueue",
        "GetAzureWriteUrl",  # the import start loop asks for a fresh URL each time
        "GetImportTargetErrorKeysFileUrl",  # the error-keys loop counts a failure as one of its tries
        "GetExportedPackageUrl",  # the package fetch loop counts a failure as one of its tries
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    max_retry_after: float = 120.0

    def attempts(self, action: str, *, idempotent: bool = True) -> int:
        """The most times one call of ``action`` is sent under a storm of transient failures."""
        return 1 if action in SENT_ONCE or not idempotent else 1 + self.max_retries

    def worst_wait(self) -> float:
        """The longest this layer sleeps over one call's repeats (each wait a backoff or a Retry-After of
        at most ``max_retry_after``; longer hints are handed to the caller, not slept through)."""
        return sum(
            max(min(self.backoff_max, self.backoff_base * 2**a), self.max_retry_after)
            for a in range(self.max_retries)
        )

    def backoff(self, attempt: int) -> float:
        """Equal jitter: half fixed, half random, so synchronized workers spread out."""
        d = min(self.backoff_max, self.backoff_base * (2**attempt))
        return d / 2 + random.uniform(0, d / 2)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


TokenProvider = Callable[[], str]
Body = bytes | str | io.IOBase | Iterable[bytes] | None


class _Rewind:
    """Remembers where a body started so a repeat sends it again; None when it cannot be re-sent."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.pos: int | None = None
        self.replayable = body is None or isinstance(body, bytes | str | bytearray)
        if not self.replayable and hasattr(body, "seek") and hasattr(body, "tell"):
            try:
                if body.seekable():
                    self.pos = body.tell()
                    self.replayable = True
            except (OSError, AttributeError, ValueError):
                self.replayable = False

    def rewind(self) -> None:
        if self.pos is not None:
            self.body.seek(self.pos)


class FnoHttp:
    """The F&O HTTP session. Thread-safe for concurrent calls (requests.Session with a pooled adapter)."""

    def __init__(
        self,
        *,
        token_provider: TokenProvider | None,
        timeout: float,
        transfer_timeout: float,
        verify: str | bool = True,
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        install_log_redaction()
        self.token_provider = token_provider
        self.timeout = timeout
        self.transfer_timeout = transfer_timeout
        self.verify = verify
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.session = requests.Session()
        self.session.verify = verify
        self.session.trust_env = False  # proxies/CA from env would silently change what we talk to
        self.session.headers["User-Agent"] = USER_AGENT
        # No urllib3-level retries: every repeat is decided below, per call.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        action: str,
        idempotent: bool,
        json: Any = None,
        data: Body = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        authorize: bool = True,
        stream: bool = False,
        transfer: bool = False,
        allow_redirects: bool = False,
        retry_refused: bool = True,
    ) -> requests.Response:
        """Send one logical call; returns a 2xx response or raises a typed ``FnoError``.

        ``idempotent`` says whether the call may be repeated after an ambiguous failure (5xx, timeout,
        dropped connection). ``transfer`` selects the long read timeout for uploads and downloads.
        ``retry_refused=False`` sends the call once: a 429 / 503-with-Retry-After is raised to the caller.
        """
        body = _Rewind(data)
        send = {
            "json": json,
            "data": data,
            "params": params,
            "timeout": (self.timeout, self.transfer_timeout if transfer else self.timeout),
            "stream": stream,
            "allow_redirects": allow_redirects,
        }
        safe_url = redact_url(url)
        attempt = 0
        while True:
            started = time.monotonic()
            outcome = self._send(method, url, action, headers, authorize, stream, send)
            if isinstance(outcome, requests.Response):
                log.debug(
                    "F&O %s %s -> %d in %.0f ms (attempt %d)",
                    action, safe_url, outcome.status_code, (time.monotonic() - started) * 1000, attempt + 1,
                )  # fmt: skip
                return outcome
            err, why = outcome
            wait = self._next_wait(err, attempt, idempotent, body, retry_refused, action)
            # "Execution details were not found" is an expected answer while a job starts, not a fault.
            log.log(
                logging.DEBUG if isinstance(err, ExecutionNotFound) else logging.WARNING,
                "F&O %s %s %s on attempt %d%s",
                action, safe_url, why, attempt + 1, _retry_note(wait),
            )  # fmt: skip
            if wait is None:
                raise err
            self._pause(wait, body)
            attempt += 1

    def _send(
        self,
        method: str,
        url: str,
        action: str,
        headers: Mapping[str, str] | None,
        authorize: bool,
        stream: bool,
        send: dict[str, Any],
    ) -> requests.Response | tuple[FnoError, str]:
        """One attempt: the 2xx response, or the typed error and what happened (for the log)."""
        hdrs = dict(headers or {})
        if authorize:  # FnoAuthError when no token: azure-identity has already retried (module docstring)
            hdrs["Authorization"] = "Bearer " + self._token()
        started = time.monotonic()
        try:
            resp = self.session.request(method, url, headers=hdrs, **send)
        except requests.RequestException as exc:
            # The cause's text may hold a full URL: only its scrubbed form is kept.
            err = TransientFnoError(f"F&O {action}: {type(exc).__name__}: {scrub(exc)}", action=action)
            return err, f"failed ({type(exc).__name__})"
        if 200 <= resp.status_code < 300:
            return resp
        elapsed_ms = (time.monotonic() - started) * 1000
        err = self._error(resp, action, stream)
        return err, f"-> HTTP {resp.status_code} in {elapsed_ms:.0f} ms: {err.fno_message or ''}"

    def _token(self) -> str:
        if self.token_provider is None:
            raise FnoError("no credential configured for this F&O session")
        return self.token_provider()

    def _error(self, resp: requests.Response, action: str, stream: bool) -> FnoError:
        try:
            # A streamed response is read only as far as needed for F&O's message.
            if stream and resp.raw is not None:
                body = resp.raw.read(_ERROR_BODY_LIMIT, decode_content=True)
            else:
                body = resp.content[:_ERROR_BODY_LIMIT]
        except Exception:  # a broken error body must not hide the status
            body = b""
        finally:
            resp.close()
        return error_for_status(
            resp.status_code,
            body,
            action=action,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )

    def _next_wait(
        self,
        err: FnoError,
        attempt: int,
        idempotent: bool,
        body: _Rewind,
        retry_refused: bool = True,
        action: str = "",
    ) -> float | None:
        """Seconds to wait before repeating, or None to give up and raise."""
        if attempt >= self.retry.max_retries or not body.replayable or not err.transient:
            return None
        if action in SENT_ONCE:
            return None  # the caller's durable loop is this call's retry layer
        if not retry_refused and not idempotent:
            return None  # sent once: the caller's durable layer decides (see the module docstring)
        if err.status == 429 or (err.status == 503 and idempotent and err.retry_after is not None):
            if err.retry_after is None:
                return self.retry.backoff(attempt)
            if err.retry_after > self.retry.max_retry_after:
                return None  # hand the long wait to the caller (err.retry_after)
            return err.retry_after
        if not idempotent or err.status == 400:  # 400 here is ExecutionNotFound: the caller polls
            return None
        return self.retry.backoff(attempt)

    def _pause(self, seconds: float, body: _Rewind) -> None:
        self._sleep(seconds)
        body.rewind()


def _retry_note(wait: float | None) -> str:
    return "; giving up" if wait is None else f"; retrying in {wait:.2f}s"
