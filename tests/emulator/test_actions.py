"""The remaining Package API actions: their request names and response shapes."""

from __future__ import annotations

from local.fno_emulator import EmulatorConfig

from .conftest import Client
from .packages import customer_groups_package, entity_xml, header, manifest, zip_files

ROWS = [["10", "a", ""], ["20", "b", ""]]


def test_async_import_and_staging_only(client: Client) -> None:
    url = client.upload_package(customer_groups_package(ROWS))
    body = {"packageUrl": url, "definitionGroupId": "CustomerGroups-Import", "executionId": "async-1",
            "execute": False, "overwrite": True, "legalEntityId": "USMF"}  # fmt: skip
    assert client.value("ImportFromPackageAsync", body) == "async-1"
    client.emu.admin.advance(3600)
    assert client.status("async-1") == "Succeeded"
    assert client.emu.admin.data("USMF", "Customer groups") == []  # execute=false: staging only


def test_plain_csv_format_in_utf8(client: Client) -> None:
    fields = ["CUSTOMERGROUPID", "DESCRIPTION"]
    data = "CUSTOMERGROUPID,DESCRIPTION\r\n10,Caf\u00e9\r\n".encode()
    pkg = zip_files(
        {
            "g.csv": data,
            "Manifest.xml": manifest(
                "P", [entity_xml("Customer groups", "g.csv", fields, source_format="CSV")]
            ),
            "PackageHeader.xml": header(),
        }
    )
    eid = client.import_package(client.upload_package(pkg))
    client.emu.admin.advance(3600)
    assert client.status(eid) == "Succeeded"
    assert client.emu.admin.data("USMF", "Customer groups")[0]["DESCRIPTION"] == "Caf\u00e9"


def test_export_variants_and_misc_actions(client: Client) -> None:
    client.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "10"}])
    for action in ("ExportFromPackage", "ExportToPackageDelta"):
        body = {"definitionGroupId": "CustomerGroups-Export", "packageName": "p", "executionId": action,
                "legalEntityId": "USMF"}  # fmt: skip
        assert client.value(action, body) == action
    client.emu.admin.advance(3600)
    assert client.status("ExportFromPackage") == "Succeeded"
    seq = client.value("GetEntitySequence", {"listOfDataEntities": "Customer groups,Customers V3"})
    assert seq == "Customer groups:1:1:1,Customers V3:1:1:2"
    r = client.action("ResetVersionToken", {"definitionGroupId": "CustomerGroups-Export", "entityName": "x",
                                            "sourceName": "y"})  # fmt: skip
    assert r.json()["@odata.context"].endswith("#Edm.Boolean")
    assert client.value("DeleteExecutionHistoryJob", {"executionId": "ExportFromPackage"}) is True
    assert client.action("GetExecutionSummaryStatus", {"executionId": "ExportFromPackage"}).status_code == 400
    assert client.value("InitializeDataManagementAsync") is True


def test_documented_nested_value_quirk(make_emulator) -> None:
    client = Client(make_emulator(EmulatorConfig(nested_value_quirk=True)))
    body = {"definitionGroupId": "CustomerGroups-Export", "packageName": "p", "executionId": "n",
            "legalEntityId": "USMF"}  # fmt: skip
    assert client.value("ExportToPackage", body) == {"value": "n"}
    client.emu.admin.advance(3600)
    url = client.value("GetExportedPackageUrl", {"executionId": "n"})
    assert isinstance(url, dict) and url["value"].startswith("http")


def test_canceled_and_unknown_statuses(client: Client) -> None:
    eid = client.import_package(client.upload_package(customer_groups_package(ROWS)))
    client.emu.admin.advance(4)
    assert client.status(eid) == "Executing"
    client.emu.admin.cancel_execution(eid)
    assert client.status(eid) == "Canceled"
    client.emu.admin.advance(3600)
    assert client.status(eid) == "Canceled"
    assert client.emu.admin.data("USMF", "Customer groups") == []  # a canceled import writes nothing
    second = client.import_package(client.upload_package(customer_groups_package(ROWS)))  # slot is free
    client.emu.admin.override_status(second, "Unknown")
    client.emu.admin.advance(3600)
    assert client.status(second) == "Unknown"
    assert len(client.emu.admin.data("USMF", "Customer groups")) == 2  # rows written all the same
