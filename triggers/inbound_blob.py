"""Blob trigger on the inbound container: start one orchestration per blob version.

In Azure the trigger's source is Event Grid (Flex Consumption supports no other); on a laptop with Core
Tools and Azurite, set ``INBOUND_BLOB_SOURCE=LogsAndContainerScan`` so the polling trigger finds blobs.
The parameter is an SDK-typed ``BlobClient``: the host never streams the blob's bytes into the worker.
No ``from __future__ import annotations`` here: the worker binds SDK types by the real annotation object.
"""

import asyncio
import logging
import os
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob
from azure.core.exceptions import ResourceNotFoundError

from dmf.logs import log_context
from dmf.pipeline.ids import drop_instance_id
from dmf.pipeline.payloads import Drop, to_wire
from dmf.routing import IGNORED_SUFFIXES
from dmf.storage.outcomes import day_key

bp = df.Blueprint()
log = logging.getLogger(__name__)

_SOURCE = (
    func.BlobSource.LOGS_AND_CONTAINER_SCAN
    if os.environ.get("INBOUND_BLOB_SOURCE", "EventGrid") == "LogsAndContainerScan"
    else func.BlobSource.EVENT_GRID
)
_RUNNING = {df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending}


def ignored(name: str) -> bool:
    """Parts of batches (any ``_``-prefixed folder) and our own reason files never start a drop."""
    parts = name.split("/")
    return any(p.startswith("_") for p in parts[:-1]) or name.endswith(IGNORED_SUFFIXES)


@bp.blob_trigger(
    arg_name="source", path="%INBOUND_CONTAINER%/{name}", connection="DATA_STORAGE", source=_SOURCE
)
@bp.durable_client_input(client_name="client")
async def on_inbound_blob(source: blob.BlobClient, client: df.DurableOrchestrationClient) -> None:
    name, container = source.blob_name, source.container_name
    if ignored(name):
        return
    try:
        props = await asyncio.to_thread(source.get_blob_properties)  # the BlobClient is synchronous
    except ResourceNotFoundError:
        log.info("%s/%s is gone (already handled); nothing to do", container, name)
        return
    instance_id = drop_instance_id(container, name, props.etag)
    with log_context(instance_id=instance_id, blob_name=f"{container}/{name}"):
        status = await client.get_status(instance_id)
        if status is not None and status.runtime_status is not None:
            # Repeated delivery of the same blob version: that drop already exists.
            log.info("duplicate delivery of %s/%s ignored (%s)", container, name, status.runtime_status)
            return
        received = props.last_modified or datetime.now(UTC)
        drop = Drop(
            container=container,
            name=name,
            etag=props.etag,
            size=props.size,
            received_at=received.isoformat(),
            day=day_key(received),
        )
        await client.start_new("inbound_drop", instance_id, to_wire(drop))
        log.info("started %s for %s/%s", instance_id, container, name)
