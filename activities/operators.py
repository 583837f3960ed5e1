"""Activities of operators' actions: thin wrappers over ``dmf.operators`` (``activities/steps.py``)."""

from __future__ import annotations

import azure.durable_functions as df

from activities.steps import step_activity
from dmf.operators import retry
from dmf.pipeline.payloads import FinalizeRetry

bp = df.Blueprint()

step_activity(
    bp,
    "finalize_retry",
    FinalizeRetry,
    retry.finalize_retry,
    lambda p: {"instance_id": p.retry_id, "blob_name": p.source},
)
