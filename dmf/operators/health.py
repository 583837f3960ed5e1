"""The deep health check (``GET /api/health?deep=1``): can we get a token for each F&O environment, reach
storage, and is any import gate stuck or paused? Each problem is named; nothing secret is returned.

The token check builds a fresh credential (the cached one would answer from its token cache and hide an
identity provider that stopped answering), so it costs one token request per environment: call it on demand,
not from a load balancer's probe (``/api/health`` without ``deep`` stays cheap).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from dmf.fno.auth import build_credential
from dmf.gate import gate_service
from dmf.pipeline.services import Services
from dmf.redact import redact
from dmf.storage import clients

WAITER_TOO_OLD_SECONDS = 6 * 3600


def _timed(fn: Any) -> tuple[bool, str | None, float]:
    t0 = time.monotonic()
    try:
        fn()
        return True, None, time.monotonic() - t0
    except Exception as exc:
        return False, redact(f"{type(exc).__name__}: {exc}").splitlines()[0][:400], time.monotonic() - t0


def _token(svc: Services, name: str) -> None:
    env = svc.settings.environment(name)
    cred = build_credential(env, ca_bundle=svc.settings.fno_ca_bundle)
    try:
        if not cred.get_token(env.token_scope).token:
            raise RuntimeError("empty token")
    finally:
        close = getattr(cred, "close", None)
        if close:
            close()


def _storage(svc: Services) -> None:
    s = svc.settings
    next(
        iter(clients.table(s, s.outcomes_table).query_entities("PartitionKey eq 'x'", results_per_page=1)),
        None,
    )
    clients.container(s, s.inbound_container, create=False).get_container_properties()


def deep_health(svc: Services, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    problems: list[str] = []
    warnings: list[str] = []
    checks: dict[str, Any] = {"environments": {}, "gates": {}}
    names = sorted(svc.settings.environments)
    with ThreadPoolExecutor(max_workers=max(len(names), 1) + 1) as pool:
        tokens = {n: pool.submit(_timed, lambda n=n: _token(svc, n)) for n in names}
        storage = pool.submit(_timed, lambda: _storage(svc))
        ok, err, secs = storage.result()
        checks["storage"] = {"ok": ok, "seconds": round(secs, 3), **({"error": err} if err else {})}
        if not ok:
            problems.append(f"storage unreachable: {err}")
        for n, fut in tokens.items():
            ok, err, secs = fut.result()
            checks["environments"][n] = {
                "token": ok,
                "seconds": round(secs, 3),
                **({"error": err} if err else {}),
            }
            if not ok:
                problems.append(f"environment {n}: no token from its identity provider: {err}")
    if checks["storage"]["ok"]:
        for n in names:
            try:
                snap = gate_service(svc).status(n)
            except Exception as exc:
                problems.append(f"gate {n}: unreadable: {redact(str(exc))[:300]}")
                continue
            expired = [h for h in snap["holders"] if datetime.fromisoformat(h["lease_until"]) < now]
            oldest = min((datetime.fromisoformat(w["enqueued_at"]) for w in snap["waiters"]), default=None)
            waited = (now - oldest).total_seconds() if oldest else 0.0
            checks["gates"][n] = {
                "paused": snap["paused"],
                "holders": len(snap["holders"]),
                "waiters": len(snap["waiters"]),
                "expiredLeases": len(expired),
                "oldestWaitSeconds": round(waited),
            }
            if snap["paused"]:
                warnings.append(
                    f"gate {n}: paused by {snap.get('paused_by') or 'an operator'}; no import starts"
                )
            if expired:
                problems.append(f"gate {n}: {len(expired)} holder lease(s) expired (a crashed import?)")
            if waited > WAITER_TOO_OLD_SECONDS:
                warnings.append(f"gate {n}: a drop has waited {waited / 3600:.1f} h for its turn")
    status = "ok" if not problems else "unhealthy"
    return {"status": status, "problems": problems, "warnings": warnings, "checks": checks}
