"""Property: no secret survives ``dmf.redact``, whatever shape the text around it takes on its way to a log.

Secrets: SAS signatures (``sig=``), storage account keys in connection strings (``AccountKey=``), client secrets
in token requests (form and JSON), bearer tokens (JWT and opaque), Functions keys (``code=``), and any configured
value registered with ``register_secret``. Shapes, composed: as is, URL-encoded (path, component, form; once
or twice), JSON-escaped (Python's and .NET's escaping, once or twice), a Python repr, an exception's str/repr.
Keys appear in random letter case. Channels: ``redact`` itself, and log records through ``RedactingFilter``
(message arguments, dict arguments, a non-string message, an exception with a cause, a custom exception text).

A leak is any 12-character piece of the secret found in the output, or in the output URL-decoded and
JSON-unescaped (up to three levels), so partial leaks count too.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import string
from collections.abc import Callable, Iterator
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dmf.redact as redact_mod
from dmf.redact import RedactingFilter, redact, register_secret

# 150 examples per property keeps the suite quick; REDACTION_EXAMPLES=5000 for a deeper search.
SETTINGS = settings(
    max_examples=int(os.environ.get("REDACTION_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
WINDOW = 12
PLACEHOLDER = "\x00SECRET\x00"

# -- secrets -------------------------------------------------------------------------------------------------------


def _b64(n: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=n, max_size=n).map(lambda b: base64.b64encode(b).decode())


def _b64url(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=lo, max_size=hi).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))


sas_signatures = _b64(32)  # HMAC-SHA256, base64: 44 characters with "+", "/", "="
account_keys = _b64(64)
# Entra client secrets: 34-40 characters of letters, digits and "~._-".
client_secrets = st.text(string.ascii_letters + string.digits + "~._-", min_size=34, max_size=40)
jwts = st.builds(lambda h, p, s: f"eyJ{h}.{p}.{s}", _b64url(12, 30), _b64url(20, 120), _b64url(32, 64))
opaque_tokens = st.builds(
    lambda body, pad: body + "=" * pad,
    st.text(string.ascii_letters + string.digits + "-._~+/", min_size=24, max_size=80),
    st.integers(0, 2),
)
function_keys = _b64(40).map(lambda k: k.replace("+", "-").replace("/", "_"))


def _mixed_case(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(c.upper() if f else c.lower() for c, f in zip(word, flips, strict=True))
    )


# -- carriers: a secret in its natural context ---------------------------------------------------------------------


@st.composite
def sas_url(draw: st.DrawFn) -> tuple[str, str]:
    sig = draw(sas_signatures)
    key = draw(_mixed_case("sig"))
    params = ["sv=2022-11-02", "se=2026-11-29T18%3A00%3A00Z", "sr=b", "sp=rw", f"{key}={quote(sig, safe='')}"]
    params = draw(st.permutations(params))
    host = draw(st.sampled_from(["stx.blob.core.windows.net", "127.0.0.1:10000/devstoreaccount1"]))
    text = f"https://{host}/dmf/{draw(st.sampled_from(['pkg.zip', 'a b.zip', 'x']))}?{'&'.join(params)}"
    return text, sig


@st.composite
def sas_connection_string(draw: st.DrawFn) -> tuple[str, str]:
    sig = draw(sas_signatures)
    sas_key, sig_key = draw(_mixed_case("SharedAccessSignature")), draw(_mixed_case("sig"))
    text = f"BlobEndpoint=https://stx.blob.core.windows.net/;{sas_key}=sv=2022-11-02&ss=b&srt=co&{sig_key}={quote(sig, safe='')}"
    return text, sig


@st.composite
def account_key_connection_string(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(account_keys)
    name = draw(st.sampled_from(["AccountKey", "account_key", "SharedAccessKey"]))
    parts = [
        "DefaultEndpointsProtocol=https",
        "AccountName=stx",
        f"{draw(_mixed_case(name))}={key}",
        "EndpointSuffix=core.windows.net",
    ]
    return ";".join(draw(st.permutations(parts))), key


@st.composite
def token_request(draw: st.DrawFn) -> tuple[str, str]:
    secret = draw(client_secrets)
    key = draw(_mixed_case(draw(st.sampled_from(["client_secret", "clientSecret", "client-secret"]))))
    fields = {
        "grant_type": "client_credentials",
        "client_id": "11111111-2222-3333-4444-555555555555",
        key: secret,
        "scope": "https://contoso.operations.dynamics.com/.default",
    }
    items = draw(st.permutations(list(fields.items())))
    if draw(st.booleans()):
        text = "&".join(f"{k}={quote_plus(v)}" for k, v in items)  # the form body azure-identity posts
    else:
        text = json.dumps(dict(items))
    return text, secret


@st.composite
def bearer_header(draw: st.DrawFn) -> tuple[str, str]:
    token = draw(st.one_of(jwts, opaque_tokens))
    scheme = draw(_mixed_case("Bearer"))
    text = draw(
        st.sampled_from(
            [
                f"Authorization: {scheme} {token}",
                json.dumps({"Authorization": f"{scheme} {token}", "Accept": "application/json"}),
                repr({"Authorization": f"{scheme} {token}"}),
                f"Denied for {scheme} {token} at F&O",
            ]
        )
    )
    return text, token


@st.composite
def jwt_in_json(draw: st.DrawFn) -> tuple[str, str]:
    token = draw(jwts)
    key = draw(_mixed_case(draw(st.sampled_from(["access_token", "id_token", "refresh_token"]))))
    return json.dumps({"token_type": "Bearer", key: token, "expires_in": 3599}), token


@st.composite
def webhook_url(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(function_keys)
    code = draw(_mixed_case("code"))
    return (
        f"https://func-x.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.on_inbound_blob&{code}={key}",
        key,
    )


CARRIERS = st.one_of(
    sas_url(),
    sas_connection_string(),
    account_key_connection_string(),
    token_request(),
    bearer_header(),
    jwt_in_json(),
    webhook_url(),
)

# -- shapes: what happens to text on its way to a log ------------------------------------------------------------


def _dotnet_json(t: str) -> str:
    return re.sub(r"[+&'<>]", lambda m: f"\\u{ord(m.group()):04X}", json.dumps(t))


SHAPES: dict[str, Callable[[str], str]] = {
    "as is": lambda t: t,
    "url component": lambda t: quote(t, safe=""),
    "url path": quote,
    "form": quote_plus,
    "json": json.dumps,
    "json object": lambda t: json.dumps({"error": {"message": t}}),
    ".NET json": _dotnet_json,
    "repr": repr,
    "exception str": lambda t: str(RuntimeError(f"request failed: {t}")),
    "exception repr": lambda t: repr(ValueError(t)),
}
shape_chains = st.lists(st.sampled_from(sorted(SHAPES)), min_size=1, max_size=2)


def apply(chain: list[str], text: str) -> str:
    for name in chain:
        text = SHAPES[name](text)
    return text


# -- channels: how the text reaches the output ---------------------------------------------------------------------


class _Boom(Exception):
    """An exception whose text is not its args (like an HTTP error that renders the response body)."""

    def __init__(self, body: str) -> None:
        super().__init__("HTTP 401")
        self.body = body

    def __str__(self) -> str:
        return f"HTTP 401: {self.body}"


def _log(emit: Callable[[logging.Logger], None]) -> str:
    logger = logging.getLogger("tests.redaction_property")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    # A plain formatter: the filter alone must make every handler safe (App Insights', the host's).
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def _raise_chain(text: str) -> BaseException:
    try:
        try:
            raise ValueError(f"inner: {text}")
        except ValueError as inner:
            raise RuntimeError(f"outer: {text}") from inner
    except RuntimeError as exc:
        return exc


def _with_exception(text: str) -> str:
    exc = _raise_chain(text)
    out = _log(lambda lg: lg.error("import failed", exc_info=exc))
    # The exception object itself was scrubbed too (handlers that read exc_info directly).
    return "\n".join([out, str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)])


CHANNELS: dict[str, Callable[[str], str]] = {
    "redact": redact,
    "log args": lambda t: _log(lambda lg: lg.warning("GET %s -> %d", t, 403)),
    "log dict args": lambda t: _log(lambda lg: lg.info("%(url)s failed", {"url": t})),
    "log repr arg": lambda t: _log(lambda lg: lg.info("body=%r", {"detail": t})),
    "log non-string message": lambda t: _log(lambda lg: lg.info(ValueError(t))),
    "log exception arg": lambda t: _log(
        lambda lg: lg.warning("failed: %s / %r", RuntimeError(t), OSError(t))
    ),
    "log exception chain": _with_exception,
    "log custom exception": lambda t: _log(lambda lg: lg.exception("call failed", exc_info=_Boom(t))),
}
channels = st.sampled_from(sorted(CHANNELS))

# -- the leak check ------------------------------------------------------------------------------------------------


def _unescape(t: str) -> str:
    t = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), t)
    return re.sub(r"\\(.)", r"\1", t)


def views(text: str) -> set[str]:
    """The text, and what it reads as once URL-decoded and/or JSON-unescaped (up to three steps)."""
    seen = {text}
    frontier = {text}
    for _ in range(3):
        frontier = {f(v) for v in frontier for f in (unquote, unquote_plus, _unescape)} - seen
        seen |= frontier
    return seen


def pieces(secret: str) -> set[str]:
    if len(secret) <= WINDOW:
        return {secret}
    return {secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1)}


def leaks(secret: str, output: str) -> list[str]:
    vs = views(output)
    return sorted(p for p in pieces(secret) if any(p in v for v in vs))


def assume_distinct(secret: str, context: str) -> None:
    """Skip the (vanishingly rare) draws whose surroundings already contain a piece of the secret."""
    assume(not leaks(secret, context.replace(secret, PLACEHOLDER)))
    assume(redact_mod.MASK not in secret)


@contextlib.contextmanager
def fresh_registry() -> Iterator[None]:
    saved = (set(redact_mod._secrets), redact_mod._secrets_re)
    redact_mod._secrets.clear()
    redact_mod._secrets_re = None
    try:
        yield
    finally:
        redact_mod._secrets.clear()
        redact_mod._secrets.update(saved[0])
        redact_mod._secrets_re = saved[1]


# -- properties ----------------------------------------------------------------------------------------------------


@SETTINGS
@given(carrier=CARRIERS, chain=shape_chains, channel=channels)
def test_no_recognisable_secret_survives(carrier: tuple[str, str], chain: list[str], channel: str) -> None:
    """Patterns alone (nothing registered): keyed and shaped secrets go, in every shape and channel."""
    text, secret = carrier
    shaped = apply(chain, text)
    assume_distinct(secret, shaped)
    with fresh_registry():
        out = CHANNELS[channel](shaped)
    assert not leaks(secret, out), f"{channel} / {chain}: {out!r}"


registered_secrets = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S"), exclude_characters="\x00"),
    min_size=8,
    max_size=40,
).filter(lambda s: len(set(s)) >= 4)


@SETTINGS
@given(
    secret=registered_secrets,
    template=st.sampled_from(
        [
            "AADSTS7000215: Invalid client secret provided: {}",
            "proxy echoed the request body: grant_type=client_credentials&client_secret={}",
            "certificate password {} rejected",
            "{}",
        ]
    ),
    chain=shape_chains,
    channel=channels,
)
def test_no_registered_secret_survives(secret: str, template: str, chain: list[str], channel: str) -> None:
    """A configured value with no recognisable shape: any characters, echoed back in any shape."""
    shaped = apply(chain, template.format(secret))
    assume_distinct(secret, apply(chain, template.format(PLACEHOLDER)).replace(PLACEHOLDER, secret))
    with fresh_registry():
        register_secret(secret)
        out = CHANNELS[channel](shaped)
    # Registered values are replaced whole: the check is for the value, in the output and its decodings.
    assert not any(secret in v for v in views(out)), f"{channel} / {chain}: {out!r}"


# -- examples the properties stand on ------------------------------------------------------------------------------


def test_redaction_keeps_what_is_needed_to_troubleshoot() -> None:
    url = "https://stx.blob.core.windows.net/dmf/pkg.zip?sv=2022-11-02&sr=b&sig=AbC%2Bd%3D&se=2026"
    assert (
        redact(url) == "https://stx.blob.core.windows.net/dmf/pkg.zip?sv=2022-11-02&sr=b&sig=REDACTED&se=2026"
    )
    assert redact("Denied for Bearer abc.def") == "Denied for Bearer REDACTED"
    assert redact("error code: 500, signature mismatch") == "error code: 500, signature mismatch"
    assert redact(quote(url, safe="")).endswith("sig%3DREDACTED%26se%3D2026")


def test_views_and_pieces_detect_partial_and_encoded_leaks() -> None:
    """The checker itself: a half-redacted or encoded secret counts as a leak."""
    secret = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/=="
    assert leaks(secret, "sig=REDACTED" + secret[20:])
    assert leaks(secret, quote(quote(secret, safe=""), safe=""))
    assert leaks(secret, _dotnet_json(secret))
    assert not leaks(secret, "sig=REDACTED")


def test_filter_scrubs_exception_chain_in_place() -> None:
    text = "https://x/?sig=FAKE-NOT-A-SIGNATURE%3D"
    exc = _raise_chain(text)
    out = _log(lambda lg: lg.error("failed", exc_info=exc))
    assert "FAKE-NOT-A-SIGNATURE" not in out + str(exc) + str(exc.__cause__)
    assert "sig=REDACTED" in out and "Traceback" in out
