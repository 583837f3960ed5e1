"""Token endpoints (Entra ID v2 client credentials and AD FS), discovery documents, bearer checks.

Tokens are HS256 JWTs signed with a per-process key. Their lifetime is checked against real time, not
the emulator clock: clients cache tokens by wall-clock time, so a virtual clock jump must not make
every cached token look expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from .config import EmulatorConfig


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class TokenError(Exception):
    status: int
    body: dict

    def __str__(self) -> str:
        return f"{self.status} {self.body.get('error')}"


def _aad_error(status: int, error: str, code: int, description: str) -> TokenError:
    return TokenError(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description}",
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
    )


class TokenService:
    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._key = secrets.token_bytes(32)
        self._generation = 0  # admin can invalidate every token issued so far by bumping this
        self._lock = threading.Lock()
        self.base_url = ""  # set by the server once the port is known

    # -- discovery --------------------------------------------------------------------------------
    def openid_configuration(self, tenant: str) -> dict:
        root = f"{self.base_url}/{tenant}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "emulator.local",
        }

    def adfs_openid_configuration(self) -> dict:
        root = f"{self.base_url}/adfs"
        return {
            "issuer": f"{root}",
            "authorization_endpoint": f"{root}/oauth2/authorize/",
            "token_endpoint": f"{root}/oauth2/token/",
            "jwks_uri": f"{root}/discovery/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "token"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "scopes_supported": ["openid", "profile", "email"],
            "access_token_issuer": "http://adfs.emulator.local/adfs/services/trust",
        }

    def instance_discovery(self, authorization_endpoint: str) -> dict:
        # Answers MSAL's instance discovery when a client points instance_discovery at the emulator.
        tenant = authorization_endpoint.split("/")[3] if authorization_endpoint.count("/") >= 3 else "common"
        return {
            "tenant_discovery_endpoint": f"{self.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [
                {
                    "preferred_network": "127.0.0.1",
                    "preferred_cache": "127.0.0.1",
                    "aliases": ["127.0.0.1"],
                }
            ],
        }

    # -- issuing ----------------------------------------------------------------------------------
    def issue(self, tenant: str, form: dict[str, str], adfs: bool = False) -> dict:
        if form.get("grant_type") != "client_credentials":
            raise _aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id", "")
        secret = form.get("client_secret", "")
        creds = [c for c in self._config.credentials if c.client_id == client_id]
        if not adfs:
            if not any(c.tenant.lower() == tenant.lower() for c in self._config.credentials):
                raise _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
            creds = [c for c in creds if c.tenant.lower() == tenant.lower()]
        if not creds:
            raise _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        if not any(hmac.compare_digest(c.client_secret, secret) for c in creds):
            raise _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret is correct.",
            )
        resource = form.get("resource") or ""
        scope = form.get("scope", "")
        if not resource:
            scopes = [s for s in scope.split() if s.endswith("/.default")]
            if not scopes:
                raise _aad_error(
                    400,
                    "invalid_scope",
                    1002012,
                    "The provided value for scope is not valid: use <resource>/.default.",
                )
            resource = scopes[0][: -len("/.default")]
        now = int(time.time())
        lifetime = self._config.timings.token_lifetime_seconds
        claims = {
            "aud": resource.rstrip("/"),
            "iss": f"{self.base_url}/adfs" if adfs else f"{self.base_url}/{tenant}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "appid": client_id,
            "tid": tenant,
            "jti": uuid.uuid4().hex,
            "gen": self._generation,
        }
        body = {"token_type": "Bearer", "expires_in": lifetime, "access_token": self._sign(claims)}
        if not adfs:
            body["ext_expires_in"] = lifetime
        return body

    def _sign(self, claims: dict) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(sig)}"

    # -- checking ---------------------------------------------------------------------------------
    def check(self, authorization: str | None) -> str | None:
        """None when the bearer token is good for this environment, else the reason (for a 401)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return "missing bearer token"
        token = authorization[7:].strip()
        try:
            header, payload, sig = token.split(".")
            expected = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(sig)):
                return "bad signature"
            claims = json.loads(_unb64(payload))
        except (ValueError, json.JSONDecodeError):
            return "malformed token"
        if claims.get("exp", 0) <= time.time():
            return "token expired"
        if claims.get("gen") != self._generation:
            return "token revoked"
        aud = str(claims.get("aud", "")).lower().rstrip("/")
        allowed = {self.base_url.lower(), self.base_url.lower().replace("127.0.0.1", "localhost")}
        if aud.removesuffix("/namespaces/axsf") not in allowed:
            return f"token audience {aud!r} is not this environment"
        return None

    def revoke_all(self) -> None:
        """Every token issued so far is refused from now on (tests of token refresh)."""
        with self._lock:
            self._generation += 1
