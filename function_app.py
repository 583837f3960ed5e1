"""The Functions app: one DFApp, wiring only. Every function lives in a blueprint."""

import azure.durable_functions as df
import azure.functions as func

from dmf.logs import configure_logging
from triggers import admin_http

configure_logging()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(admin_http.bp)
