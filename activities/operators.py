"""Activities of operators' actions: thin wrappers over ``dmf.operators``."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.operators import retry
from dmf.pipeline.payloads import FinalizeRetry, to_wire
from dmf.pipeline.services import run_step

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def finalize_retry(req: dict) -> dict[str, Any]:
    p = FinalizeRetry.of(req)
    # dmf.operators.retry still reads the wire dict (not converted here: another area)
    return run_step(retry.finalize_retry, to_wire(p), instance_id=p.retry_id, blob_name=p.source)
