"""Loopback HTTPS servers for the F&O client tests: one plays F&O and its token endpoints, with a
throw-away CA so the client must honour FNO_CA_BUNDLE to talk to it (as it must for a private AD FS)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from dmf.fno.clients import reset_clients
from dmf.settings import Settings, load_settings

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CLIENT_SECRET = "cs-Very~Secret.Value_123"
ACCESS_TOKEN = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJmbm8ifQ.c2lnbmF0dXJlLXNlY3JldA"


@dataclass
class Tls:
    dir: Path
    ca_pem: Path
    server_context: ssl.SSLContext


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(
    subject_cn: str,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name | None = None,
    issuer_key: rsa.RSAPrivateKey | None = None,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(obj: x509.Certificate | rsa.RSAPrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, srv_key = _key(), _key()
    ca = make_cert("fno-test-ca", ca_key, ca=True)
    srv = make_cert(
        "127.0.0.1",
        srv_key,
        issuer=ca.subject,
        issuer_key=ca_key,
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    (d / "ca.pem").write_bytes(pem(ca))
    (d / "server.pem").write_bytes(pem(srv) + pem(ca))
    (d / "server.key").write_bytes(pem(srv_key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "server.pem", d / "server.key")
    return Tls(d, d / "ca.pem", ctx)


@pytest.fixture(scope="session")
def _fno_https(tls: Tls) -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=tls.server_context, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


@dataclass
class Recorder:
    """Token requests seen by the loopback identity provider."""

    token_requests: list[dict[str, str]] = field(default_factory=list)
    token_paths: list[str] = field(default_factory=list)


@pytest.fixture
def fno(_fno_https: HTTPServer) -> Iterator[HTTPServer]:
    """The loopback HTTPS server, cleared for each test; it also serves the Entra/AD FS endpoints."""
    _fno_https.clear()
    reset_clients()
    yield _fno_https
    reset_clients()
    _fno_https.clear()


def serve_identity(server: HTTPServer, *, tenant: str = TENANT, token: str = ACCESS_TOKEN) -> Recorder:
    """OpenID discovery and token endpoints for a cloud tenant and for AD FS, on the same host."""
    rec = Recorder()
    base = server.url_for("").rstrip("/")

    def token_handler(request: Request) -> Response:
        rec.token_requests.append(dict(request.form))
        rec.token_paths.append(request.path)
        body = {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token}
        return Response(json.dumps(body), content_type="application/json")

    for prefix, disco, token_path in (
        (f"/{tenant}", f"/{tenant}/v2.0/.well-known/openid-configuration", f"/{tenant}/oauth2/v2.0/token"),
        ("/adfs", "/adfs/.well-known/openid-configuration", "/adfs/oauth2/token"),
    ):
        server.expect_request(disco, method="GET").respond_with_json(
            {
                "issuer": f"{base}{prefix}/v2.0" if prefix != "/adfs" else f"{base}/adfs",
                "authorization_endpoint": f"{base}{prefix}/oauth2/authorize",
                "token_endpoint": base + token_path,
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            }
        )
        server.expect_request(token_path, method="POST").respond_with_handler(token_handler)
    return rec


def env_vars(server: HTTPServer, tls: Tls, **extra: str) -> dict[str, str]:
    base = server.url_for("").rstrip("/")
    env = {
        "DATA_STORAGE": "UseDevelopmentStorage=true",
        "FNO_ENVIRONMENTS": "main",
        "FNO_MAIN_BASE_URL": base,
        "FNO_MAIN_AUTHORITY": base,
        "FNO_MAIN_TENANT_ID": TENANT,
        "FNO_MAIN_CLIENT_ID": CLIENT_ID,
        "FNO_MAIN_CLIENT_SECRET": CLIENT_SECRET,
        "FNO_CA_BUNDLE": str(tls.ca_pem),
        "FNO_HTTP_TIMEOUT_SECONDS": "5",
        "FNO_TRANSFER_TIMEOUT_SECONDS": "20",
        "FNO_MAX_RETRIES": "4",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


@pytest.fixture
def make_settings(fno: HTTPServer, tls: Tls) -> Callable[..., Settings]:
    def make(**extra: str) -> Settings:
        return load_settings(env_vars(fno, tls, **extra))

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fno: HTTPServer) -> Settings:
    """Cloud settings, client-secret auth, with the identity endpoints served."""
    serve_identity(fno)
    return make_settings()


class Clock:
    """Server-side arrival times of requests, to check waits without trusting the client's account."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def stamp(self) -> None:
        self.times.append(time.monotonic())
