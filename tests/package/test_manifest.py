from __future__ import annotations

import re
import zipfile

import pytest

from dmf.package.manifest import (
    DM_NS,
    EntityData,
    EntityMap,
    Layout,
    Manifest,
    ManifestError,
    PackageHeader,
    RawXml,
    entity_maps_for,
    parse_manifest,
    parse_package_header,
    render_manifest,
    render_package_header,
)


def test_fixed_asset_sample_round_trips_byte_for_byte(samples):
    with zipfile.ZipFile(samples / "fixed-asset-major-types-excel.zip") as zf:
        man_b, hdr_b = zf.read("Manifest.xml"), zf.read("PackageHeader.xml")
    man = parse_manifest(man_b)
    assert man.definition_group_name == "Asset-Major-Types"
    [ent] = man.entities
    assert ent.entity_name == "Fixed asset major type"
    assert ent.input_file_path == "Fixed asset major type.xlsx"
    assert ent.source_format == "EXCEL"
    assert ent.target_entity is None  # PU5-era manifest: no TargetEntity element
    assert [(m.xml_field, m.entity_field) for m in ent.entity_map_list] == [
        ("DESCRIPTION", "DESCRIPTION"),
        ("MAJORTYPEID", "MAJORTYPEID"),
    ]
    assert ent.entity_transform_list is None and ent.excel_sheet_name == ""
    assert (ent.execution_unit, ent.level_in_execution_unit, ent.sequence_in_level) == (1, 1, 1)
    assert man.layout.indent is None
    assert render_manifest(man) == man_b
    hdr = parse_package_header(hdr_b)
    assert (hdr.description, hdr.package_version, hdr.package_type) == (
        "Asset-Major-Types",
        1,
        "DefinitionGroup",
    )
    assert render_package_header(hdr) == hdr_b


def test_customer_definitions_sample_round_trips_byte_for_byte(samples):
    folder = samples / "customer-definitions-manifest"
    man_b = (folder / "Manifest.xml").read_bytes()
    hdr_b = (folder / "PackageHeader.xml").read_bytes()
    man = parse_manifest(man_b)
    [ent] = man.entities
    assert ent.entity_name == "Customer definitions"
    assert ent.target_entity == "CustCustomerBaseEntity"
    assert ent.source_format == "XML-Attribute"
    assert ent.default_refresh_type == "FullPush"
    assert len(ent.entity_map_list) == 194
    assert ent.query_data is not None and ent.query_data.startswith("4a012f27") and " " not in ent.query_data
    assert man.project_category == "0" and man.rules_data is None
    assert man.layout.indent == "\t"
    assert render_manifest(man) == man_b
    hdr = parse_package_header(hdr_b)
    assert hdr.package_version == 2
    assert render_package_header(hdr) == hdr_b


def test_generated_manifest_is_alphabetical_utf16_bom_crlf_and_parses_back():
    ent = EntityData(
        entity_name="Customer groups",
        input_file_path="groups.csv",
        source_format="CSV-Unicode",
        entity_map_list=entity_maps_for(["CustomerGroupId", "DESCRIPTION"]),
        target_entity="CustCustomerGroupEntity",
    )
    data = render_manifest(Manifest(definition_group_name="CG import", entities=[ent]))
    assert data.startswith(b"\xff\xfe<")
    text = data[2:].decode("utf-16-le")
    assert "\n" in text and "\n" not in text.replace("\r\n", "")
    assert not text.startswith("<?xml")
    assert f'xmlns="{DM_NS}"' in text and 'xmlns:i="http://www.w3.org/2001/XMLSchema-instance"' in text
    entity_block = text[
        text.index("<DataManagementPackageEntityData>") : text.index("</DataManagementPackageEntityData>")
    ]
    # Direct children only (3 tabs deep), in the order written.
    names = re.findall(r"\r\n\t\t\t<(\w+)", entity_block)
    assert names == sorted(names)
    for required in ("EntityMapList", "EntityName", "InputFilePath", "SourceFormat", "TargetEntity"):
        assert required in names
    assert "QueryData" not in names
    assert '<EntityTransformList i:nil="true" />' in text and "<ExcelSheetName />" in text
    # XMLField keeps the header as written; EntityField is the DMF (upper-case) field.
    assert (
        "<EntityField>CUSTOMERGROUPID</EntityField>" in text
        and "<XMLField>CustomerGroupId</XMLField>" in text
    )
    back = parse_manifest(data)
    assert back.entities[0].xml_fields == ["CustomerGroupId", "DESCRIPTION"]
    assert back.entities[0].target_entity == "CustCustomerGroupEntity"
    assert render_manifest(back) == data


