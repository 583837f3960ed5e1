"""Telemetry on the host: what host.json and the template set, and who exports (the worker, not the app).

The decisive checks run the real Python worker's own start-up code (``azure_functions_runtime.otel``, the same
``initialize_azure_monitor`` the host's worker runs for ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY``) and
then the app's logging set-up, in a subprocess, and count the Azure Monitor log exporters on the root logger:
exactly one means every record is exported once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmf.telemetry import APP, HOST, OFF, WORKER, telemetry_plan
from tests.infra.conftest import VARIANTS, app_settings, evaluate_main

ROOT = Path(__file__).resolve().parents[1]
CONN = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"


def test_host_json_turns_on_opentelemetry_mode() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_template_leaves_the_exporter_to_the_worker(variant: str) -> None:
    settings = app_settings(evaluate_main(variant))
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    # Not the OTLP-only switch: on its own it makes the app export, and some worker builds crash on it.
    assert "PYTHON_ENABLE_OPENTELEMETRY" not in settings
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].sample.endswith(";Authorization=AAD")
    rendered = {k: getattr(v, "sample", v) for k, v in settings.items()}
    assert telemetry_plan(rendered).mode == WORKER


@pytest.mark.parametrize(
    ("settings", "mode"),
    [
        ({}, OFF),
        ({"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}, OFF),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN}, HOST),
        (
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": CONN,
                "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "True",
            },
            WORKER,
        ),
        (
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": CONN,
                "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "false",
            },
            HOST,
        ),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CONN, "PYTHON_ENABLE_OPENTELEMETRY": "1"}, APP),
        (
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": CONN,
                "PYTHON_ENABLE_OPENTELEMETRY": "true",
                "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "yes",
            },
            WORKER,
        ),
    ],
)
def test_decision(settings: dict[str, str], mode: str) -> None:
    assert telemetry_plan(settings).mode == mode


def test_settings_are_read_as_the_worker_reads_them() -> None:
    from azure_functions_runtime.utils.app_setting_manager import is_true_like

    for value in ["true", "True", " TRUE ", "1", "t", "yes", "Y", "false", "0", "", "no", "on", "enabled"]:
        env = {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": CONN,
            "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": value,
        }
        assert (telemetry_plan(env).mode == WORKER) is is_true_like(value), value


_PROBE = r"""
import json, logging, os, sys
sys.path.insert(0, os.getcwd())
if os.environ.get("PROBE_WORKER_INIT") == "1":
    # What the host's Python worker does at WorkerInitRequest, before function_app is imported.
    from azure_functions_runtime.otel import initialize_azure_monitor, otel_manager
    initialize_azure_monitor()
    assert otel_manager.get_azure_monitor_available(), "the worker could not configure Azure Monitor"
import azure.monitor.opentelemetry as distro
calls = []
_real = distro.configure_azure_monitor
distro.configure_azure_monitor = lambda **kw: (calls.append(sorted(kw)), _real(**kw))[1]
from dmf.logs import configure_logging
from dmf.telemetry import configure_telemetry
configure_logging()
configure_telemetry()  # a second call (e.g. another import path) must not add an exporter
# The distro's OpenTelemetry log handler (opentelemetry.sdk._logs or .instrumentation.logging, by version).
handlers = [
    h for h in logging.getLogger().handlers
    if type(h).__name__ == "LoggingHandler" and type(h).__module__.startswith("opentelemetry.")
]
from dmf.logs import RedactingFilter
redacted = all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in handlers)
out = {"exporters": len(handlers), "app_calls": calls, "mode": configure_telemetry().mode}
print(json.dumps({**out, "redacted": redacted}))
"""


def _probe(env: dict[str, str]) -> dict[str, object]:
    worker_switches = {"PYTHON_ENABLE_OPENTELEMETRY", "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"}
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_")) and k not in worker_switches
    }
    base |= {
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # no calls to Microsoft's statsbeat endpoint
        "OTEL_TRACES_SAMPLER": "always_off",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": CONN,  # ingestion on a closed loopback port
        **env,
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_on_the_host_the_worker_exports_and_the_app_adds_no_second_exporter() -> None:
    result = _probe({"PROBE_WORKER_INIT": "1", "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"})
    # ...and the worker's exporter sits behind the app's redacting filter (no SAS signature leaves the app).
    assert result == {"exporters": 1, "app_calls": [], "mode": WORKER, "redacted": True}


def test_app_exports_once_when_only_trace_propagation_is_on() -> None:
    result = _probe(
        {
            "PYTHON_ENABLE_OPENTELEMETRY": "true",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD",
        }
    )
    assert result == {
        "exporters": 1,
        "app_calls": [["connection_string", "credential"]],
        "mode": APP,
        "redacted": True,
    }


def test_host_relay_mode_adds_no_exporter() -> None:
    assert _probe({}) == {"exporters": 0, "app_calls": [], "mode": HOST, "redacted": True}
