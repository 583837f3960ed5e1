"""Per-process factory: one credential, one HTTP session and one API object per F&O environment."""

from __future__ import annotations

import threading

from dmf.fno.auth import bearer_token_provider, clear_credentials, credential_for
from dmf.fno.http import FnoHttp, RetryPolicy
from dmf.fno.package_api import PackageApi
from dmf.fno.recurring_api import RecurringApi
from dmf.settings import Deployment, Settings

_lock = threading.Lock()
_sessions: dict[str, tuple[str, FnoHttp]] = {}


def _fingerprint(settings: Settings, env_name: str, credential: object, retry: RetryPolicy | None) -> str:
    env = settings.environment(env_name)
    parts = (
        env.model_dump_json(),
        id(credential),  # a new credential (changed secret) means a new session
        settings.fno_ca_bundle,
        settings.fno_http_timeout_seconds,
        settings.fno_transfer_timeout_seconds,
        settings.fno_max_retries,
        retry,
    )
    return "|".join(str(x) for x in parts)


def http_for(settings: Settings, env_name: str | None = None, *, retry: RetryPolicy | None = None) -> FnoHttp:
    """The shared ``FnoHttp`` for an environment (built on first use, reused after)."""
    env = settings.environment(env_name)
    credential = credential_for(env, ca_bundle=settings.fno_ca_bundle)
    fp = _fingerprint(settings, env.name, credential, retry)
    with _lock:
        hit = _sessions.get(env.name)
        if hit is not None and hit[0] == fp:
            return hit[1]
        http = FnoHttp(
            token_provider=bearer_token_provider(credential, env.token_scope, env.name),
            timeout=settings.fno_http_timeout_seconds,
            transfer_timeout=settings.fno_transfer_timeout_seconds,
            verify=settings.fno_ca_bundle or True,
            retry=retry or RetryPolicy(max_retries=settings.fno_max_retries),
        )
        if hit is not None:
            hit[1].close()
        _sessions[env.name] = (fp, http)
        return http


def package_api(
    settings: Settings, env_name: str | None = None, *, retry: RetryPolicy | None = None
) -> PackageApi:
    """The Package API for an environment (session and credential shared per process)."""
    env = settings.environment(env_name)
    return PackageApi(http_for(settings, env.name, retry=retry), env.api_root)


def recurring_api(
    settings: Settings, env_name: str | None = None, *, retry: RetryPolicy | None = None
) -> RecurringApi:
    """The Recurring Integration API for a cloud environment (session shared with the Package API)."""
    env = settings.environment(env_name)
    if env.deployment is Deployment.ONPREM:
        raise ValueError(
            f"F&O environment {env.name!r} is on-premises: the Recurring Integration API is not available "
            "there; use the Package API"
        )
    return RecurringApi(http_for(settings, env.name, retry=retry), env.api_root)


def reset_clients() -> None:
    """Drop every cached session and credential (tests; configuration reloads)."""
    with _lock:
        for _, http in _sessions.values():
            http.close()
        _sessions.clear()
    clear_credentials()
