"""Package validation: every problem code from a package built to show it."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from dmf.package.inspect import inspect_package
from dmf.package.limits import Limits
from dmf.package.problems import Code, Severity

from .conftest import csv_unicode, groups_package, header_bytes, make_zip, manifest_bytes

GOOD = "CUSTOMERGROUPID,DESCRIPTION\n10,Wholesale\n20,Retail\n"


def codes(report) -> set[Code]:
    return {p.code for p in report.problems}


def test_good_package_from_path_and_file_object(tmp_path, catalogue):
    pkg = groups_package(tmp_path, GOOD)
    rep = inspect_package(pkg, catalogue=catalogue, overwrite=True, data_project="CG")
    assert rep.ok and rep.problems == []
    assert rep.row_counts == {"Customer groups": 2}
    assert [e.entity_name for e in rep.entities] == ["Customer groups"]
    assert rep.header is not None and rep.uncompressed_bytes > 0
    with open(pkg, "rb") as f:
        assert inspect_package(f, catalogue=catalogue).ok


def test_real_fno_excel_package_is_valid(samples, catalogue):
    rep = inspect_package(samples / "fixed-asset-major-types-excel.zip", catalogue=catalogue)
    assert rep.ok, rep.problems
    assert rep.row_counts == {"Fixed asset major type": 11}


def test_not_a_zip_and_empty(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"CUSTOMERGROUPID\r\n1\r\n")
    assert codes(inspect_package(p)) == {Code.NOT_A_ZIP}
    p.write_bytes(b"")
    assert codes(inspect_package(p)) == {Code.NOT_A_ZIP}
    assert codes(inspect_package(make_zip(tmp_path / "e.zip", {}))) == {Code.EMPTY_PACKAGE}


def test_missing_xml_files_and_missing_input_file(tmp_path):
    only_csv = make_zip(tmp_path / "a.zip", {"groups.csv": csv_unicode(GOOD)})
    assert {Code.MISSING_MANIFEST, Code.MISSING_PACKAGE_HEADER} <= codes(inspect_package(only_csv))
    no_data = make_zip(tmp_path / "b.zip", {
        "Manifest.xml": manifest_bytes([("Customer groups", "groups.csv", "CSV-Unicode", ["A"])]),
        "PackageHeader.xml": header_bytes(),
    })  # fmt: skip
    rep = inspect_package(no_data)
    [p] = rep.problems
    assert p.code is Code.INPUT_FILE_MISSING and "groups.csv" in p.message and p.entity == "Customer groups"


def test_bad_manifest_xml_and_xxe(tmp_path):
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    pkg = groups_package(tmp_path, GOOD, extra={"Manifest.xml": xxe})
    rep = inspect_package(pkg)
    assert Code.BAD_MANIFEST in codes(rep) and rep.manifest is None
    assert "passwd" not in str(rep.problems)


def test_zip_layout_problems(tmp_path):
    data = csv_unicode(GOOD)
    pkg = groups_package(tmp_path, GOOD, extra={
        "folder/groups.csv": data, "../evil.csv": data, "/abs.csv": data, "C:evil.csv": data,
        "back\\slash.csv": data, "empty.csv": b"",
    })  # fmt: skip
    rep = inspect_package(pkg)
    by_code: dict[Code, list[str]] = {}
    for p in rep.problems:
        by_code.setdefault(p.code, []).append(p.file or "")
    assert by_code[Code.ZIP_NESTED_FOLDER] == ["folder/groups.csv"]
    assert sorted(by_code[Code.PATH_TRAVERSAL]) == sorted(
        ["../evil.csv", "/abs.csv", "C:evil.csv", "back\\slash.csv"]
    )
    assert by_code[Code.EMPTY_FILE] == ["empty.csv"]
    assert by_code[Code.UNREFERENCED_FILE] == ["empty.csv"]


def test_manifest_without_entities_is_an_empty_package(tmp_path):
    pkg = make_zip(
        tmp_path / "p.zip", {"Manifest.xml": manifest_bytes([]), "PackageHeader.xml": header_bytes()}
    )
    assert codes(inspect_package(pkg)) == {Code.EMPTY_PACKAGE}


def test_entity_without_map_and_unknown_format_and_entity(tmp_path, catalogue):
    pkg = make_zip(tmp_path / "p.zip", {
        "Manifest.xml": manifest_bytes([("Customer groups", "g.csv", "CSV-Unicode", []),
                                        ("Martian entity", "m.txt", "Martian-Format", ["X"])]),
        "PackageHeader.xml": header_bytes(), "g.csv": csv_unicode(GOOD), "m.txt": b"X\r\n1\r\n",
    })  # fmt: skip
    rep = inspect_package(pkg, catalogue=catalogue)
    errors = {p.code for p in rep.errors}
    warnings = {p.code for p in rep.warnings}
    assert Code.NO_ENTITY_MAP in errors
    assert {Code.UNKNOWN_SOURCE_FORMAT, Code.UNKNOWN_ENTITY} <= warnings


def test_apostrophes_in_project_names(tmp_path):
    pkg = make_zip(tmp_path / "p.zip", {
        "Manifest.xml": manifest_bytes([("Customer groups", "g.csv", "CSV-Unicode", ["CUSTOMERGROUPID", "DESCRIPTION"])],
                                       project="O'Brien import"),
        "PackageHeader.xml": header_bytes(), "g.csv": csv_unicode(GOOD),
    })  # fmt: skip
    rep = inspect_package(pkg)
    assert [p.code for p in rep.problems] == [Code.APOSTROPHE_IN_PROJECT]
    assert "O'Brien import" in rep.problems[0].message
    assert Code.APOSTROPHE_IN_PROJECT in codes(
        inspect_package(groups_package(tmp_path, GOOD), data_project="Cust's")
    )


def test_composite_entity_alone_and_overwrite_off(tmp_path, catalogue):
    so = b'<Document><SALESORDERHEADERV2ENTITY SALESORDERNUMBER="1"/></Document>'
    both = make_zip(tmp_path / "c.zip", {
        "Manifest.xml": manifest_bytes([("Sales orders composite V3", "so.xml", "XML-Attribute", ["SALESORDERNUMBER"]),
                                        ("Customer groups", "g.csv", "CSV-Unicode", ["CUSTOMERGROUPID", "DESCRIPTION"])]),
        "PackageHeader.xml": header_bytes(), "so.xml": so, "g.csv": csv_unicode(GOOD),
    })  # fmt: skip
    rep = inspect_package(both, catalogue=catalogue, overwrite=True)
    assert codes(rep) == {Code.COMPOSITE_NOT_ALONE, Code.COMPOSITE_OVERWRITE}
    alone = make_zip(tmp_path / "d.zip", {
        "Manifest.xml": manifest_bytes([("Sales orders composite V3", "so.xml", "XML-Attribute", ["SALESORDERNUMBER"])]),
        "PackageHeader.xml": header_bytes(), "so.xml": so,
    })  # fmt: skip
    assert inspect_package(alone, catalogue=catalogue, overwrite=False).ok
    assert codes(inspect_package(alone, catalogue=catalogue, overwrite=True)) == {Code.COMPOSITE_OVERWRITE}


def test_duplicate_keys_streamed_with_row_numbers(tmp_path, catalogue):
    text = (
        "CUSTOMERGROUPID,DESCRIPTION\n" + "".join(f"G{i},d\n" for i in range(3000)) + "G5,again\nG7,again\n"
    )
    rep = inspect_package(groups_package(tmp_path, text), catalogue=catalogue,
                          limits=Limits(key_spill_threshold=100))  # fmt: skip
    dups = [p for p in rep.problems if p.code is Code.DUPLICATE_KEY]
    assert [(p.row, p.severity) for p in dups] == [(3002, Severity.ERROR), (3003, Severity.ERROR)]
    assert "row 3002 repeats the key of row 7" in dups[0].message
    assert rep.row_counts == {"Customer groups": 3002}
    # Without a catalogue there are no known keys, so no duplicate check.
    assert inspect_package(groups_package(tmp_path, text, name="b.zip")).ok


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (GOOD.replace("\n", "\r\n").encode("utf-8"), Code.BAD_ENCODING),  # CSV-Unicode without BOM
        (b"\xff\xfe" + GOOD.encode("utf-16-le"), Code.LF_LINE_ENDINGS),
        (
            b"\xff\xfe" + GOOD.replace("\n", "\r\n").encode("utf-16-le")[:-1],
            Code.BAD_ENCODING,
        ),  # odd byte count
        (csv_unicode('CUSTOMERGROUPID,DESCRIPTION\n1,"open\n'), Code.UNTERMINATED_QUOTE),
        (csv_unicode("CUSTOMERGROUPID\n1\n"), Code.HEADER_MISMATCH),
    ],
)
def test_content_checks(tmp_path, raw, code):
    rep = inspect_package(groups_package(tmp_path, "", raw=raw))
    assert code in {p.code for p in rep.errors}, rep.problems


def test_lf_report_names_the_first_lf_only_line(tmp_path):
    text = "CUSTOMERGROUPID,DESCRIPTION\r\n1,a\r\n2,b\n3,c\r\n"
    rep = inspect_package(groups_package(tmp_path, "", raw=b"\xff\xfe" + text.encode("utf-16-le")))
    [p] = rep.problems
    assert p.code is Code.LF_LINE_ENDINGS and p.row == 3 and "line 3" in p.message


def test_utf16_file_under_an_8bit_format(tmp_path):
    pkg = make_zip(tmp_path / "p.zip", {
        "Manifest.xml": manifest_bytes([("Customer groups", "g.csv", "CSV-UTF8", ["CUSTOMERGROUPID", "DESCRIPTION"])]),
        "PackageHeader.xml": header_bytes(), "g.csv": csv_unicode(GOOD),
    })  # fmt: skip
    assert codes(inspect_package(pkg)) == {Code.BAD_ENCODING}


def test_size_limits(tmp_path):
    pkg = groups_package(tmp_path, GOOD)
    assert Code.TOO_LARGE in codes(inspect_package(pkg, limits=Limits(max_rows_per_package=1)))
    assert Code.TOO_LARGE in codes(inspect_package(pkg, limits=Limits(max_bytes_per_package=10)))
    assert codes(inspect_package(pkg, limits=Limits(max_package_file_bytes=100))) == {Code.TOO_LARGE}


def test_zip_bomb_by_ratio_and_total_from_headers(tmp_path):
    big = b"\xff\xfe" + b"0\x00,\x00" * (4 * 1024 * 1024)  # 16 MiB of one repeated pattern
    pkg = groups_package(tmp_path, "", raw=big)
    rep = inspect_package(pkg, limits=Limits(max_ratio=100))
    assert Code.ZIP_BOMB in codes(rep) and rep.row_counts == {}
    assert Code.ZIP_BOMB in codes(inspect_package(pkg, limits=Limits(max_uncompressed_bytes=1024 * 1024)))


def test_zip_bomb_caught_while_reading_when_headers_lie(tmp_path):
    """Central directory claims a small size; decompression must stop, never trust the header."""
    text = "CUSTOMERGROUPID,DESCRIPTION\r\n" + "".join(f"{i},x\r\n" for i in range(20000))
    pkg = groups_package(tmp_path, "", raw=b"\xff\xfe" + text.encode("utf-16-le"))
    data = bytearray(pkg.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("groups.csv")
    # Patch the uncompressed size in the central directory entry of groups.csv.
    cd = data.rfind(b"PK\x01\x02", 0, data.rfind(b"groups.csv") + 1)
    struct.pack_into("<I", data, cd + 24, 1000)
    lying = tmp_path / "lying.zip"
    lying.write_bytes(bytes(data))
    rep = inspect_package(lying)
    assert rep.codes() & {Code.ZIP_BOMB, Code.ZIP_CORRUPT}, rep.problems
    assert info.file_size > 1000


def test_too_many_entries_and_encrypted_flag(tmp_path):
    files = {f"f{i}.csv": b"x" for i in range(5)}
    assert Code.ZIP_TOO_MANY_ENTRIES in codes(inspect_package(make_zip(tmp_path / "m.zip", files),
                                                              limits=Limits(max_entries=3)))  # fmt: skip
    pkg = groups_package(tmp_path, GOOD)
    data = bytearray(pkg.read_bytes())
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, cd + 8, struct.unpack_from("<H", data, cd + 8)[0] | 1)
    enc = tmp_path / "enc.zip"
    enc.write_bytes(bytes(data))
    assert Code.ZIP_ENCRYPTED in codes(inspect_package(enc))


def test_lf_inside_a_quoted_field_is_data_not_a_row_end(tmp_path):
    text = 'CUSTOMERGROUPID,DESCRIPTION\r\n1,"two\nlines"\r\n2,b\r\n'
    rep = inspect_package(groups_package(tmp_path, "", raw=b"\xff\xfe" + text.encode("utf-16-le")))
    assert rep.ok and rep.row_counts == {"Customer groups": 2}
