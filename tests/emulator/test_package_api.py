"""Package API over HTTPS against a real Azurite: request/response shapes, the status machine, data-driven
outcomes, error APIs with real error files, export round trip, concurrency violation, expiry."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import requests

from local.fno_emulator import EmulatorConfig

from .conftest import Client
from .packages import (
    GROUP_FIELDS,
    csv_unicode,
    customer_groups_package,
    entity_xml,
    header,
    manifest,
    zip_files,
)

GOOD = [["10", "Wholesale", "Net30"], ["20", "Retail", "Net10"], ["30", "Intercompany", ""]]


def finish(client: Client, execution_id: str, seconds: float = 3600) -> str:
    client.emu.admin.advance(seconds)
    return client.status(execution_id)


def test_get_azure_write_url_is_json_in_a_string(client: Client) -> None:
    r = client.action("GetAzureWriteUrl", {"uniqueFileName": "pkg-1.zip"})
    assert r.status_code == 200
    body = r.json()
    assert body["@odata.context"] == f"{client.emu.base_url}/data/$metadata#Edm.String"
    assert isinstance(body["value"], str)
    inner = json.loads(body["value"])
    assert re.fullmatch(r"\{[0-9A-F-]{36}\}", inner["BlobId"])
    assert "/pkg-1.zip?" in inner["BlobUrl"] and "sig=" in inner["BlobUrl"] and "se=" in inner["BlobUrl"]


def test_status_machine_and_successful_import(client: Client) -> None:
    url = client.upload_package(customer_groups_package(GOOD))
    eid = client.import_package(url)
    # Right after the call: "Execution details were not found" (HTTP 400, OData error body).
    r = client.action("GetExecutionSummaryStatus", {"executionId": eid})
    assert r.status_code == 400
    inner = r.json()["error"]["innererror"]["message"]
    assert "Execution details were not found" in inner and eid in inner
    assert r.json()["error"]["message"] == "An error has occurred."
    client.emu.admin.advance(1.1)
    assert client.status(eid) == "NotRun"
    client.emu.admin.advance(2)
    assert client.status(eid) == "Executing"
    assert client.emu.admin.data("USMF", "Customer groups") == []  # rows land at the finish time
    assert finish(client, eid, 10) == "Succeeded"
    rows = client.emu.admin.data("USMF", "Customer groups")
    assert sorted(r["CUSTOMERGROUPID"] for r in rows) == ["10", "20", "30"]
    assert client.emu.admin.data("USRT", "Customer groups") == []  # per legal entity
    assert client.value("GetExecutionErrors", {"executionId": eid}) == "[]"
    listed = client.value("GetEntityExecutionSummaryStatusList", {"executionId": eid})
    assert listed == [{"EntityName": "Customer groups", "ExecutionStatus": "Succeeded", "ExecutionId": eid}]
    page = client.value("GetExecutionSummaryPageUrl", {"executionId": eid})
    assert str(page).startswith(client.emu.base_url) and eid in str(page)


def test_import_duration_follows_rows_and_project_timings(make_emulator) -> None:
    cfg = EmulatorConfig()
    cfg.timings.import_base_seconds = 10
    cfg.timings.import_per_row_seconds = 1
    client = Client(make_emulator(cfg))
    eid = client.import_package(client.upload_package(customer_groups_package(GOOD)))
    client.emu.admin.advance(1 + 2 + 10 + 3 - 0.5)  # not found + NotRun + base + 3 rows, minus a bit
    assert client.status(eid) == "Executing"
    client.emu.admin.advance(0.6)
    assert client.status(eid) == "Succeeded"


def test_bad_rows_give_partially_succeeded_and_real_error_files(client: Client) -> None:
    rows = [
        ["10", "Good", "Net30"],
        ["", "Missing key", "Net30"],  # target: key must be filled in
        ["10", "Duplicate", "Net30"],  # target: duplicate key in the file
        ["40", "x" * 61, ""],  # target: too long
    ]
    # Wrong type needs a typed field: ISSALESTAXINCLUDEDINPRICE is an enum (No/Yes).
    fields = [*GROUP_FIELDS, "ISSALESTAXINCLUDEDINPRICE"]
    data = csv_unicode(fields, [[*r, "Yes"] for r in rows] + [["50", "Bad enum", "", "Maybe"]])
    pkg = zip_files(
        {
            "Customer groups.csv": data,
            "Manifest.xml": manifest(
                "CustomerGroups-Import", [entity_xml("Customer groups", "Customer groups.csv", fields)]
            ),
            "PackageHeader.xml": header(),
        }
    )
    eid = client.import_package(client.upload_package(pkg))
    client.emu.admin.advance(1.1)
    assert client.value("GetExecutionErrors", {"executionId": eid}) == "[]"  # nothing final yet
    assert finish(client, eid) == "PartiallySucceeded"
    assert [r["CUSTOMERGROUPID"] for r in client.emu.admin.data("USMF", "Customer groups")] == ["10"]
    errors = json.loads(str(client.value("GetExecutionErrors", {"executionId": eid})))
    assert {e["RecordId"] for e in errors} == {"2", "3", "4", "5"}
    assert all(set(e) == {"RecordId", "Field", "ErrorMessage"} for e in errors)
    by_id = {e["RecordId"]: e for e in errors}
    assert "must be filled in" in by_id["2"]["ErrorMessage"]
    assert "already exists" in by_id["3"]["ErrorMessage"]
    assert "longer than 60" in by_id["4"]["ErrorMessage"]
    assert by_id["5"]["Field"] == "ISSALESTAXINCLUDEDINPRICE"

    # Staging error file: a real blob with the row that failed conversion.
    url = str(
        client.value("GetImportStagingErrorFileUrl", {"executionId": eid, "entityName": "Customer groups"})
    )
    assert "sig=" in url
    content = requests.get(url, timeout=10).content.decode("utf-16")
    staged = list(csv.DictReader(io.StringIO(content)))
    assert [r["CUSTOMERGROUPID"] for r in staged] == ["50"] and staged[0]["RECORDID"] == "5"

    # Target error keys: Generate says true, the URL is empty for a while, then a real CSV of keys.
    body = {"executionId": eid, "entityName": "CustCustomerGroupEntity"}  # target entity name works too
    assert client.value("GetImportTargetErrorKeysFileUrl", body) == ""  # not generated yet
    r = client.action("GenerateImportTargetErrorKeysFile", body)
    assert r.json() == {"@odata.context": f"{client.emu.base_url}/data/$metadata#Edm.Boolean", "value": True}
    assert client.value("GetImportTargetErrorKeysFileUrl", body) == ""
    client.emu.admin.advance(2.5)
    keys_url = str(client.value("GetImportTargetErrorKeysFileUrl", body))
    keys = list(csv.DictReader(io.StringIO(requests.get(keys_url, timeout=10).content.decode("utf-16"))))
    assert sorted(k["RECORDID"] for k in keys) == ["2", "3", "4"]
    assert {k["CUSTOMERGROUPID"] for k in keys} == {"", "10", "40"}


def test_all_rows_bad_fails(client: Client) -> None:
    eid = client.import_package(client.upload_package(customer_groups_package([["", "no key", ""]])))
    assert finish(client, eid) == "Failed"
    assert client.value(
        "GenerateImportTargetErrorKeysFile", {"executionId": eid, "entityName": "Customer groups"}
    )


def test_wrong_type_in_decimal_field(client: Client) -> None:
    fields = ["CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "CREDITLIMIT", "CUSTOMERSINCEDATE"]
    rows = [["C1", "Contoso", "10", "1000.50", "2024-01-31"], ["C2", "Fabrikam", "10", "lots", "2024-01-31"],
            ["C3", "Litware", "10", "5", "31/01/2024"]]  # fmt: skip
    pkg = zip_files(
        {
            "Customers V3.csv": csv_unicode(fields, rows),
            "Manifest.xml": manifest(
                "Customers-Import", [entity_xml("Customers V3", "Customers V3.csv", fields)]
            ),
            "PackageHeader.xml": header(),
        }
    )
    eid = client.import_package(client.upload_package(pkg), project="Customers-Import")
    assert finish(client, eid) == "PartiallySucceeded"
    stored = client.emu.admin.data("USMF", "Customers V3")
    assert len(stored) == 1
    given = {k: v for k, v in stored[0].items() if v}
    assert given == {"CUSTOMERACCOUNT": "C1", "ORGANIZATIONNAME": "Contoso", "CUSTOMERGROUPID": "10",
                     "CREDITLIMIT": "1000.5", "CUSTOMERSINCEDATE": "2024-01-31"}  # fmt: skip
    assert stored[0]["PARTYTYPE"] == ""  # every column exists, unset ones empty
    errors = json.loads(str(client.value("GetExecutionErrors", {"executionId": eid})))
    assert {(e["RecordId"], e["Field"]) for e in errors} == {("2", "CREDITLIMIT"), ("3", "CUSTOMERSINCEDATE")}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (",".join(GROUP_FIELDS).encode("utf-8") + b"\r\n10,a,b\r\n", "not Unicode"),
        (
            b"\xff\xfe" + "CUSTOMERGROUPID,DESCRIPTION,PAYMENTTERMID\n10,a,b\n".encode("utf-16-le"),
            "mapping is incorrect",
        ),
        (b"\xff\xfe" + "CUSTOMERGROUPID,DESCRIPTION\r\n10,a\r\n".encode("utf-16-le"), "mapping is incorrect"),
    ],
    ids=["not-utf16", "lf-only", "mapped-column-missing"],
)
def test_data_file_problems_fail_the_execution(client: Client, data: bytes, message: str) -> None:
    eid = client.import_package(client.upload_package(customer_groups_package([], data=data)))
    assert finish(client, eid) == "Failed"
    errors = json.loads(str(client.value("GetExecutionErrors", {"executionId": eid})))
    assert any(message in e["ErrorMessage"] for e in errors), errors


def test_manifest_without_entity_map_list_imports_nothing(client: Client) -> None:
    pkg = zip_files(
        {
            "g.csv": csv_unicode(GROUP_FIELDS, GOOD),
            "Manifest.xml": manifest(
                "P", [entity_xml("Customer groups", "g.csv", GROUP_FIELDS, map_list=False)]
            ),
            "PackageHeader.xml": header(),
        }
    )
    eid = client.import_package(client.upload_package(pkg))
    assert finish(client, eid) == "Succeeded"
    assert client.emu.admin.data("USMF", "Customer groups") == []


def _odata_400(r: requests.Response) -> str:
    assert r.status_code == 400, r.text
    return r.json()["error"]["innererror"]["message"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (None, "End of Central Directory"),
        ({"g.csv": b"x", "Manifest.xml": b"x"}, "PackageHeader.xml"),
        ({"folder/Manifest.xml": b"", "folder/PackageHeader.xml": b""}, "Could not find file"),
        (
            {
                "g.csv": b"",
                "Manifest.xml": manifest("P", [entity_xml("Customer grups", "g.csv", GROUP_FIELDS)]),
                "PackageHeader.xml": header(),
            },
            "Entity Customer grups does not exist in the target environment",
        ),
        (
            {
                "g.csv": b"",
                "Manifest.xml": manifest("P", [entity_xml("CustCustomerGroupEntity", "g.csv", GROUP_FIELDS)]),
                "PackageHeader.xml": header(),
            },
            "Entity CustCustomerGroupEntity does not exist",  # manifests carry labels, not AOT names
        ),
        (
            {"Manifest.xml": b"<DataManagementPackageManifest/>", "PackageHeader.xml": header()},
            "Expecting element 'DataManagementPackageManifest' from namespace",
        ),
    ],
    ids=["not-a-zip", "no-header", "files-in-a-folder", "unknown-entity", "aot-name", "wrong-namespace"],
)
def test_unreadable_packages_fail_the_call_with_400(client: Client, files, message: str) -> None:
    data = b"this is not a zip" if files is None else zip_files(files)
    url = client.upload_package(data)
    body = {"packageUrl": url, "definitionGroupId": "P", "executionId": "", "execute": True,
            "overwrite": True, "legalEntityId": "USMF"}  # fmt: skip
    assert message in _odata_400(client.action("ImportFromPackage", body))
    assert client.emu.admin.violations == 0  # a rejected call does not hold the import slot
    eid = client.import_package(client.upload_package(customer_groups_package(GOOD)))
    assert eid


def test_expired_sas_url_and_missing_blob(client: Client) -> None:
    url = client.upload_package(customer_groups_package(GOOD))
    client.emu.admin.advance(36 * 60)  # SAS handed out for ~35 minutes
    body = {"packageUrl": url, "definitionGroupId": "P", "executionId": "", "execute": True,
            "overwrite": True, "legalEntityId": "USMF"}  # fmt: skip
    assert "(403) Forbidden" in _odata_400(client.action("ImportFromPackage", body))
    fresh = json.loads(str(client.value("GetAzureWriteUrl", {"uniqueFileName": "nothing-here.zip"})))[
        "BlobUrl"
    ]
    body["packageUrl"] = fresh
    assert "(404)" in _odata_400(client.action("ImportFromPackage", body))  # never uploaded


def test_parallel_import_fails_and_counts_a_violation(client: Client) -> None:
    url = client.upload_package(customer_groups_package(GOOD))
    first = client.import_package(url)
    r = client.action(
        "ImportFromPackage",
        {"packageUrl": url, "definitionGroupId": "CustomerGroups-Import", "executionId": "second",
         "execute": True, "overwrite": True, "legalEntityId": "USRT"},
    )  # fmt: skip
    assert r.status_code == 500
    assert "parallel" in r.json()["error"]["innererror"]["message"]
    assert client.emu.admin.violations == 1
    assert client.emu.admin.violation_details()[0]["running"] == [first]
    assert finish(client, first) == "Succeeded"
    # After the first finished: fine (with a fresh upload: the first SAS URL has expired meanwhile).
    second = client.import_package(client.upload_package(customer_groups_package(GOOD)), le="USRT")
    assert finish(client, second) == "Succeeded"
    assert client.emu.admin.peak_concurrent_imports == 1


def test_parallel_imports_allowed_when_configured(make_emulator) -> None:
    client = Client(make_emulator(EmulatorConfig(parallel_imports=2)))
    url = client.upload_package(customer_groups_package(GOOD))
    a = client.import_package(url)
    b = client.import_package(url, le="DEMF")
    assert client.action("ImportFromPackage", {"packageUrl": url, "definitionGroupId": "X",
                         "legalEntityId": "USRT"}).status_code == 500  # fmt: skip
    assert client.emu.admin.peak_concurrent_imports == 2
    assert client.emu.admin.peak_concurrent_executions == 2
    assert (finish(client, a), client.status(b)) == ("Succeeded", "Succeeded")


def test_duplicate_execution_id_and_request_validation(client: Client) -> None:
    url = client.upload_package(customer_groups_package(GOOD))
    eid = client.import_package(url, executionId="job-1")
    assert eid == "job-1"
    finish(client, eid)
    assert "already exists" in _odata_400(client.action("ImportFromPackage", {
        "packageUrl": url, "definitionGroupId": "P", "executionId": "job-1", "legalEntityId": "USMF"}))  # fmt: skip
    assert "'packageUrl' is missing" in _odata_400(
        client.action("ImportFromPackage", {"legalEntityId": "USMF"})
    )
    assert "Company 'XXXX'" in _odata_400(client.action("ImportFromPackage", {
        "packageUrl": url, "definitionGroupId": "P", "legalEntityId": "XXXX"}))  # fmt: skip
    assert client.action("NoSuchAction", {}).status_code == 404
    assert client.value("InitializeDataManagement") is True


def test_export_round_trip(client: Client) -> None:
    eid = client.import_package(client.upload_package(customer_groups_package(GOOD)))
    assert finish(client, eid) == "Succeeded"
    body = {"definitionGroupId": "CustomerGroups-Export", "packageName": "groups", "executionId": "exp-1",
            "reExecute": False, "legalEntityId": "USMF"}  # fmt: skip
    assert client.value("ExportToPackage", body) == "exp-1"
    client.emu.admin.advance(1.5)
    assert client.value("GetExportedPackageUrl", {"executionId": "exp-1"}) == ""
    assert client.status("exp-1") == "NotRun"
    assert finish(client, "exp-1") == "Succeeded"
    url = str(client.value("GetExportedPackageUrl", {"executionId": "exp-1"}))
    pkg = requests.get(url, timeout=10).content  # no Authorization header, as clients do
    with zipfile.ZipFile(io.BytesIO(pkg)) as zf:
        names = set(zf.namelist())
        assert {"Manifest.xml", "PackageHeader.xml", "Customer groups.csv"} <= names
        assert zf.read("Manifest.xml")[:2] == b"\xff\xfe"
        text = zf.read("Customer groups.csv").decode("utf-16")
        assert "\r\n" in text
    exported = {r["CUSTOMERGROUPID"]: r["DESCRIPTION"] for r in csv.DictReader(io.StringIO(text))}
    assert exported == {"10": "Wholesale", "20": "Retail", "30": "Intercompany"}

    # ... and the exported package imports again, into another company.
    again = client.import_package(client.upload_package(pkg), le="DEMF")
    assert finish(client, again) == "Succeeded"
    assert sorted(
        client.emu.admin.data("DEMF", "Customer groups"), key=lambda r: r["CUSTOMERGROUPID"]
    ) == sorted(client.emu.admin.data("USMF", "Customer groups"), key=lambda r: r["CUSTOMERGROUPID"])


def test_export_of_unknown_project_and_retention(client: Client) -> None:
    body = {"definitionGroupId": "Nope", "packageName": "x", "executionId": "", "legalEntityId": "USMF"}
    assert "was not found" in _odata_400(client.action("ExportToPackage", body))
    client.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "A", "DESCRIPTION": "a"}])
    body["definitionGroupId"] = "CustomerGroups-Export"
    eid = str(client.value("ExportToPackageAsync", body))
    assert finish(client, eid) == "Succeeded"
    url = str(client.value("GetExportedPackageUrl", {"executionId": eid}))
    assert requests.get(url, timeout=10).status_code == 200
    client.emu.admin.advance(7 * 24 * 3600 + 1)  # files are deleted after seven days ...
    assert requests.get(url, timeout=10).status_code == 200  # ... lazily, on the emulator's next call
    client.status(eid)
    assert requests.get(url, timeout=10).status_code == 404


def test_export_preview_limits_rows(client: Client) -> None:
    client.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": str(i)} for i in range(5)])
    body = {"definitionGroupId": "CustomerGroups-Export", "packageName": "p", "executionId": "pv",
            "legalEntityId": "USMF", "count": 2}  # fmt: skip
    client.value("ExportToPackagePreview", body)
    finish(client, "pv")
    pkg = requests.get(str(client.value("GetExportedPackageUrl", {"executionId": "pv"})), timeout=10).content
    with zipfile.ZipFile(io.BytesIO(pkg)) as zf:
        assert len(zf.read("Customer groups.csv").decode("utf-16").strip().splitlines()) == 3


def test_virtual_clock_drives_everything(make_emulator) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    cfg = EmulatorConfig()
    cfg.timings.import_base_seconds = 3 * 3600  # a three-hour import
    client = Client(make_emulator(cfg, clock=lambda: now[0]))
    eid = client.import_package(client.upload_package(customer_groups_package(GOOD)))
    now[0] += timedelta(hours=1)
    assert client.status(eid) == "Executing"
    now[0] += timedelta(hours=3)
    assert client.status(eid) == "Succeeded"
    assert len(client.emu.admin.data("USMF", "Customer groups")) == 3
    assert client.emu.admin.calls("GetExecutionSummaryStatus")[-1]["at"].startswith("2026-01-01T04:00")


def test_execution_unit_level_sequence_order(client: Client) -> None:
    """Entities run by unit / level / sequence: a later level overwrites what an earlier one wrote."""
    pkg = zip_files(
        {
            "a.csv": csv_unicode(GROUP_FIELDS, [["10", "from level 2", ""]]),
            "b.csv": csv_unicode(GROUP_FIELDS, [["10", "from level 1", ""]]),
            "Manifest.xml": manifest(
                "P",
                [
                    entity_xml("Customer groups", "a.csv", GROUP_FIELDS, level=2),
                    entity_xml("Customer groups", "b.csv", GROUP_FIELDS, level=1),
                ],
            ),
            "PackageHeader.xml": header(),
        }
    )
    eid = client.import_package(client.upload_package(pkg))
    assert finish(client, eid) == "Succeeded"
    assert client.emu.admin.data("USMF", "Customer groups")[0]["DESCRIPTION"] == "from level 2"


def test_composite_entity_rules_and_import(client: Client) -> None:
    xml = (
        b'<?xml version="1.0" encoding="utf-8"?>\r\n<Document>\r\n'
        b"<SALESORDERHEADERV2ENTITY><SALESORDERNUMBER>SO-1</SALESORDERNUMBER>"
        b"<ORDERINGCUSTOMERACCOUNTNUMBER>C1</ORDERINGCUSTOMERACCOUNTNUMBER>"
        b"<SALESORDERLINEV2ENTITY><SALESORDERNUMBER>SO-1</SALESORDERNUMBER><LINENUMBER>1</LINENUMBER>"
        b"<ITEMNUMBER>A100</ITEMNUMBER></SALESORDERLINEV2ENTITY>"
        b"<SALESORDERLINEV2ENTITY><SALESORDERNUMBER>SO-1</SALESORDERNUMBER><LINENUMBER>2</LINENUMBER>"
        b"<ITEMNUMBER></ITEMNUMBER></SALESORDERLINEV2ENTITY>"
        b"</SALESORDERHEADERV2ENTITY>\r\n</Document>"
    )
    files = {
        "so.xml": xml,
        "Manifest.xml": manifest("SalesOrders-Import",
                                 [entity_xml("Sales orders composite V3", "so.xml", [], "XML-Element")]),
        "PackageHeader.xml": header(),
    }  # fmt: skip
    url = client.upload_package(zip_files(files))
    body = {"packageUrl": url, "definitionGroupId": "SalesOrders-Import", "executionId": "", "execute": True,
            "overwrite": True, "legalEntityId": "USMF"}  # fmt: skip
    assert "Overwrite must be false" in _odata_400(client.action("ImportFromPackage", body))
    body["definitionGroupId"] = "NoSuchProject"
    body["overwrite"] = False
    assert "must exist" in _odata_400(client.action("ImportFromPackage", body))
    eid = client.import_package(url, project="SalesOrders-Import", overwrite=False)
    assert finish(client, eid) == "PartiallySucceeded"  # line 2 has no item number
    assert [r["SALESORDERNUMBER"] for r in client.emu.admin.data("USMF", "Sales order headers V2")] == [
        "SO-1"
    ]
    assert [r["LINENUMBER"] for r in client.emu.admin.data("USMF", "Sales order lines V2")] == ["1"]
