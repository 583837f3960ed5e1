"""The payloads' one wire form (``dmf/pipeline/payloads.py``): plain JSON dicts, old shapes kept.

Every activity input the orchestrators send is compared key by key in the orchestrator tests; these pin the
rules those rely on: unknown keys ignored, absent keys kept absent, missing ones read as None.
"""

from __future__ import annotations

import json

import pytest

from dmf.pipeline import payloads
from dmf.pipeline.payloads import ABSENT, DrainBatch, Drop, FinalizeDrop, PackageImport, StartImport, to_wire

PKG = {
    "drop_id": "drop-1",
    "day": "20261129",
    "seq": 2,
    "staged": "staging/drop-1/002-01.zip",
    "entities": ["CustGroup"],
    "rows": 10,
    "source": "inbound/a.zip",
    "route": {"environment": "main"},
}


def test_a_wire_dict_round_trips_and_is_json() -> None:
    start = StartImport.from_wire(PKG | {"instance_id": "i", "execution_id": "e", "now": "t"})
    wire = to_wire(start)
    assert wire == PKG | {"instance_id": "i", "execution_id": "e", "allow_recall": False, "now": "t"}
    assert json.loads(json.dumps(wire)) == wire
    assert StartImport.from_wire(wire) == start


def test_unknown_keys_from_another_version_are_ignored() -> None:
    assert PackageImport.from_wire(PKG | {"added_later": 1}) == PackageImport.from_wire(PKG)


def test_a_missing_required_key_is_an_error_naming_it() -> None:
    with pytest.raises(TypeError, match="staged"):
        PackageImport.from_wire({k: v for k, v in PKG.items() if k != "staged"})


def test_absent_keys_stay_absent_on_the_wire_and_read_as_none() -> None:
    drop = Drop.from_wire({"container": "inbound", "name": "a.csv", "day": "20261129", "etag": "0x1"})
    assert drop.size is ABSENT and "size" not in to_wire(drop)  # passed on, the wire keeps its shape
    read = Drop.of(to_wire(drop))
    assert read.size is None and read.received_at is None and read.instance_id is None
    # set (None included), a field is on the wire
    final = FinalizeDrop(instance_id="d", day="20261129", source="s", duplicate_of=None)
    assert to_wire(final) == {
        "instance_id": "d",
        "day": "20261129",
        "source": "s",
        "etag": None,
        "duplicate_of": None,
    }


def test_of_takes_a_payload_or_its_wire_dict() -> None:
    pkg = PackageImport.from_wire(PKG)
    assert PackageImport.of(pkg) is pkg
    assert PackageImport.of(PKG) == pkg


def test_drain_batch_leaves_an_unset_worker_count_off_the_wire() -> None:
    batch = DrainBatch(export={"name": "x"}, run_id="r", day="d", max_messages=3, max_seconds=9.0)
    wire = batch.to_wire()
    assert wire["run_id"] == "r" and wire.get("workers") is None
    assert DrainBatch.of(wire) == batch


def test_every_payload_is_frozen() -> None:
    models = [m for m in vars(payloads).values() if isinstance(m, type) and issubclass(m, payloads.Payload)]
    assert len(models) > 20
    for model in models:
        assert model.__dataclass_params__.frozen, model  # type: ignore[attr-defined]
