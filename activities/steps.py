"""``step_activity``: the one shape of an activity that runs a pipeline step.

Every such activity reads its plain-dict input as its payload (``dmf/pipeline/payloads.py``), runs the step
with this worker's services and answers what the step answers; its log lines carry a few of the payload's
fields. The function registered is an ordinary ``def name(req: dict)``: the worker indexes it as it would a
hand-written one (``python -m local.worker_index``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import azure.durable_functions as df

from dmf.pipeline.payloads import Payload
from dmf.pipeline.services import run_step

LogFields = Callable[[Any], dict[str, Any]]


def step_activity(bp: df.Blueprint, name: str, model: type[Payload], step: Callable, logs: LogFields) -> None:
    """Register activity ``name``: ``step(services, model.of(req))``, logged with ``logs(payload)``."""

    def activity(req: dict) -> Any:
        p = model.of(req)
        return run_step(step, p, **logs(p))

    activity.__name__ = activity.__qualname__ = name
    activity.__doc__ = step.__doc__
    bp.activity_trigger(input_name="req")(activity)
