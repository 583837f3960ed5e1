"""Three activities in sequence; the second blocks while ``RUNNER_BLOCK_FILE`` exists.

Every activity start and finish is appended to ``RUNNER_MARKER_FILE`` so a test can count executions across
a runner that is killed (SIGKILL) mid-orchestration and restarted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _mark(line: str) -> None:
    with open(os.environ["RUNNER_MARKER_FILE"], "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@app.activity_trigger(input_name="step")
def step(step: int) -> int:
    _mark(f"start {step}")
    if step == 2:
        block = Path(os.environ["RUNNER_BLOCK_FILE"])
        deadline = time.monotonic() + 60
        while block.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    _mark(f"done {step}")
    return step * 10


@app.orchestration_trigger(context_name="context")
def three_steps(context: df.DurableOrchestrationContext):
    out = []
    for i in (1, 2, 3):
        out.append((yield context.call_activity("step", i)))
    return out


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new(req.route_params["name"], req.params.get("id"), None)
    return client.create_check_status_response(req, instance_id)
