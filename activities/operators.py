"""Activities of operators' actions: thin wrappers over ``dmf.operators``."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.logs import log_context
from dmf.operators import retry
from dmf.pipeline.services import services

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def finalize_retry(req: dict) -> dict[str, Any]:
    with log_context(instance_id=req["retry_id"], blob_name=req.get("source")):
        return retry.finalize_retry(services(), req)
