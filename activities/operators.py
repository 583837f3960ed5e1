"""Activities of operators' actions: thin wrappers over ``dmf.operators``."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from dmf.logs import log_context
from dmf.operators import retry
from dmf.pipeline.payloads import FinalizeRetry, to_wire
from dmf.pipeline.services import services

bp = df.Blueprint()


@bp.activity_trigger(input_name="req")
def finalize_retry(req: dict) -> dict[str, Any]:
    final = FinalizeRetry.of(req)
    with log_context(instance_id=final.retry_id, blob_name=final.source):
        # dmf.operators.retry still reads the wire dict (not converted here: another area)
        return retry.finalize_retry(services(), to_wire(final))
