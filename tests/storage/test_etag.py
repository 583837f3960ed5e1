"""The one optimistic-concurrency loop (dmf/storage/etag.py) against a real Azurite."""

from __future__ import annotations

import threading

import pytest
from azure.data.tables import TableServiceClient

from dmf.storage.etag import ContentionError, Write, update_row


@pytest.fixture
def table(storage_conn: str, unique_name: str):
    svc = TableServiceClient.from_connection_string(storage_conn)
    yield svc.create_table(unique_name)
    svc.delete_table(unique_name)


def _add_one(row):
    n = int((row or {}).get("N", 0)) + 1
    return Write({"N": n}, n)


def test_concurrent_read_modify_writes_lose_no_update(table) -> None:
    seen: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                seen.append(update_row(table, "p", "counter", _add_one, what="counting", attempts=200))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert table.get_entity("p", "counter")["N"] == 30  # the first write created the row; none was lost
    assert sorted(seen) == list(range(1, 31))  # each write answered the value it wrote, once


def test_deciding_to_write_nothing_answers_the_decision_and_writes_nothing(table) -> None:
    assert update_row(table, "p", "missing", lambda row: "left alone", what="looking") == "left alone"
    assert list(table.list_entities()) == []


def test_a_row_that_keeps_changing_gives_up_with_contention(table) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "busy", "N": 0})

    def meddle(row):
        # Someone else writes between our read and our write, every time.
        table.update_entity({"PartitionKey": "p", "RowKey": "busy", "N": int(row["N"]) + 100})
        return Write({"N": -1})

    with pytest.raises(ContentionError, match="too much contention meddling"):
        update_row(table, "p", "busy", meddle, what="meddling", attempts=3)
    assert table.get_entity("p", "busy")["N"] == 300  # ours never landed over a version we did not read
