"""Durable state: instances, history and undelivered messages, in memory or in Table Storage (Azurite).

The Table layout follows the Azure Storage provider's spirit: ``<hub>Instances`` (one row per instance),
``<hub>History`` (one row per event, PartitionKey = instance id) and ``<hub>Pending`` (messages received
but not yet applied by an orchestrator episode, so a killed runner loses nothing it acknowledged).
Values too large for one Table property are split across properties, or moved to the
``<hub>-largemessages`` container beyond what one entity can hold.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient

from .history import parse_iso

CHUNK = 30_000  # characters per property: Table string properties hold 64 KiB of UTF-16
TX_BYTES = 3 * 2**20  # Table transactions are capped at 4 MiB of payload
MAX_INLINE = 15 * CHUNK  # beyond this (≈900 KB as UTF-16) a value goes to a blob: entities hold 1 MiB
INSTANCE_FIELDS = (
    "name", "execution_id", "status", "input", "output", "custom_status", "created", "updated",
    "parent_id", "parent_seq", "engine_state",
)  # fmt: skip
PAYLOADS = frozenset({"input", "output", "custom_status", "engine_state"})  # packed: chunked or in a blob


class Store(Protocol):
    def get_instance(self, instance_id: str) -> dict[str, Any] | None: ...
    def put_instance(self, inst: dict[str, Any]) -> None: ...
    def query_instances(
        self,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        statuses: Iterable[str] | None = None,
        prefix: str | None = None,
        payloads: bool = True,
    ) -> list[dict[str, Any]]: ...
    def delete_instance(self, instance_id: str) -> bool: ...
    def append_history(self, instance_id: str, execution_id: str, start: int, events: list[dict]) -> None: ...
    def load_history(self, instance_id: str, execution_id: str) -> list[dict[str, Any]]: ...
    def truncate_history(self, instance_id: str, execution_id: str, length: int) -> None: ...
    def delete_history(self, instance_id: str) -> None: ...
    def put_pending(self, instance_id: str, msg_id: str, ev: dict[str, Any]) -> None: ...
    def delete_pending(self, instance_id: str, msg_ids: list[str]) -> None: ...
    def load_pending(self, instance_id: str) -> list[tuple[str, dict[str, Any]]]: ...
    def active_instance_ids(self) -> list[str]: ...


def _matches(inst: dict[str, Any], created_from, created_to, statuses, prefix) -> bool:
    created = parse_iso(inst["created"])
    if created_from and created < created_from:
        return False
    if created_to and created > created_to:
        return False
    if statuses and inst["status"] not in set(statuses):
        return False
    return not (prefix and not inst["instance_id"].startswith(prefix))


class MemoryStore:
    """Everything in process memory: fast, gone when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, dict[str, Any]] = {}
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._pending: dict[str, dict[str, dict[str, Any]]] = {}

    def get_instance(self, instance_id: str) -> dict[str, Any] | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return dict(inst) if inst else None

    def put_instance(self, inst: dict[str, Any]) -> None:
        with self._lock:
            self._instances[inst["instance_id"]] = dict(inst)

    def query_instances(self, created_from=None, created_to=None, statuses=None, prefix=None, payloads=True):
        with self._lock:
            rows = [dict(i) for i in self._instances.values()]
        found = [i for i in rows if _matches(i, created_from, created_to, statuses, prefix)]
        return found if payloads else [{k: v for k, v in i.items() if k not in PAYLOADS} for i in found]

    def delete_instance(self, instance_id: str) -> bool:
        with self._lock:
            found = self._instances.pop(instance_id, None) is not None
            for key in [k for k in self._history if k[0] == instance_id]:
                del self._history[key]
            self._pending.pop(instance_id, None)
            return found

    def append_history(self, instance_id, execution_id, start, events):
        with self._lock:
            h = self._history.setdefault((instance_id, execution_id), [])
            del h[start:]
            h.extend(json.loads(json.dumps(events)))

    def load_history(self, instance_id, execution_id):
        with self._lock:
            return json.loads(json.dumps(self._history.get((instance_id, execution_id), [])))

    def truncate_history(self, instance_id, execution_id, length):
        with self._lock:
            del self._history.get((instance_id, execution_id), [])[length:]

    def delete_history(self, instance_id):
        with self._lock:
            for key in [k for k in self._history if k[0] == instance_id]:
                del self._history[key]

    def put_pending(self, instance_id, msg_id, ev):
        with self._lock:
            self._pending.setdefault(instance_id, {})[msg_id] = ev

    def delete_pending(self, instance_id, msg_ids):
        with self._lock:
            box = self._pending.get(instance_id, {})
            for m in msg_ids:
                box.pop(m, None)

    def load_pending(self, instance_id):
        with self._lock:
            return sorted(self._pending.get(instance_id, {}).items())

    def active_instance_ids(self) -> list[str]:
        with self._lock:
            return [k for k, v in self._instances.items() if v["status"] in ("Pending", "Running")]


