"""Table Storage persistence: large values are split or moved to blobs and read back intact."""

from __future__ import annotations

import json

from local.functions_runner.store import MAX_INLINE, MemoryStore, TableStore


def _instance(iid: str, output: str) -> dict:
    return {
        "instance_id": iid, "name": "n", "execution_id": "e1", "status": "Completed", "input": '"x"',
        "output": output, "custom_status": None, "created": "2026-01-01T00:00:00.000000Z",
        "updated": "2026-01-01T00:00:00.000000Z", "parent_id": None, "parent_seq": None, "engine_state": "{}",
    }  # fmt: skip


def test_table_store_round_trips_large_values(azurite, unique_name) -> None:
    store = TableStore(azurite.connection_string, unique_name)
    medium = json.dumps("m" * 100_000)  # several Table properties
    huge = json.dumps("h" * (MAX_INLINE + 10))  # more than one entity can hold: a blob
    store.put_instance(_instance("a", medium))
    store.put_instance(_instance("b", huge))
    assert store.get_instance("a")["output"] == medium
    assert store.get_instance("b")["output"] == huge
    events = [{"EventType": 5, "EventId": -1, "Result": "r" * 70_000, "i": i} for i in range(150)]
    store.append_history("a", "e1", 0, events)
    assert store.load_history("a", "e1") == events
    assert store.load_history("a", "other") == []
    store.put_pending("a", "001", {"event": {"EventType": 15}, "special": None})
    assert store.load_pending("a") == [("001", {"event": {"EventType": 15}, "special": None})]
    store.delete_pending("a", ["001", "missing"])
    assert store.load_pending("a") == []
    assert {i["instance_id"] for i in store.query_instances(statuses=["Completed"], prefix="a")} == {"a"}
    assert (
        store.delete_instance("a") and store.load_history("a", "e1") == [] and store.get_instance("a") is None
    )


def test_memory_store_isolates_callers_from_stored_values() -> None:
    store = MemoryStore()
    events = [{"EventType": 12, "EventId": -1}]
    store.append_history("i", "e", 0, events)
    events[0]["EventId"] = 99
    assert store.load_history("i", "e")[0]["EventId"] == -1


def test_instance_queries_filter_in_the_table_and_leave_payloads_unread(azurite, unique_name) -> None:
    """A purge over a large task hub asks for ids and statuses only: no payload is read, least of all a
    blob-held one; and a status from a query string is a parameter, never part of the filter text."""
    from datetime import UTC, datetime

    store = TableStore(azurite.connection_string, unique_name)
    huge = json.dumps("h" * (MAX_INLINE + 10))
    store.put_instance(_instance("done", huge))
    store.put_instance({**_instance("late", '"y"'), "created": "2026-03-01T00:00:00.000000Z"})
    store.put_instance({**_instance("busy", '"z"'), "status": "Running"})
    for blob in store._large.list_blobs():  # only the huge output lives there: a payload read would fail
        store._large.delete_blob(blob.name)
    brief = store.query_instances(statuses=["Completed"], payloads=False)
    assert {r["instance_id"]: r["status"] for r in brief} == {"done": "Completed", "late": "Completed"}
    assert all("output" not in r and "input" not in r for r in brief)
    before_march = store.query_instances(created_to=datetime(2026, 2, 1, tzinfo=UTC), statuses=["Running"])
    assert [(r["instance_id"], r["input"]) for r in before_march] == [("busy", '"x"')]
    assert store.query_instances(statuses=["Completed' or status eq 'Running"]) == []
