"""The Functions app: one DFApp, wiring only. Every function lives in a blueprint."""

import azure.durable_functions as df
import azure.functions as func

from activities import gate as gate_activities
from activities import inbound as inbound_activities
from activities import operators as operator_activities
from activities import outbound as outbound_activities
from dmf.logs import configure_logging
from orchestrators import import_package, inbound_drop, outbound, retry_drop
from triggers import (
    admin_http,
    fno_events,
    gate_watch,
    inbound_blob,
    metadata_refresh,
    operators_api,
    outbound_timers,
)

configure_logging()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

# Inbound: blob trigger → drop orchestration → per-package import orchestrations.
app.register_functions(inbound_blob.bp)
app.register_functions(inbound_drop.bp)
app.register_functions(import_package.bp)
app.register_functions(inbound_activities.bp)
app.register_functions(gate_activities.bp)
app.register_functions(gate_watch.bp)
app.register_functions(fno_events.bp)  # pushed completion (F&O business event)

# Outbound: recurring-export drains, scheduled exports, recurring enqueue route, housekeeping.
app.register_functions(outbound_timers.bp)
app.register_functions(outbound.bp)
app.register_functions(outbound_activities.bp)

# Operators: health, the operators' API and console, retries.
app.register_functions(admin_http.bp)
app.register_functions(operators_api.bp)
app.register_functions(retry_drop.bp)
app.register_functions(operator_activities.bp)
app.register_functions(metadata_refresh.bp)  # entity metadata snapshots (issue #12)
