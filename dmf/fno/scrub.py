"""Keep secrets out of log records and error text: patterns (``dmf.redact``) plus the configured values.

Patterns catch SAS signatures, bearer tokens and JWTs; a client secret has no recognisable shape, so the
values this process was configured with are registered here and scrubbed wherever they appear (a token
endpoint or a proxy echoing a request is enough to put one into an exception message).
"""

from __future__ import annotations

import logging
import threading

from dmf.logs import RedactingFilter
from dmf.redact import redact

_secrets: set[str] = set()
_lock = threading.Lock()
_MIN_SECRET_LEN = 6  # shorter values would scrub ordinary words
# Loggers that see URLs (with SAS query strings) or token traffic at DEBUG.
THIRD_PARTY_LOG_PREFIXES = ("urllib3", "requests", "azure", "msal")


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def scrub(text: object) -> str:
    s = redact(text)
    for secret in tuple(_secrets):
        if secret in s:
            s = s.replace(secret, "REDACTED")
    return s


class ScrubFilter(RedactingFilter):
    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if _secrets:
            msg = record.getMessage()
            clean = scrub(msg)
            if clean != msg:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                exc.args = tuple(scrub(a) if isinstance(a, str) else a for a in exc.args)
                if hasattr(exc, "message") and isinstance(exc.message, str):
                    exc.message = scrub(exc.message)
                record.exc_text = None  # re-rendered from the scrubbed exception
        return True


_FILTER = ScrubFilter()


def install_log_redaction() -> None:
    """Attach the scrubbing filter to the HTTP and identity libraries' loggers.

    A logging filter only runs for records created on the logger it is attached to, so it goes on every
    existing logger under those prefixes (created at import time; called again when clients are built).
    """
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in THIRD_PARTY_LOG_PREFIXES]
    for name in [*THIRD_PARTY_LOG_PREFIXES, *names, "dmf"]:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
