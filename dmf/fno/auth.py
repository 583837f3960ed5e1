"""Credentials for F&O on azure-identity, built once per process per environment and reused.

Modes (``FnoEnvironment.auth_mode``): client secret, certificate, managed identity, and federated (a
managed identity token exchanged for the app registration: no secret anywhere). On-premises F&O uses AD FS:
tenant ``adfs``, the AD FS URL as authority, instance discovery off. A custom authority (for example a
local emulator's HTTPS token endpoint) also turns instance discovery off, since Entra's discovery service
does not know it. ``FNO_CA_BUNDLE`` is passed as ``connection_verify`` so a private CA is trusted.

Retries of the token request are azure-identity's (azure-core's policy: up to 3 repeats), the one layer that
sits below MSAL's throttling (MSAL replays a 429/5xx answer from its cache for Retry-After, else 60 s, so a
repeat above it never reaches the network). ``FnoHttp`` does not repeat a call that got no token
(docs/RETRIES.md).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dmf.fno.errors import FnoAuthError
from dmf.redact import install_log_redaction, register_secret, scrub
from dmf.settings import AuthMode, Deployment, FnoEnvironment

if TYPE_CHECKING:  # azure-identity (and msal behind it) load when the first credential is built
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
# Entra's own hosts: instance discovery works for these and stays on.
KNOWN_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"

_cache: dict[str, tuple[str, TokenCredential]] = {}
_lock = threading.Lock()


def authority_kwargs(env: FnoEnvironment) -> tuple[str, dict[str, Any]]:
    """(tenant id, authority keyword arguments) for an app-registration credential."""
    if env.deployment is Deployment.ONPREM:
        if not env.authority:
            raise FnoAuthError(f"F&O environment {env.name!r}: on-premises needs the AD FS authority URL")
        # azure-identity appends the tenant ("adfs") itself; accept the URL with or without it.
        authority = env.authority.rstrip("/").removesuffix("/adfs")
        return "adfs", {"authority": authority, "disable_instance_discovery": True}
    authority = (env.authority or DEFAULT_AUTHORITY).rstrip("/")
    host = (urlsplit(authority).hostname or authority).lower()
    kwargs: dict[str, Any] = {"authority": authority}
    if host not in KNOWN_AUTHORITY_HOSTS:
        kwargs["disable_instance_discovery"] = True
    return env.tenant_id or "", kwargs


def build_credential(env: FnoEnvironment, *, ca_bundle: str | None = None) -> TokenCredential:
    """A new azure-identity credential for ``env`` (prefer ``credential_for``, which caches)."""
    from azure.identity import (
        CertificateCredential,
        ClientAssertionCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
    )

    install_log_redaction()
    for secret in (env.client_secret, env.certificate_password):
        register_secret(secret.get_secret_value() if secret else None)
    transport: dict[str, Any] = {"connection_verify": ca_bundle} if ca_bundle else {}
    mode = env.auth_mode
    if mode is AuthMode.MANAGED_IDENTITY:
        # The identity's own client id; F&O's Entra applications list must hold it.
        return ManagedIdentityCredential(client_id=env.managed_identity_client_id or env.client_id)
    tenant_id, authority = authority_kwargs(env)
    if not env.client_id:
        raise FnoAuthError(f"F&O environment {env.name!r}: auth mode {mode.value} needs a client id")
    common = {**authority, **transport}
    if mode is AuthMode.CLIENT_SECRET:
        if env.client_secret is None:
            raise FnoAuthError(f"F&O environment {env.name!r}: client secret missing")
        return ClientSecretCredential(
            tenant_id, env.client_id, env.client_secret.get_secret_value(), **common
        )
    if mode is AuthMode.CERTIFICATE:
        password = env.certificate_password.get_secret_value() if env.certificate_password else None
        return CertificateCredential(
            tenant_id, env.client_id, certificate_path=env.certificate_path, password=password, **common
        )
    if mode is AuthMode.FEDERATED:
        # Workload identity federation: the app registration trusts this managed identity, whose token
        # for api://AzureADTokenExchange is the client assertion. The MI credential caches its token.
        mi = ManagedIdentityCredential(client_id=env.managed_identity_client_id)

        def assertion() -> str:
            return mi.get_token(TOKEN_EXCHANGE_SCOPE).token

        return ClientAssertionCredential(tenant_id, env.client_id, assertion, **common)
    raise FnoAuthError(f"F&O environment {env.name!r}: unsupported auth mode {mode!r}")


def _fingerprint(env: FnoEnvironment, ca_bundle: str | None) -> str:
    """Changes when anything the credential depends on changes (secrets hashed, never stored)."""
    parts = [repr(env.model_dump(exclude={"client_secret", "certificate_password"})), str(ca_bundle)]
    for secret in (env.client_secret, env.certificate_password):
        parts.append(secret.get_secret_value() if secret else "")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def credential_for(env: FnoEnvironment, *, ca_bundle: str | None = None) -> TokenCredential:
    """The process-wide credential for ``env`` (keyed by environment name; rebuilt if its config changed)."""
    fp = _fingerprint(env, ca_bundle)
    with _lock:
        hit = _cache.get(env.name)
        if hit is not None and hit[0] == fp:
            return hit[1]
        cred = build_credential(env, ca_bundle=ca_bundle)
        _cache[env.name] = (fp, cred)
        return cred


def clear_credentials() -> None:
    """Forget cached credentials (tests, or after a configuration change)."""
    with _lock:
        _cache.clear()


class BearerTokenProvider:
    """A ``() -> str`` returning a current access token for one scope; failures become ``FnoAuthError``.

    Caching and refresh are azure-identity's (``get_bearer_token_provider``: the token is kept until its
    refresh time or five minutes before expiry; the credential's MSAL cache sits behind it). The lock only
    makes a burst of activities at a cold start wait for the first request instead of each making one.
    """

    def __init__(self, credential: TokenCredential, scope: str, env_name: str = "") -> None:
        from azure.identity import get_bearer_token_provider

        self.credential = credential
        self.scope = scope
        self.env_name = env_name
        self._provider = get_bearer_token_provider(credential, scope)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        from azure.core.exceptions import AzureError, ClientAuthenticationError

        try:
            with self._lock:
                return self._provider()
        except ClientAuthenticationError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            # No answer, throttling or a server fault may pass; a refused client will not.
            transient = status is None or status == 429 or status >= 500
            if "AADSTS" in str(exc) or "invalid_client" in str(exc):
                transient = False
            raise FnoAuthError(
                f"token for F&O environment {self.env_name!r} not acquired: {scrub(exc.message)}",
                status=status,
                transient=transient,
            ) from None
        except AzureError as exc:  # network trouble reaching the token endpoint
            raise FnoAuthError(
                f"token for F&O environment {self.env_name!r} not acquired: {scrub(exc)}", transient=True
            ) from None


def bearer_token_provider(credential: TokenCredential, scope: str, env_name: str = "") -> BearerTokenProvider:
    return BearerTokenProvider(credential, scope, env_name)
