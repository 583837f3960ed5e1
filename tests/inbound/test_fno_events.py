"""The business event's pure side: execution id → orchestration instance, delivery shapes, what is ignored."""

from __future__ import annotations

import json

import pytest

from dmf.pipeline import fno_events as fe
from dmf.pipeline.ids import (
    drop_instance_id,
    execution_id,
    package_instance_from_execution,
    package_instance_id,
)

DROP = drop_instance_id("inbound", "USMF/CustomerGroups-Import/a.csv", "0x8DC")


@pytest.mark.parametrize(
    "project", ["CustomerGroups-Import", "Customers V3 – import", "x" * 80, "'''", "Asset-Major-Types"]
)
@pytest.mark.parametrize("drop", [DROP, f"{DROP}-r01", f"{DROP}-r01-r02"])
@pytest.mark.parametrize("seq", [1, 42, 1234])
def test_instance_is_derived_from_our_execution_id(project: str, drop: str, seq: int) -> None:
    instance = package_instance_id(drop, seq)
    assert package_instance_from_execution(execution_id(project, instance)) == instance


@pytest.mark.parametrize(
    "exec_id",
    [
        "",
        "CustomerGroups-Import-2026-11-25_08-00-00-5f1b7d4e-0000-4000-8000-000000000001",
        "00000000-0000-0000-0000-000000000000",
        f"{DROP}-p001",  # no project in front: not an id we build
        f"X-{DROP}-p001-extra",
        "X-drop-0123-p001",
    ],
)
def test_other_execution_ids_map_to_nothing(exec_id: str) -> None:
    assert package_instance_from_execution(exec_id) is None


def contract(**kw: object) -> dict:
    return {
        "BusinessEventId": "DMFImportStatusBusinessEvent",
        "EventId": "E1",
        "ExecutionId": execution_id("CustomerGroups-Import", package_instance_id(DROP, 1)),
        "EntityName": "Customer groups",
        "OperationType": "Import",
        "Status": "Succeeded",
    } | kw


def test_flat_contract_and_event_grid_shapes() -> None:
    c = contract()
    assert fe.contracts(c) == [c]
    assert fe.contracts([c, c]) == [c, c]
    grid = {"id": "1", "eventType": "DMFImportStatusBusinessEvent", "dataVersion": "1", "data": c}
    assert fe.contracts([grid]) == [c]
    assert fe.contracts([grid | {"data": json.dumps(c)}]) == [c]
    for bad in ([1], "x", [grid | {"data": "not json"}], [grid | {"data": [1]}]):
        with pytest.raises(fe.BadDelivery):
            fe.contracts(bad)


def test_validation_handshake() -> None:
    v = [{"eventType": fe.VALIDATION_EVENT, "data": {"validationCode": "abc"}}]
    assert fe.validation_code(v, "SubscriptionValidation") == "abc"
    assert fe.validation_code(v, None) == "abc"
    assert fe.validation_code(contract(), "Notification") is None
    with pytest.raises(fe.BadDelivery):
        fe.validation_code([{"eventType": fe.VALIDATION_EVENT, "data": {}}], "SubscriptionValidation")


def test_what_a_contract_means() -> None:
    ours = fe.notice(contract())
    assert ours.ignored is None and ours.instance_id == package_instance_id(DROP, 1)
    assert ours.payload() == {
        "execution_id": contract()["ExecutionId"],
        "event_id": "E1",
        "entity": "Customer groups",
        "status": "Succeeded",
    }
    assert (
        fe.notice(contract(BusinessEventId="CustFreeTextInvoicePostedBusinessEvent")).ignored == "other-event"
    )
    assert fe.notice(contract(OperationType="Export")).ignored == "not-import"
    assert fe.notice(contract(Status="Executing")).ignored == "pending"
    assert fe.notice(contract(ExecutionId="Other-2026-x")).ignored == "unknown"
    assert fe.notice({}).ignored == "other-event"  # e.g. F&O's test message on activation
