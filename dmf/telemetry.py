"""Who exports the app's logs and traces to Application Insights, decided once per process.

On the Functions host the supported set-up (docs/DEPLOY.md, "Telemetry") is host.json
``"telemetryMode": "OpenTelemetry"`` plus the app setting ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``:
the Python worker then configures the Azure Monitor distro itself when it starts (before ``function_app`` is
imported), attaches each invocation's trace context from the host, and tells the host that it exports the
worker's logs, so the host drops its relayed copies. The app must not configure a second exporter then: every
record would be sent twice.

Modes:

* ``off``: no ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (local runs, tests): nothing is exported.
* ``worker``: the worker owns the exporter (the deployed set-up); the app adds nothing.
* ``app``: ``PYTHON_ENABLE_OPENTELEMETRY=true`` without the setting above: the worker only propagates the
  host's trace context and exports nothing, so the app configures the Azure Monitor exporter, once.
* ``host``: a connection string but neither worker setting: the host relays the worker's log records to
  Application Insights itself. An exporter in the app would duplicate them and, without the worker attaching
  the host's trace context, its spans would not join the host's operations; so the app adds nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import NamedTuple

log = logging.getLogger(__name__)

OFF, WORKER, APP, HOST = "off", "worker", "app", "host"

_configured: TelemetryPlan | None = None


class TelemetryPlan(NamedTuple):
    mode: str
    reason: str


def _true(value: str | None) -> bool:
    # The worker's own reading of these settings (azure_functions_runtime.utils.app_setting_manager.is_true_like).
    return value is not None and value.strip().lower() in {"1", "true", "t", "yes", "y"}


def telemetry_plan(environ: Mapping[str, str] | None = None) -> TelemetryPlan:
    """The decision, from the app settings alone (no side effects)."""
    environ = os.environ if environ is None else environ
    if not environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return TelemetryPlan(OFF, "APPLICATIONINSIGHTS_CONNECTION_STRING is not set")
    if _true(environ.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY")):
        return TelemetryPlan(
            WORKER, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: the Python worker configured Azure Monitor"
        )
    if _true(environ.get("PYTHON_ENABLE_OPENTELEMETRY")):
        return TelemetryPlan(
            APP, "PYTHON_ENABLE_OPENTELEMETRY: the worker propagates trace context, the app exports"
        )
    return TelemetryPlan(HOST, "no worker telemetry setting: the Functions host relays the app's logs")


def _credential(environ: Mapping[str, str]) -> object | None:
    """Entra ID token credential from APPLICATIONINSIGHTS_AUTHENTICATION_STRING (``ClientId=...;Authorization=AAD``)."""
    auth = environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")
    parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
    parts = {k.strip().lower(): v.strip() for k, v in parts.items()}
    if parts.get("authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=parts.get("clientid") or None)


def configure_telemetry(environ: Mapping[str, str] | None = None) -> TelemetryPlan:
    """Apply the plan; idempotent (the exporter is configured at most once per process)."""
    global _configured
    if _configured is not None:
        return _configured
    environ = os.environ if environ is None else environ
    plan = telemetry_plan(environ)
    if plan.mode == APP:
        from azure.monitor.opentelemetry import configure_azure_monitor

        kwargs: dict[str, object] = {"connection_string": environ["APPLICATIONINSIGHTS_CONNECTION_STRING"]}
        credential = _credential(environ)
        if credential is not None:  # local auth is off on the component: export with the managed identity
            kwargs["credential"] = credential
        configure_azure_monitor(**kwargs)
    _configured = plan
    log.info("telemetry: %s (%s)", plan.mode, plan.reason)
    return plan
