"""Packages and manifests F&O itself wrote (read from ../shared/samples beside the checkout, skipped when absent)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from local.fno_emulator.package_reader import open_package, parse_header, parse_manifest

from .conftest import Client

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"  # ../shared beside the checkout
EXCEL_ZIP = SAMPLES / "fixed-asset-major-types-excel.zip"
CUSTOMER_DEFS = SAMPLES / "customer-definitions-manifest"
SKIP = f"shared samples not present: expected in ../shared/samples beside the checkout ({SAMPLES})"

needs_samples = pytest.mark.skipif(not EXCEL_ZIP.exists(), reason=SKIP)


@needs_samples
def test_pu5_excel_package_manifest_parses() -> None:
    pkg = open_package(EXCEL_ZIP.read_bytes())
    assert pkg.header.package_version == "1"
    assert pkg.header.package_type == "DefinitionGroup"
    assert pkg.manifest.definition_group == "Asset-Major-Types"
    (entity,) = pkg.manifest.entities
    assert entity.entity_name == "Fixed asset major type"
    assert entity.input_file_path == "Fixed asset major type.xlsx"
    assert entity.source_format == "EXCEL"
    assert entity.order == (1, 1, 1)
    assert [(m.xml_field, m.entity_field) for m in entity.maps] == [
        ("DESCRIPTION", "DESCRIPTION"),
        ("MAJORTYPEID", "MAJORTYPEID"),
    ]
    assert entity.target_entity is None  # the PU5-era manifest has no TargetEntity


@pytest.mark.skipif(not CUSTOMER_DEFS.exists(), reason=SKIP)
def test_current_customer_definitions_manifest_parses() -> None:
    manifest = parse_manifest((CUSTOMER_DEFS / "Manifest.xml").read_bytes())
    header = parse_header((CUSTOMER_DEFS / "PackageHeader.xml").read_bytes())
    assert header.package_version == "2"
    assert manifest.definition_group == "IFG_CUSTCUSTOMERBASEENTITY"
    (entity,) = manifest.entities
    assert entity.entity_name == "Customer definitions"
    assert entity.target_entity == "CustCustomerBaseEntity"
    assert entity.source_format == "XML-Attribute"
    assert entity.input_file_path == "CUSTCUSTOMERBASEENTITY.xml"
    assert len(entity.maps) > 50 and entity.maps[0].entity_field == "ADDRESSBOOKS"


@needs_samples
def test_excel_sample_package_imports(client: Client) -> None:
    url = client.upload_package(EXCEL_ZIP.read_bytes())
    eid = client.import_package(url, project="Asset-Major-Types")
    client.emu.admin.advance(3600)
    assert client.status(eid) == "Succeeded"
    rows = {
        r["MAJORTYPEID"]: r["DESCRIPTION"] for r in client.emu.admin.data("USMF", "Fixed asset major type")
    }
    assert len(rows) == 11
    assert rows["COMP"] == "Computer hardware" and rows["VEHICLES"] == "Vehicles"


@needs_samples
def test_excel_sample_with_a_broken_workbook_fails(client: Client) -> None:
    src = zipfile.ZipFile(EXCEL_ZIP)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for name in src.namelist():
            out.writestr(name, b"not a workbook" if name.endswith(".xlsx") else src.read(name))
    eid = client.import_package(client.upload_package(buf.getvalue()), project="Asset-Major-Types")
    client.emu.admin.advance(3600)
    assert client.status(eid) == "Failed"
    assert "Excel" in str(client.value("GetExecutionErrors", {"executionId": eid}))


@pytest.mark.skipif(not CUSTOMER_DEFS.exists(), reason=SKIP)
def test_current_manifest_imports_an_xml_attribute_file(client: Client) -> None:
    """The F&O-written manifest (extension fields included) with a hand-written XML-Attribute file."""
    data = (
        '<?xml version="1.0" encoding="utf-8"?>\r\n<Document>\r\n'
        '<CUSTCUSTOMERBASEENTITY CUSTOMERACCOUNT="C-001" NAME="Contoso" CUSTOMERGROUPID="10" PARTYTYPE="Organization"'
        ' IFGNUMEROSIREN="123456789" ADDRESSCITY="Paris" />\r\n'
        '<CUSTCUSTOMERBASEENTITY CUSTOMERACCOUNT="C-002" NAME="Bad" PARTYTYPE="Robot" />\r\n'
        "</Document>"
    ).encode("utf-8-sig")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Manifest.xml", (CUSTOMER_DEFS / "Manifest.xml").read_bytes())
        zf.writestr("PackageHeader.xml", (CUSTOMER_DEFS / "PackageHeader.xml").read_bytes())
        zf.writestr("CUSTCUSTOMERBASEENTITY.xml", data)
    eid = client.import_package(client.upload_package(buf.getvalue()), project="IFG_CUSTCUSTOMERBASEENTITY")
    client.emu.admin.advance(3600)
    assert client.status(eid) == "PartiallySucceeded"  # C-002 has no such party type
    (row,) = client.emu.admin.data("USMF", "Customer definitions")
    assert (row["CUSTOMERACCOUNT"], row["IFGNUMEROSIREN"], row["ADDRESSCITY"]) == (
        "C-001",
        "123456789",
        "Paris",
    )
    errors = client.value("GetExecutionErrors", {"executionId": eid})
    assert "Robot" in str(errors) and "PARTYTYPE" in str(errors)
