"""The real Python worker's indexing of ``function_app.py``: what the host does at start-up.

``azure-functions-runtime`` (the worker's loader, registry and binding code) runs in a subprocess, as a
fresh worker process would: it imports the app by file, processes every function, and reports the raw
bindings the host receives. One refused function means no function of the app loads in Azure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local.functions_runner import LocalRunner
from local.functions_runner.worker import WorkerIndexError

ROOT = Path(__file__).resolve().parents[1]
REFUSED_APP = ROOT / "tests" / "runner" / "apps" / "refused" / "function_app.py"


def _index(script: Path, **env: str) -> tuple[int, dict]:
    environ = {k: v for k, v in os.environ.items() if k != "INBOUND_BLOB_SOURCE"} | env
    proc = subprocess.run(
        [sys.executable, "-m", "local.worker_index", str(script), "--json"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _by_type(bindings: list[dict], kind: str) -> dict:
    found = [b for b in bindings if b["type"] == kind]
    assert len(found) == 1, bindings
    return found[0]


def test_the_worker_indexes_every_function_of_the_app() -> None:
    code, report = _index(ROOT / "function_app.py")
    refused = {r["function"]: r["message"] for r in report["refused"]}
    assert refused == {}, "the worker refuses: " + "; ".join(f"{k}: {v}" for k, v in refused.items())
    assert code == 0
    # Every function the app registers reached the host's metadata (38 when this was written).
    names = set(report["functions"])
    assert {"on_inbound_blob", "inbound_drop", "import_package", "plan_drop", "gate_release"} <= names
    assert len(names) >= 38


def test_blob_trigger_metadata_is_what_the_host_needs_in_azure() -> None:
    _, report = _index(ROOT / "function_app.py")
    bindings = report["functions"]["on_inbound_blob"]
    trigger = _by_type(bindings, "blobTrigger")
    assert trigger["source"] == "EventGrid"  # Flex Consumption supports no other blob trigger source
    assert trigger["connection"] == "DATA_STORAGE"
    assert trigger["path"] == "%INBOUND_CONTAINER%/{name}"
    assert trigger["direction"] == "IN"
    # The SDK-typed BlobClient parameter is a deferred binding: the host never streams the blob to us.
    assert trigger["properties"]["SupportsDeferredBinding"] is True
    client = _by_type(bindings, "durableClient")
    assert client["properties"]["SupportsDeferredBinding"] is False


def test_laptop_source_is_container_scan() -> None:
    _, report = _index(ROOT / "function_app.py", INBOUND_BLOB_SOURCE="LogsAndContainerScan")
    trigger = _by_type(report["functions"]["on_inbound_blob"], "blobTrigger")
    assert trigger["source"] == "LogsAndContainerScan"


def test_the_worker_names_a_refused_function() -> None:
    code, report = _index(REFUSED_APP)
    assert code == 1
    assert [r["function"] for r in report["refused"]] == ["refused"]
    message = report["refused"][0]["message"]
    assert message == (
        "cannot load the refused function: binding req has invalid non-type annotation dict[str, typing.Any]"
    )
    assert "fine" in report["functions"]


def test_the_runner_refuses_what_the_worker_refuses(azurite) -> None:
    runner = LocalRunner(
        app_module="tests.runner.apps.refused.function_app",
        storage_connection_string=azurite.connection_string,
        task_hub="refusedprobe",
        host_json=None,
    )
    with pytest.raises(WorkerIndexError) as err:
        runner.start()
    assert [r.function for r in err.value.refusals] == ["refused"]
    assert "binding req has invalid non-type annotation dict[str, typing.Any]" in str(err.value)
    assert "no function of this app would load" in str(err.value)
