"""The fault matrix's enqueue counter: an ambiguous enqueue, reported and not repeated, is not a lost drop."""

from __future__ import annotations

import pytest

from local.reliability import World, count


def _enqueue_counts(reason: str, status: str = "Failed") -> dict[str, int]:
    world = World(enqueues=["xslt/USMF/e1.csv"], enqueue_ids=["E1"], export=False)
    rows = [{"Kind": "drop", "RowKey": "d1", "SourceBlob": "in/xslt/USMF/e1.csv", "Status": status,
             "Reason": reason}]  # fmt: skip
    return count(
        rows=rows, executions=[], data_ids=set(), outbound={}, inbound_messages=[], archives=[], violations=0,
        peak_imports=0, world=world, flows=("enqueue",),
    )["enqueue"]  # fmt: skip


@pytest.mark.parametrize(
    "reason",
    [
        "package 1 Failed: enqueue outcome unknown, not repeated: 503",
        "package 1 Failed: an earlier enqueue attempt ended without an answer; not sent again to avoid a second "
        "message (look for external identifier 'xslt/USMF/e1.csv' in F&O's message list)",
    ],
)
def test_an_ambiguous_enqueue_is_reported_not_lost(reason: str) -> None:
    assert _enqueue_counts(reason) == {"lost": 0, "double": 0, "ambiguous (reported)": 1}


def test_any_other_failure_is_lost() -> None:
    assert _enqueue_counts("package 1 Failed: 400 Bad Request")["lost"] == 1
    assert _enqueue_counts("", status="Succeeded")["lost"] == 1  # Succeeded, yet its data never reached F&O