def test_utf8_rendering_and_escaping():
    ent = EntityData("A & B <x>", "f.csv", "CSV-UTF8", [EntityMap("X", "X")])
    man = Manifest(
        definition_group_name="P", description="d & <e>", entities=[ent], layout=Layout(indent=None)
    )
    data = render_manifest(man, encoding="utf-8")
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert b"A &amp; B &lt;x&gt;" in data
    back = parse_manifest(data)
    assert back.entities[0].entity_name == "A & B <x>" and back.description == "d & <e>"


def test_nil_strings_and_unknown_elements_survive():
    ns = f'xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="{DM_NS}"'
    xml = (
        f"<DataManagementPackageManifest {ns}><DefinitionGroupName>P</DefinitionGroupName>"
        '<Description i:nil="true" /><FutureThing><A>1</A></FutureThing><PackageEntityList>'
        "<DataManagementPackageEntityData><EntityMapList /><EntityName>E</EntityName>"
        "<EntityTransformList><T>x</T></EntityTransformList><InputFilePath>e.csv</InputFilePath>"
        "<SourceFormat>CSV</SourceFormat></DataManagementPackageEntityData></PackageEntityList>"
        "</DataManagementPackageManifest>"
    )
    man = parse_manifest(xml)
    assert man.description == ""  # nil description read as empty
    assert "FutureThing" in man.extra
    ent = man.entities[0]
    assert isinstance(ent.entity_transform_list, RawXml) and "<T>x</T>" in ent.entity_transform_list.xml
    out = render_manifest(man).decode("utf-16")
    assert "<FutureThing><A>1</A></FutureThing>" in out
    assert out.index("<Description") < out.index("<FutureThing>") < out.index("<PackageEntityList>")
    assert "<EntityTransformList><T>x</T></EntityTransformList>" in out
    assert "ns0" not in out


@pytest.mark.parametrize(
    ("xml", "needle"),
    [
        ("<DataManagementPackageManifest><DefinitionGroupName>P</DefinitionGroupName>"
         "</DataManagementPackageManifest>", "namespace"),
        (f'<Other xmlns="{DM_NS}"/>', "root element"),
        (f'<DataManagementPackageManifest xmlns="{DM_NS}"><DefinitionGroupName>P', "well-formed"),
        (f'<DataManagementPackageManifest xmlns="{DM_NS}"><Description>x</Description>'
         "</DataManagementPackageManifest>", "definition_group_name"),
        (f'<DataManagementPackageManifest xmlns="{DM_NS}"><DefinitionGroupName>P</DefinitionGroupName>'
         "<PackageEntityList><DataManagementPackageEntityData><EntityName>E</EntityName><Disable>maybe</Disable>"
         "</DataManagementPackageEntityData></PackageEntityList></DataManagementPackageManifest>", "true or false"),
        ("", "empty"),
    ],
)  # fmt: skip
def test_bad_manifests_raise_manifest_error(xml, needle):
    with pytest.raises(ManifestError, match=needle):
        parse_manifest(xml.encode())


def test_entity_expansion_and_dtd_are_refused():
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        f'<DataManagementPackageManifest xmlns="{DM_NS}"><DefinitionGroupName>&b;</DefinitionGroupName>'
        "</DataManagementPackageManifest>"
    )
    with pytest.raises(ManifestError, match="forbidden"):
        parse_manifest(bomb.encode())


def test_package_header_defaults_and_render():
    hdr = PackageHeader(description="Proj")
    data = render_package_header(hdr)
    text = data.decode("utf-16")
    assert re.findall(r"<(\w+)>", text) == ["Description", "ManifestType", "PackageType", "PackageVersion"]
    back = parse_package_header(data)
    assert back.package_version == 2 and back.description == "Proj"
