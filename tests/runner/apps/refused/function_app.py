"""An app the real worker refuses: an activity input annotated with a parameterised generic."""

from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="req")
def fine(req: dict) -> dict:
    return req


@app.activity_trigger(input_name="req")
def refused(req: dict[str, Any]) -> dict:
    return req
