"""Host keys, checked as the Functions host checks them (Core Tools does not check them locally; we do).

FUNCTION-level routes take a function key or the master key, ADMIN-level only the master key, in the
``x-functions-key`` header or the ``code`` query parameter. The Durable extension's webhooks (status,
raise event, terminate...) take the ``durabletask_extension`` system key, which the check-status payload
carries in its URLs.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _new_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class HostKeys:
    function_key: str = field(default_factory=_new_key)
    master_key: str = field(default_factory=_new_key)
    system_key: str = field(default_factory=_new_key)

    @staticmethod
    def presented(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        for k, v in headers.items():
            if k.lower() == "x-functions-key":
                return v
        return query.get("code")

    def allows(self, auth_level: str | None, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        level = (auth_level or "function").lower()
        if level == "anonymous":
            return True
        given = self.presented(headers, query) or ""
        accepted = [self.master_key] if level == "admin" else [self.function_key, self.master_key]
        return any(hmac.compare_digest(given.encode(), k.encode()) for k in accepted)

    def allows_system(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        given = self.presented(headers, query) or ""
        return any(
            hmac.compare_digest(given.encode(), k.encode()) for k in (self.system_key, self.master_key)
        )

    @classmethod
    def load_or_create(cls, path: Path) -> HostKeys:
        """Keys kept in a file (0600), as the host keeps them in storage: they survive a restart."""
        if path.exists():
            return cls(**json.loads(path.read_text()))
        keys = cls()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(keys)))
        return keys
