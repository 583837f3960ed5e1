"""Raw file → package: transcoding, CRLF, splitting, mapping, templates, XML and Excel, bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from dmf.package.build import build_packages_from_raw
from dmf.package.catalogue import EntityInfo
from dmf.package.fingerprint import sha256_file
from dmf.package.inspect import inspect_package
from dmf.package.limits import Limits
from dmf.package.manifest import parse_manifest, parse_package_header
from dmf.package.problems import Code, Severity

from .conftest import header_bytes, make_zip, manifest_bytes, read_member

GROUPS = EntityInfo("Customer groups", "CustCustomerGroupEntity", key_fields=("CUSTOMERGROUPID",),
                    fields=("CUSTOMERGROUPID", "DESCRIPTION", "PAYMENTTERMID"))  # fmt: skip


def build(tmp_path: Path, data: bytes, fmt: str = "CSV-Unicode", *, name: str = "groups.csv",
          limits: Limits | None = None, entity: EntityInfo = GROUPS, **kw):  # fmt: skip
    out = tmp_path / "out"
    return build_packages_from_raw(io.BytesIO(data), file_name=name, entity=entity, source_format=fmt,
                                   data_project="CG import", limits=limits or Limits(), out_dir=out, **kw)  # fmt: skip


def test_utf8_lf_csv_becomes_utf16_bom_crlf_package_that_inspects_clean(tmp_path, catalogue):
    data = 'CUSTOMERGROUPID,DESCRIPTION\n10,"Whole\nsale"\n20,Café ☕\n'.encode()
    res = build(tmp_path, data)
    assert res.ok, res.problems
    [pkg] = res.packages
    assert pkg.path.name == "package.zip" and pkg.rows == 2 and pkg.part == 1
    assert pkg.sha256 == sha256_file(pkg.path) and pkg.bytes == pkg.path.stat().st_size
    with zipfile.ZipFile(pkg.path) as zf:
        assert sorted(zf.namelist()) == ["Manifest.xml", "PackageHeader.xml", "groups.csv"]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
        body = zf.read("groups.csv")
        man = parse_manifest(zf.read("Manifest.xml"))
        hdr = parse_package_header(zf.read("PackageHeader.xml"))
    assert body == b"\xff\xfe" + 'CUSTOMERGROUPID,DESCRIPTION\r\n10,"Whole\r\nsale"\r\n20,Café ☕\r\n'.encode(
        "utf-16-le"
    )
    assert pkg.data_bytes == len(body)
    assert man.definition_group_name == "CG import" and hdr.package_version == 2
    [ent] = man.entities
    assert (ent.entity_name, ent.target_entity, ent.input_file_path, ent.source_format) == (
        "Customer groups", "CustCustomerGroupEntity", "groups.csv", "CSV-Unicode")  # fmt: skip
    assert [(m.xml_field, m.entity_field) for m in ent.entity_map_list] == [
        ("CUSTOMERGROUPID", "CUSTOMERGROUPID"), ("DESCRIPTION", "DESCRIPTION")]  # fmt: skip
    report = inspect_package(pkg.path, catalogue=catalogue, overwrite=True, data_project="CG import")
    assert report.ok, report.problems
    assert report.row_counts == {"Customer groups": 2}


@pytest.mark.parametrize(
    ("encoded", "label"),
    [
        (b"\xef\xbb\xbf" + "CUSTOMERGROUPID;DESCRIPTION\r\n1;Ünïcode\r\n".encode(), "utf-8 bom"),
        (b"\xfe\xff" + "CUSTOMERGROUPID;DESCRIPTION\r\n1;Ünïcode\r\n".encode("utf-16-be"), "utf-16 be bom"),
        ("CUSTOMERGROUPID;DESCRIPTION\r\n1;Ünïcode\r\n".encode("utf-16-le"), "utf-16 le no bom"),
        ("CUSTOMERGROUPID;DESCRIPTION\r1;Ünïcode\r".encode("cp1252"), "cp1252, CR only"),
    ],
)
def test_input_encodings_are_transcoded_and_redelimited(tmp_path, encoded, label):
    res = build(tmp_path, encoded, "CSV-UTF8", input_delimiter=";")
    assert res.ok, (label, res.problems)
    body = read_member(res.packages[0].path, "groups.csv")
    assert body == "CUSTOMERGROUPID,DESCRIPTION\r\n1,Ünïcode\r\n".encode()  # CSV-UTF8: no BOM
    if label.startswith("cp1252"):
        assert [p.code for p in res.problems] == [Code.BAD_ENCODING]
        assert res.problems[0].severity is Severity.WARNING


def test_split_by_rows_repeats_header_and_every_part_is_valid(tmp_path, catalogue):
    rows = [f"G{i:04d},Group {i}" for i in range(1, 26)]
    data = ("CUSTOMERGROUPID,DESCRIPTION\n" + "\n".join(rows) + "\n").encode()
    res = build(tmp_path, data, limits=Limits(max_rows_per_package=10))
    assert res.ok, res.problems
    assert [p.rows for p in res.packages] == [10, 10, 5]
    assert [p.path.name for p in res.packages] == [f"package-part00{i}.zip" for i in (1, 2, 3)]
    seen = []
    for p in res.packages:
        text = read_member(p.path, "groups.csv").decode("utf-16")
        lines = text.split("\r\n")
        assert lines[0] == "CUSTOMERGROUPID,DESCRIPTION" and lines[-1] == ""
        seen += lines[1:-1]
        assert inspect_package(p.path, catalogue=catalogue, limits=Limits(max_rows_per_package=10)).ok
    assert seen == rows
    assert len({p.sha256 for p in res.packages}) == 3


def test_split_by_bytes_never_exceeds_the_limit_and_keeps_multiline_records_whole(tmp_path):
    rows = [f'G{i:03d},"line one\nline two {i}"' for i in range(40)]
    data = ("CUSTOMERGROUPID,DESCRIPTION\n" + "\n".join(rows) + "\n").encode()
    limit = 600
    res = build(tmp_path, data, limits=Limits(max_bytes_per_package=limit))
    assert res.ok, res.problems
    assert len(res.packages) > 3
    total = 0
    for p in res.packages:
        body = read_member(p.path, "groups.csv")
        assert len(body) <= limit and body.startswith(b"\xff\xfe")
        text = body.decode("utf-16")
        assert text.count('"') % 2 == 0  # no record cut in half
        total += p.rows
    assert total == 40 == res.rows


def test_single_record_larger_than_byte_limit_is_too_large(tmp_path):
    data = ("CUSTOMERGROUPID,DESCRIPTION\n1," + "x" * 500 + "\n").encode()
    res = build(tmp_path, data, limits=Limits(max_bytes_per_package=300))
    assert not res.ok and [p.code for p in res.problems] == [Code.TOO_LARGE]
    assert res.packages == [] and not list((tmp_path / "out").glob("*.zip"))


def test_duplicate_keys_fail_the_build_and_leave_no_packages(tmp_path):
    data = b"CustomerGroupId,DESCRIPTION\nab,a\n20,b\n aB ,c\n20,d\n30,e\n"
    res = build(tmp_path, data, limits=Limits(max_rows_per_package=2))
    assert not res.ok
    dups = [p for p in res.problems if p.code is Code.DUPLICATE_KEY]
    assert [(p.row, p.severity) for p in dups] == [(4, Severity.ERROR), (5, Severity.ERROR)]
    assert "row 4 repeats the key of row 2" in dups[0].message and "CUSTOMERGROUPID = AB" in dups[0].message
    assert not list((tmp_path / "out").glob("*.zip"))
    assert build(tmp_path, data, check_duplicate_keys=False).ok


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", Code.EMPTY_FILE),
        (b"CUSTOMERGROUPID,DESCRIPTION\r\n", Code.NO_ROWS),
        (b"CUSTOMERGROUPID,DESCRIPTION\n1,\"open\n2,x\n", Code.UNTERMINATED_QUOTE),
        (b"CUSTOMERGROUPID,,DESCRIPTION\n1,2,3\n", Code.NO_HEADER),
        (b"CUSTOMERGROUPID,customergroupid\n1,2\n", Code.DUPLICATE_COLUMN),
        # Valid UTF-8 for the first 64 KiB (so detected as UTF-8), then a Latin-1 byte.
        (b"CUSTOMERGROUPID,DESCRIPTION\n" + b"".join(b"%d,ok\n" % i for i in range(12000)) + b"x,caf\xe9\n",
         Code.BAD_ENCODING),
    ],
)  # fmt: skip
def test_bad_raw_files_report_a_problem(tmp_path, data, code):
    res = build(tmp_path, data)
    assert not res.ok
    assert code in [p.code for p in res.problems if p.severity is Severity.ERROR], res.problems
    assert not list((tmp_path / "out").glob("*.zip"))


def test_warnings_for_unknown_columns_missing_keys_and_plain_csv_non_ascii(tmp_path):
    res = build(tmp_path, "DESCRIPTION,COLOUR\nCafé,red\n".encode(), "CSV")
    assert res.ok
    codes = {p.code for p in res.problems}
    assert codes == {Code.UNKNOWN_FIELD, Code.KEY_FIELD_MISSING, Code.BAD_ENCODING}
    assert all(p.severity is Severity.WARNING for p in res.problems)


def test_bad_names_project_and_format(tmp_path):
    assert build(tmp_path, b"A\n1\n", name="../Manifest.xml").problems[0].code is Code.BAD_FILE_NAME
    assert build(tmp_path, b"A\n1\n", name="a:b.csv").problems[0].code is Code.BAD_FILE_NAME
    res = build_packages_from_raw(io.BytesIO(b"A\n1\n"), file_name="a.csv", entity=GROUPS, source_format="CSV",
                                  data_project="O'Brien", limits=Limits(), out_dir=tmp_path)  # fmt: skip
    assert res.problems[0].code is Code.APOSTROPHE_IN_PROJECT
    assert build(tmp_path, b"A\n1\n", "Fixed-width").problems[0].code is Code.UNSUPPORTED_FORMAT
    # A folder in the raw file's blob name is dropped; the data file keeps its base name.
    res = build(tmp_path, b"CUSTOMERGROUPID\n1\n", name="in/2026/groups", check_duplicate_keys=False)
    assert res.ok and res.packages[0].data_file == "groups.csv"


def test_template_mapping_and_header_are_reused(tmp_path):
    template = make_zip(tmp_path / "template.zip", {
        "Manifest.xml": manifest_bytes([("Customer groups", "old.csv", "CSV-Unicode", ["Group", "Text"])],
                                       project="Template project", target="CustCustomerGroupEntity"),
        "PackageHeader.xml": header_bytes(),
        "old.csv": b"\xff\xfe",
    })  # fmt: skip
    res = build(
        tmp_path, b"Group,Text,Extra\nA,alpha,1\nB,beta,2\n", template=template, check_duplicate_keys=False
    )
    assert res.ok, res.problems
    man = parse_manifest(read_member(res.packages[0].path, "Manifest.xml"))
    assert man.definition_group_name == "Template project"
    assert [e.input_file_path for e in man.entities] == ["groups.csv"]
    assert man.entities[0].xml_fields == ["Group", "Text"]  # the template mapping, not one from the header
    missing = build(tmp_path, b"Group\nA\n", template=template)
    assert [p.code for p in missing.problems] == [Code.HEADER_MISMATCH]
    broken = make_zip(tmp_path / "broken.zip", {"Manifest.xml": b"<x/>"})
    assert build(tmp_path, b"Group\nA\n", template=broken).problems[0].code is Code.TEMPLATE_INVALID


def test_xml_attribute_file_is_split_by_record_with_fields_from_the_records(tmp_path, catalogue):
    records = "".join(
        f'<CUSTCUSTOMERGROUPENTITY CUSTOMERGROUPID="G{i}" DESCRIPTION="d &amp; {i}"/>' for i in range(5)
    )
    data = f'<?xml version="1.0" encoding="utf-16"?><Document>{records}</Document>'.encode("utf-16")
    res = build(tmp_path, data, "XML-Attribute", name="groups.xml", limits=Limits(max_rows_per_package=2))
    assert res.ok, res.problems
    assert [p.rows for p in res.packages] == [2, 2, 1]
    body = read_member(res.packages[0].path, "groups.xml").decode()
    assert body.startswith('<?xml version="1.0" encoding="utf-8"?>\r\n<Document>\r\n')
    assert body.endswith("</Document>\r\n") and 'DESCRIPTION="d &amp; 0"' in body
    man = parse_manifest(read_member(res.packages[0].path, "Manifest.xml"))
    assert man.entities[0].xml_fields == ["CUSTOMERGROUPID", "DESCRIPTION"]
    assert man.entities[0].source_format == "XML-Attribute"
    for p in res.packages:
        rep = inspect_package(p.path, catalogue=catalogue)
        assert rep.ok, rep.problems
    dup = build(
        tmp_path,
        data.decode("utf-16").replace('"G1"', '"G0"').encode("utf-16"),
        "XML-Attribute",
        name="g.xml",
    )
    assert [p.code for p in dup.problems] == [Code.DUPLICATE_KEY]


def test_xml_element_file_and_hostile_xml(tmp_path):
    data = b"<Document><E><CUSTOMERGROUPID>1</CUSTOMERGROUPID></E><E><CUSTOMERGROUPID>2</CUSTOMERGROUPID>" \
           b"<DESCRIPTION>x</DESCRIPTION></E></Document>"  # fmt: skip
    res = build(tmp_path, data, "XML-Element", name="g.xml")
    assert res.ok and res.packages[0].rows == 2
    man = parse_manifest(read_member(res.packages[0].path, "Manifest.xml"))
    assert man.entities[0].xml_fields == ["CUSTOMERGROUPID", "DESCRIPTION"]
    bomb = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><Document><E>&a;</E></Document>'
    assert build(tmp_path, bomb, "XML-Element", name="g.xml").problems[0].code is Code.BAD_XML
    assert build(tmp_path, b"<Document><E>", "XML-Element", name="g.xml").problems[0].code is Code.BAD_XML
    assert build(tmp_path, b"<Document/>", "XML-Element", name="g.xml").problems[0].code is Code.NO_ROWS


def _xlsx(rows: list[list[object]]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Groups"
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_excel_is_kept_as_is_within_limits_and_split_above(tmp_path, catalogue):
    data = _xlsx([["CUSTOMERGROUPID", "DESCRIPTION"], *[[f"G{i}", f"d{i}"] for i in range(7)]])
    res = build(tmp_path, data, "EXCEL", name="groups.xlsx")
    assert res.ok, res.problems
    assert read_member(res.packages[0].path, "groups.xlsx") == data and res.packages[0].rows == 7
    assert inspect_package(res.packages[0].path, catalogue=catalogue).row_counts == {"Customer groups": 7}
    split = build(tmp_path, data, "EXCEL", name="groups.xlsx", limits=Limits(max_rows_per_package=3))
    assert split.ok, split.problems
    assert [p.rows for p in split.packages] == [3, 3, 1]
    for p in split.packages:
        rep = inspect_package(p.path, catalogue=catalogue, limits=Limits(max_rows_per_package=3))
        assert rep.ok, rep.problems
    dup = build(tmp_path, _xlsx([["CUSTOMERGROUPID"], ["A"], ["A"]]), "EXCEL", name="g.xlsx")
    assert [p.code for p in dup.problems] == [Code.DUPLICATE_KEY]
    assert build(tmp_path, b"not a workbook", "EXCEL", name="g.xlsx").problems[0].code is Code.BAD_EXCEL


def test_input_larger_than_max_input_bytes_is_refused(tmp_path):
    data = b"CUSTOMERGROUPID\n" + b"".join(b"G%d\n" % i for i in range(50000))
    res = build(tmp_path, data, limits=Limits(max_input_bytes=100_000))
    assert [p.code for p in res.problems] == [Code.TOO_LARGE] and res.packages == []
    assert not list((tmp_path / "out").glob("*.zip"))
