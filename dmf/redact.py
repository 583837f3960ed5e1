"""Scrub secrets from text before it reaches a log line, an exception message or a table row."""

from __future__ import annotations

import re

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # SAS signature in any URL or query string.
    (re.compile(r"(?i)([?&;]sig=)[^&\s\"'<>]+"), r"\1REDACTED"),
    # Bearer tokens in headers or free text.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1REDACTED"),
    # Bare JWTs (three base64url segments starting with eyJ).
    (re.compile(r"eyJ[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*"), "REDACTED.JWT"),
    # Secrets in form bodies or connection strings.
    (re.compile(r"(?i)(client_secret=|client_assertion=|AccountKey=|SharedAccessSignature=)[^&;\s\"']+"),
     r"\1REDACTED"),
    (re.compile(r'(?i)("(?:access_token|client_secret|refresh_token|id_token)"\s*:\s*")[^"]+'),
     r"\1REDACTED"),
]  # fmt: skip


def redact(text: object) -> str:
    """Return ``text`` as a string with SAS signatures, bearer tokens and secrets replaced."""
    s = str(text)
    for pattern, repl in _PATTERNS:
        s = pattern.sub(repl, s)
    return s


def redact_url(url: str) -> str:
    """A URL safe to log: the SAS signature is removed, the rest kept for traceability."""
    return redact(url)
