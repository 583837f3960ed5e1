"""Activities of operators' actions: thin wrappers over ``dmf.operators``."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.operators import retry
from dmf.pipeline.payloads import FinalizeRetry
from dmf.pipeline.services import run_step

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def finalize_retry(req: dict) -> dict[str, Any]:
    p = FinalizeRetry.of(req)
    return run_step(retry.finalize_retry, p, instance_id=p.retry_id, blob_name=p.source)
