"""The one place secrets are scrubbed: from text, log records and exceptions, before they reach a log line, an
exception message, a table row or a blob.

Two mechanisms, both applied by ``redact``:

- **Patterns** for secrets with a recognisable key or shape: SAS signatures (``sig=``), connection-string keys
  (``AccountKey=``, ``SharedAccessKey=``, ...), OAuth form and JSON fields (``client_secret``, ``access_token``,
  ...), Functions keys (``code=``, ``x-functions-key``), ``Bearer`` tokens and bare JWTs. Keys match in any case
  and in the shapes text takes on its way to a log: URL-encoded once or more (``sig%3D``, ``sig%253D``),
  JSON-escaped (``\\"client_secret\\": \\"...\\"``), inside a Python repr. The value is replaced up to the
  delimiter of the same encoding level, so a value that is itself encoded is removed whole.
- **Configured values**: a client secret has no recognisable shape, so the values this process was configured
  with are registered (``register_secret``) and scrubbed wherever they appear, as they are and URL-encoded,
  double-encoded, JSON-escaped or repr-escaped (a token endpoint or a proxy echoing a request is enough to put
  one into an exception message).

``RedactingFilter`` applies this to log records (message, arguments, exception and traceback text, stack info);
``dmf.logs.configure_logging`` installs it on the app's handlers and loggers, and ``install_log_redaction`` on the
HTTP and identity libraries' loggers, which write URLs and request bodies at DEBUG. Replaced values read
``REDACTED`` (keys and the text around them are kept for troubleshooting).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from functools import cache
from urllib.parse import quote, quote_plus

__all__ = [
    "RedactingFilter",
    "RedactingFormatter",
    "install_log_redaction",
    "redact",
    "redact_url",
    "register_secret",
    "scrub",
]

MASK = "REDACTED"

# -- patterns ------------------------------------------------------------------------------------------------------

# Keys whose value is a secret. Matched case-insensitively, with "_" or "-" between words or nothing.
_KEYS = (
    r"sig|client[_-]?secret|client[_-]?assertion|account[_-]?key|shared[_-]?access[_-]?key"
    r"|shared[_-]?access[_-]?signature|(?:access|refresh|id)[_-]?token|password|pwd|x-functions-key"
)
# Every key above contains one of these (lower case).
_KEY_HINTS = ("sig", "secret", "assertion", "key", "token", "password", "pwd")
# Not preceded by a letter (so "xsig" is not a key), except the hex digit of an encoded "?", ";", ":", "+" or ","
# (%3F, \u003F, ...).
_KEY_START = r"(?:(?<![A-Za-z_])|(?<=3[FfBbAa])|(?<=2[BbCc]))"
# A quote: as is or JSON-escaped to any depth, or URL-encoded (the escaping backslashes too).
_QUOTE = r"""(?:\\*["']|(?:%(?:25)*5[Cc])*%(?:25)*2[27])?"""
# A space: as is, a form's "+", URL-encoded (either) or JSON-escaped (either).
_SPACE = r"(?:[ \t+]|%(?:25)*(?:20|2[Bb])|\\+u00(?:20|2[Bb]))*"
# "=" or ":" as is, or URL-encoded: the depth (how many times "%" was re-encoded as "%25") says which
# delimiter ends the value.
_SEP = r"(?:[=:]|%(?P<depth>(?:25)*)3[DdAa])"
_VALUE = r"""(?P<value>[^&;\s"'<>]+)"""
_KEYED = re.compile(
    rf"(?P<head>{_KEY_START}(?:{_KEYS}){_QUOTE}{_SPACE}{_SEP}{_SPACE}{_QUOTE}){_VALUE}", re.IGNORECASE
)
# Functions keys travel as ?code=...: only a query parameter counts, not the word "code".
_CODE = re.compile(
    r"(?P<head>(?:(?<=[?&;])|(?<=%26)|(?<=%3[Ff])|(?<=%2526)|(?<=%253[Ff])|(?<=\\u0026))code"
    rf"(?:=|%(?P<depth>(?:25)*)3[Dd])){_VALUE}",
    re.IGNORECASE,
)
# "Bearer <token68>", the space possibly encoded; "\/" and "\u002B" are JSON escapes of "/" and "+" (.NET's
# serializer escapes "+", "&", "'", "<" and ">" by default).
_BEARER = re.compile(
    r"(?P<head>(?:(?<![A-Za-z])|(?<=2[Bb])|(?<=3[Aa]))bearer"
    r"(?:[ \t]+|\++|(?:%(?P<depth>(?:25)*)(?:20|2[Bb]))+|(?:\\+u00(?:20|2[Bb]))+))"
    r"(?P<value>(?:[A-Za-z0-9\-._~+/=%]|\\+/|\\+u00(?:2[Bb]|2[Ff]|3[Dd]))+)",
    re.IGNORECASE,
)
# Bare JWTs (three base64url segments starting with eyJ), wherever they are.
_JWT = re.compile(r"eyJ[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*")
# Where a value read as is ends: a JSON/repr escape of a quote, backslash, control character, "&" or "<>".
_RAW_END = re.compile(r"""\\(?:$|["'\\nrt]|u00(?:22|26|27|3[cCeE]))""")


@cache
def _encoded_end(depth: int) -> re.Pattern[str]:
    """The end of a value encoded ``depth`` + 1 times: a delimiter (or the backslash of a JSON escape) encoded
    that many times or fewer."""
    return re.compile(rf"%(?:25){{0,{depth}}}(?:20|22|26|27|2[Cc]|3[Bb]|3[CcEe]|5[Cc])")


def _mask_value(m: re.Match[str]) -> str:
    value, depth = m.group("value"), m.group("depth")
    end = (_RAW_END if depth is None else _encoded_end(len(depth) // 2)).search(value)
    cut = end.start() if end else len(value)
    if cut == 0:
        return m.group(0)
    return m.group("head") + MASK + value[cut:]


# -- configured values ---------------------------------------------------------------------------------------------

_MIN_SECRET_LEN = 6  # shorter values would scrub ordinary words
_secrets: set[str] = set()
_secrets_re: re.Pattern[str] | None = None
_lock = threading.Lock()


def _dotnet_escape(json_text: str) -> str:
    """JSON as .NET writes it by default: also "+", "&", "'", "<" and ">" as \\u escapes."""
    return re.sub(r"[+&'<>]", lambda m: f"\\u{ord(m.group()):04X}", json_text)


_ENCODINGS = (
    lambda s: quote(s, safe=""),  # a URL component
    quote,  # a URL path
    quote_plus,  # a form body
    lambda s: json.dumps(s)[1:-1],
    lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    lambda s: _dotnet_escape(json.dumps(s)[1:-1]),
    lambda s: repr(s)[1:-1],
    lambda s: repr(s + "'\"")[1:-4],  # a repr that had to escape "'" (the text around it held both quotes)
)


def _forms(secret: str) -> set[str]:
    """The shapes a value takes on its way into text: as is, and through up to three of URL-encoding (as a
    component, a path or a form), JSON escaping (ASCII or not, .NET style) and a repr, in any order."""
    forms, layer = {secret}, {secret}
    for _ in range(3):
        layer = {encode(s) for s in layer for encode in _ENCODINGS}
        forms |= layer
    return forms


def _form_pattern(form: str) -> str:
    # Percent-escapes match in either case (%2b or %2B), the rest literally.
    return re.sub(
        r"%([0-9A-F])([0-9A-F])",
        lambda m: "%" + "".join(f"[{c}{c.lower()}]" if c.isalpha() else c for c in m.groups()),
        re.escape(form),
    )


def register_secret(value: str | None) -> None:
    """Scrub ``value`` (and its encoded forms) from everything ``redact`` sees from now on in this process."""
    global _secrets_re
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        forms = {f for s in _secrets for f in _forms(s)}
        _secrets_re = re.compile("|".join(_form_pattern(f) for f in sorted(forms, key=len, reverse=True)))


# -- text ----------------------------------------------------------------------------------------------------------


def redact(text: object) -> str:
    """Return ``text`` as a string with SAS signatures, tokens, keys and configured secrets replaced."""
    s = str(text)
    rx = _secrets_re
    if rx is not None:
        for _ in range(3):  # a replacement can complete a new occurrence with the text around it
            s, n = rx.subn(MASK, s)
            if not n:
                break
    # Most text holds none of the keys: cheap substring tests skip the regular expressions.
    low = s.lower()
    if any(hint in low for hint in _KEY_HINTS):
        s = _KEYED.sub(_mask_value, s)
    if "code" in low:
        s = _CODE.sub(_mask_value, s)
    if "bearer" in low:
        s = _BEARER.sub(_mask_value, s)
    if "eyJ" in s:
        s = _JWT.sub(MASK + ".JWT", s)
    return s


# The F&O client's name for the same function.
scrub = redact


def redact_url(url: str) -> str:
    """A URL safe to log: the SAS signature is removed, the rest kept for traceability."""
    return redact(url)


# -- logging -------------------------------------------------------------------------------------------------------

_PLAIN = logging.Formatter()


def _redact_exception(exc: BaseException, seen: set[int] | None = None) -> None:
    """Scrub an exception in place (args, ``message``, notes), and the ones chained to it."""
    seen = set() if seen is None else seen
    while exc is not None and id(exc) not in seen and len(seen) < 20:
        seen.add(id(exc))
        # An exception type with read-only attributes stays as it is; the rendered traceback is still scrubbed.
        with contextlib.suppress(Exception):
            exc.args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
            if isinstance(getattr(exc, "message", None), str):
                exc.message = redact(exc.message)  # type: ignore[attr-defined]
            notes = getattr(exc, "__notes__", None)
            if isinstance(notes, list):
                exc.__notes__ = [redact(n) if isinstance(n, str) else n for n in notes]
        if exc.__context__ is not None and exc.__context__ is not exc.__cause__:
            _redact_exception(exc.__context__, seen)
        exc = exc.__cause__  # type: ignore[assignment]


class RedactingFilter(logging.Filter):
    """Scrubs the record itself, so every handler (ours, App Insights', the host's) sees clean text.

    The message is rendered with its arguments and replaced by the redacted text; the exception is scrubbed in
    place and its traceback rendered and redacted into ``exc_text`` (which formatters use as is).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed format string is not ours to crash on
            msg = None
        if msg is not None:
            clean = redact(msg)
            if clean != msg or record.args or not isinstance(record.msg, str):
                record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            _redact_exception(record.exc_info[1])
            try:
                record.exc_text = redact(_PLAIN.formatException(record.exc_info))
            except Exception:
                record.exc_text = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose output is redacted as a whole (a second line of defence behind the filter)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_FILTER = RedactingFilter()
# Loggers that see URLs (with SAS query strings) or token traffic at DEBUG.
THIRD_PARTY_LOG_PREFIXES = ("urllib3", "requests", "azure", "msal")


def install_log_redaction() -> None:
    """Attach the redacting filter to the HTTP and identity libraries' loggers, and to ``dmf``.

    A logging filter only runs for records created on the logger it is attached to, so it goes on every
    existing logger under those prefixes (created at import time; called again when clients are built).
    """
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in THIRD_PARTY_LOG_PREFIXES]
    for name in [*THIRD_PARTY_LOG_PREFIXES, *names, "dmf"]:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