class TableStore:
    """Instances, history and pending messages in Azure Table Storage (Azurite locally)."""

    def __init__(self, connection_string: str, task_hub: str) -> None:
        self._svc = TableServiceClient.from_connection_string(connection_string)
        self._blobs = BlobServiceClient.from_connection_string(connection_string)
        self.task_hub = task_hub
        self._instances = self._table(f"{task_hub}Instances")
        self._history = self._table(f"{task_hub}History")
        self._pending = self._table(f"{task_hub}Pending")
        self._large = self._blobs.get_container_client(f"{task_hub.lower()}-largemessages")

    def _table(self, name: str):
        try:
            self._svc.create_table(name)
        except ResourceExistsError:
            pass
        return self._svc.get_table_client(name)

    # -- large values ---------------------------------------------------------------------------------
    def _pack(self, entity: dict[str, Any], key: str, text: str | None, owner: str) -> None:
        if text is None:
            return
        if len(text) > MAX_INLINE:
            name = f"{owner}/{key}/{uuid.uuid4().hex}"
            try:
                self._large.create_container()
            except ResourceExistsError:
                pass
            self._large.upload_blob(name, text.encode(), overwrite=True)
            entity[f"{key}_blob"] = name
            return
        for n, i in enumerate(range(0, max(len(text), 1), CHUNK)):
            entity[key if n == 0 else f"{key}_{n}"] = text[i : i + CHUNK]

    def _unpack(self, entity: dict[str, Any], key: str) -> str | None:
        if f"{key}_blob" in entity:
            return self._large.download_blob(entity[f"{key}_blob"]).readall().decode()
        if key not in entity:
            return None
        parts, n = [entity[key]], 1
        while f"{key}_{n}" in entity:
            parts.append(entity[f"{key}_{n}"])
            n += 1
        return "".join(parts)

    # -- instances ------------------------------------------------------------------------------------
    def _to_entity(self, inst: dict[str, Any]) -> dict[str, Any]:
        e: dict[str, Any] = {"PartitionKey": inst["instance_id"], "RowKey": ""}
        for f in INSTANCE_FIELDS:
            v = inst.get(f)
            if v is None:
                continue
            if f in PAYLOADS:
                self._pack(e, f, v, inst["instance_id"])
            else:
                e[f] = v
        return e

    def _from_entity(self, e: dict[str, Any], payloads: bool = True) -> dict[str, Any]:
        inst: dict[str, Any] = {"instance_id": e["PartitionKey"]}
        for f in INSTANCE_FIELDS:
            if f in PAYLOADS:
                if payloads:
                    inst[f] = self._unpack(e, f)
            else:
                inst[f] = e.get(f)
        return inst

    def get_instance(self, instance_id: str) -> dict[str, Any] | None:
        try:
            return self._from_entity(self._instances.get_entity(instance_id, ""))
        except ResourceNotFoundError:
            return None

    def put_instance(self, inst: dict[str, Any]) -> None:
        self._instances.upsert_entity(self._to_entity(inst), mode=UpdateMode.REPLACE)

    def query_instances(self, created_from=None, created_to=None, statuses=None, prefix=None, payloads=True):
        """Filtered as the rows stream in, payloads read only for rows that match (or not at all): a purge
        over a large task hub must not hold every instance's input and output at once."""
        statuses = list(statuses or [])
        flt = " or ".join(f"status eq @s{n}" for n in range(len(statuses))) or None
        select = None if payloads else ["PartitionKey", *(f for f in INSTANCE_FIELDS if f not in PAYLOADS)]
        rows = self._instances.query_entities(
            flt, parameters={f"s{n}": v for n, v in enumerate(statuses)}, select=select
        ) if flt else self._instances.list_entities(select=select)  # fmt: skip
        found = []
        for e in rows:
            head = {"instance_id": e["PartitionKey"], "created": e.get("created"), "status": e.get("status")}
            if _matches(head, created_from, created_to, statuses, prefix):
                found.append(self._from_entity(e, payloads))
        return found

    def delete_instance(self, instance_id: str) -> bool:
        found = self.get_instance(instance_id) is not None
        self.delete_history(instance_id)
        self._delete_partition(self._pending, instance_id)
        try:
            self._instances.delete_entity(instance_id, "")
        except ResourceNotFoundError:
            pass
        return found

    def active_instance_ids(self) -> list[str]:
        q = "status eq 'Running' or status eq 'Pending'"
        return [e["PartitionKey"] for e in self._instances.query_entities(q, select=["PartitionKey"])]

    # -- history --------------------------------------------------------------------------------------
    def append_history(self, instance_id, execution_id, start, events):
        batch: list[Any] = []
        size = 0
        for i, ev in enumerate(events, start):
            e = {"PartitionKey": instance_id, "RowKey": f"{execution_id}.{i:08d}"}
            text = json.dumps(ev)
            self._pack(e, "event", text, instance_id)
            # A transaction holds at most 100 rows and 4 MiB: flush before either limit.
            if batch and (len(batch) == 100 or size + len(text) > TX_BYTES):
                self._history.submit_transaction(batch)
                batch, size = [], 0
            batch.append(("upsert", e, {"mode": UpdateMode.REPLACE}))
            size += len(text) + 512
        if batch:
            self._history.submit_transaction(batch)

    def load_history(self, instance_id, execution_id):
        q = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        params = {"pk": instance_id, "lo": f"{execution_id}.", "hi": f"{execution_id}/"}
        rows = sorted(self._history.query_entities(q, parameters=params), key=lambda e: e["RowKey"])
        return [json.loads(self._unpack(e, "event") or "null") for e in rows]

    def truncate_history(self, instance_id, execution_id, length):
        q = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        params = {"pk": instance_id, "lo": f"{execution_id}.{length:08d}", "hi": f"{execution_id}/"}
        keys = [e["RowKey"] for e in self._history.query_entities(q, parameters=params, select=["RowKey"])]
        ops = [("delete", {"PartitionKey": instance_id, "RowKey": rk}) for rk in keys]
        for i in range(0, len(ops), 100):
            self._history.submit_transaction(ops[i : i + 100])

    def delete_history(self, instance_id):
        self._delete_partition(self._history, instance_id)

    def _delete_partition(self, table, pk: str) -> None:
        keys = [e["RowKey"] for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                                          select=["RowKey"])]  # fmt: skip
        ops = [("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in keys]
        for i in range(0, len(ops), 100):
            table.submit_transaction(ops[i : i + 100])

    # -- pending messages -----------------------------------------------------------------------------
    def put_pending(self, instance_id, msg_id, ev):
        e = {"PartitionKey": instance_id, "RowKey": msg_id}
        self._pack(e, "event", json.dumps(ev), instance_id)
        self._pending.upsert_entity(e, mode=UpdateMode.REPLACE)

    def delete_pending(self, instance_id, msg_ids):
        ops = [("delete", {"PartitionKey": instance_id, "RowKey": m}) for m in msg_ids]
        for i in range(0, len(ops), 100):
            try:
                self._pending.submit_transaction(ops[i : i + 100])
            except Exception:  # a row already gone (deleted by a previous run): delete one by one
                for _, ent in ops[i : i + 100]:
                    try:
                        self._pending.delete_entity(ent["PartitionKey"], ent["RowKey"])
                    except ResourceNotFoundError:
                        pass

    def load_pending(self, instance_id):
        rows = self._pending.query_entities("PartitionKey eq @pk", parameters={"pk": instance_id})
        return sorted((e["RowKey"], json.loads(self._unpack(e, "event") or "null")) for e in rows)
