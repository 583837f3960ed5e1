"""The retry budget of docs/RETRIES.md: read from the docs, derived from the code, and an F&O emulator (with
the app's ``Services`` on real Azurite) to measure it under a storm of failures.

The docs table says, per endpoint, the most calls one logical step makes while every call fails. The code
says the same through ``RetryPolicy.attempts`` (HTTP layer, ``SENT_ONCE``) and ``orchestrators/retries.py``
(loops). The storm tests measure it at the emulator's call log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.pipeline.policies import RetryPolicy as CoreRetryPolicy

from dmf.fno.http import SENT_ONCE, RetryPolicy
from dmf.pipeline.services import Services
from dmf.settings import Settings, load_settings
from local.azurite import Azurite
from local.fno_emulator import Emulator, EmulatorConfig
from orchestrators.retries import MAX_FETCH_FAILURES, MAX_START_RETRIES, TARGET_KEY_TRIES
from tests.e2e_support import app_settings, reset_app_caches

DOC = Path(__file__).resolve().parents[1] / "docs" / "RETRIES.md"
EXPORT_ACTIVITY = "{6D31E09F-0249-459F-94F0-AAD9C2C47B64}"  # the emulator's default recurring export
IMPORT_ACTIVITY = "{A0F6F6E5-6F1B-4E4A-9B7D-1E2C3D4F5A6B}"  # ...and its recurring import
DAY = "20261129"
# The emulator names connector endpoints in lower case; the client's actions are capitalised.
CONNECTOR = {"Enqueue": "enqueue", "Dequeue": "dequeue", "Download": "download", "Ack": "ack"}
# The app starts jobs with the Async variants; the synchronous ones share their row of the table.
ALIASES = {
    **CONNECTOR,
    "ImportFromPackage": "ImportFromPackageAsync",
    "ExportToPackage": "ExportToPackageAsync",
}

# ``copy_blob`` into F&O's write URL, every request failing: one server-side copy request, then the streamed
# copy's first Put Block, each sent once (the write URL's client has no SDK retries).
UPLOAD_REQUESTS_PER_START = 2

# What the app runs with unless told otherwise (the budget is stated for the defaults).
HTTP = RetryPolicy(max_retries=Settings.model_fields["fno_max_retries"].default)
# azure-identity's token request under azure-core's default policy (a refused connection, as in the storm).
TOKEN_ATTEMPTS = 1 + CoreRetryPolicy().connect_retries


# Calls a durable loop repeats when they fail (start loops, the error-keys and package-URL loops) or that
# start a job: one retry layer means the HTTP layer must send each of them once.
LOOPED = frozenset(
    {
        "GetAzureWriteUrl",
        "ImportFromPackageAsync",
        "ExportToPackageAsync",
        "Enqueue",
        "GetImportTargetErrorKeysFileUrl",
        "GetExportedPackageUrl",
    }
)


def attempts(action: str, *, idempotent: bool = True) -> int:
    return HTTP.attempts(action, idempotent=idempotent)


def code_budget() -> dict[str, list[int]]:
    """Endpoint -> calls per logical step under a storm, as the code makes them (the docs' bold numbers)."""
    return {
        "token": [TOKEN_ATTEMPTS],
        "GetAzureWriteUrl": [(1 + MAX_START_RETRIES) * attempts("GetAzureWriteUrl")],
        "ImportFromPackageAsync": [attempts("ImportFromPackageAsync", idempotent=False)],
        "GetExecutionSummaryStatus": [attempts("GetExecutionSummaryStatus")],
        "GetExecutionErrors": [attempts("GetExecutionErrors")],
        "GetImportStagingErrorFileUrl": [attempts("GetImportStagingErrorFileUrl")],
        "GenerateImportTargetErrorKeysFile": [attempts("GenerateImportTargetErrorKeysFile")],
        "GetImportTargetErrorKeysFileUrl": [TARGET_KEY_TRIES * attempts("GetImportTargetErrorKeysFileUrl")],
        "GetExecutionSummaryPageUrl": [attempts("GetExecutionSummaryPageUrl")],
        "ExportToPackageAsync": [attempts("ExportToPackageAsync", idempotent=False)],
        "GetExportedPackageUrl": [MAX_FETCH_FAILURES * attempts("GetExportedPackageUrl")],
        "enqueue": [(1 + MAX_START_RETRIES) * attempts("Enqueue", idempotent=False)],
        "GetMessageStatus": [attempts("GetMessageStatus")],
        "GetExecutionIdByMessageId": [attempts("GetExecutionIdByMessageId")],
        "dequeue": [attempts("Dequeue")],
        "download": [attempts("Download")],
        "ack": [attempts("Ack")],
        "metadata": [attempts("Metadata/DataEntities")],
        "upload": [(1 + MAX_START_RETRIES) * UPLOAD_REQUESTS_PER_START],
    }


def doc_budget() -> dict[str, list[int]]:
    """Endpoint -> the bold numbers of its "Calls per step" cell in docs/RETRIES.md."""
    rows: dict[str, list[int]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not re.fullmatch(r"`[A-Za-z]+`", cells[1]):
            continue
        rows[cells[1].strip("`")] = [int(n) for n in re.findall(r"\*\*(\d+)\*\*", cells[4])]
    return rows


def budget(endpoint: str, which: int = 0) -> int:
    """The stated number for ``endpoint`` (after checking the docs and the code agree on it)."""
    stated, derived = doc_budget()[endpoint], code_budget()[endpoint]
    assert stated == derived, f"docs/RETRIES.md says {stated} calls for {endpoint}, the code makes {derived}"
    return derived[which]


def sent_once_endpoints() -> set[str]:
    return {ALIASES.get(a, a) for a in SENT_ONCE}


@dataclass
class Storm:
    """An emulator and the app's services on it; ``calls(endpoint)`` counts what reached the emulator."""

    emu: Emulator
    svc: Services
    values: dict[str, str]

    def fail(self, endpoint: str, kind: str = "503", **kw: Any) -> None:
        """Every call to ``endpoint`` fails from now on (100%)."""
        self.emu.admin.inject_fault(endpoint, kind, rate=1.0, **kw)

    def calls(self, endpoint: str) -> int:
        return len(self.emu.admin.calls(endpoint))

    def calm(self) -> None:
        self.emu.admin.clear_faults()


@contextmanager
def storm_env(azurite: Azurite, name: str, **overrides: str) -> Iterator[Storm]:
    """A fresh emulator and app services with the default retry settings (``FNO_MAX_RETRIES`` unset)."""
    cfg = EmulatorConfig().model_copy(update={"blob_container": f"{name}-dmf"})
    emu = Emulator(cfg, azurite.connection_string).start()
    try:
        values = app_settings(
            azurite,
            emu,
            ARCHIVE_CONTAINER=f"{name}-archive",
            STAGING_CONTAINER=f"{name}-staging",
            OUTCOMES_TABLE=f"{name}outcomes",
            LEDGER_TABLE=f"{name}ledger",
            GATES_TABLE=f"{name}gates",
            ERRORS_CONTAINER=f"{name}-errors",
            METADATA_CONTAINER=f"{name}-metadata",
            **overrides,
        )
        reset_app_caches()
        yield Storm(emu, Services(load_settings(values)), values)
        errors = emu.admin.server_errors()
        assert not errors, errors
    finally:
        emu.stop()
        reset_app_caches()
