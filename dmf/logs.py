"""One logging setup for the app.

Context (orchestration instance id, F&O execution id, data project, blob name) lives in a context variable
set by activities and client functions with ``log_context(...)``; a filter copies it onto every record, and the
redacting filter and formatter of ``dmf.redact`` make sure no SAS signature, token, key or configured secret is
ever written.
Application Insights export is decided in ``dmf.telemetry`` (on the host the Python worker owns the exporter).

``ops_event`` writes the few lines operators alert and chart on (docs/RUNBOOK.md): an ``event`` name and its
fields travel as record attributes, which the exporter turns into custom dimensions (``customDimensions`` in
``traces``, ``Properties`` in ``AppTraces``), so queries never parse message text.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

from dmf.redact import RedactingFilter, RedactingFormatter, install_log_redaction, redact

CONTEXT_FIELDS = ("instance_id", "execution_id", "data_project", "blob_name")
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("dmf_log_context", default={})  # noqa: B039
_configured = False


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Attach fields to every log line emitted inside the block (values of None are ignored)."""
    merged = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def ops_event(
    logger: logging.Logger,
    event: str,
    message: str,
    *args: object,
    level: int = logging.INFO,
    **fields: str | int | float | bool | None,
) -> None:
    """Log ``message`` with ``event`` and ``fields`` as attributes (custom dimensions). Strings are redacted
    here (the redacting filter scrubs the message, not attributes); None values are left out."""
    extra: dict[str, str | int | float | bool] = {"event": event}
    for key, value in fields.items():
        if value is not None:
            extra[key] = redact(value) if isinstance(value, str) else value
    logger.log(level, message, *args, extra=extra)


def current_context() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current log context onto the record (as attributes and a compact ``ctx`` string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get()
        for f in CONTEXT_FIELDS:
            if not hasattr(record, f):
                setattr(record, f, ctx.get(f, ""))
        record.ctx = " ".join(f"{k}={v}" for k, v in ctx.items() if k in CONTEXT_FIELDS)
        return True


def apply_log_level(level: str) -> None:
    """The root logger's level from the ``LOG_LEVEL`` setting (called when the settings are loaded)."""
    logging.getLogger().setLevel(level.upper())


def configure_logging(level: str | None = None) -> None:
    """Idempotent: install filters on the root logger and, when configured, App Insights export."""
    global _configured
    if _configured:
        return
    _configured = True
    root = logging.getLogger()
    # LOG_LEVEL applies when the settings are first read (apply_log_level): reading them here would put
    # pydantic-settings on the path of importing the app.
    root.setLevel((level or "INFO").upper())
    ctx_filter, red_filter = ContextFilter(), RedactingFilter()
    if not root.handlers:
        handler = logging.StreamHandler()
        root.addHandler(handler)
    # Application Insights first (dmf.telemetry decides who exports), so an exporter the app adds is filtered too.
    from dmf.telemetry import configure_telemetry

    configure_telemetry()
    for handler in root.handlers:
        handler.addFilter(ctx_filter)
        handler.addFilter(red_filter)
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(ctx)s] %(message)s"))
    # Filters on loggers only run for records logged there, so guard our own namespace too.
    for name in ("dmf", "activities", "orchestrators", "triggers", "azure"):
        lg = logging.getLogger(name)
        lg.addFilter(ctx_filter)
        lg.addFilter(red_filter)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    # Third-party loggers (urllib3, requests, msal, azure) write URLs and headers at DEBUG: scrub them too.
    install_log_redaction()
