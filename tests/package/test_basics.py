"""Formats, catalogue, limits, fingerprint, text streaming and duplicate keys."""

from __future__ import annotations

import codecs
import hashlib
import io
import os

import pytest

from dmf.package.catalogue import Catalogue, EntityInfo, default_catalogue
from dmf.package.fingerprint import sha256_file, sha256_stream
from dmf.package.formats import FileKind, SourceFormat, UnknownFormatError, format_rules, known_formats
from dmf.package.keys import DuplicateKeyFinder
from dmf.package.limits import Limits
from dmf.package.textstream import RecordSplitter, RecordTooLongError, detect_encoding, iter_normalised_text


def test_format_rules():
    uni = format_rules("csv-unicode")
    assert uni.name == SourceFormat.CSV_UNICODE
    assert (uni.encoding, uni.bom, uni.delimiter, uni.crlf_required) == ("utf-16-le", b"\xff\xfe", ",", True)
    assert format_rules("CSV-UTF8").bom == b""
    assert format_rules("XML-Attribute").xml_attributes and not format_rules("XML-Element").xml_attributes
    assert format_rules("EXCEL").kind is FileKind.EXCEL
    custom = format_rules("Pipe-Unicode", like="CSV-Unicode")
    assert custom.name == "Pipe-Unicode" and custom.encoding == "utf-16-le"
    with pytest.raises(UnknownFormatError, match="Pipe"):
        format_rules("Pipe")
    assert "CSV-Unicode" in known_formats()


def test_default_catalogue_and_extension():
    cat = default_catalogue()
    groups = cat.get("customer groups")
    assert groups is not None and groups.target_entity == "CustCustomerGroupEntity"
    assert groups.key_fields == ("CUSTOMERGROUPID",)
    assert cat.get("CustCustomerV3Entity").key_fields == ("CUSTOMERACCOUNT",)
    assert cat.get("Customer definitions").target_entity == "CustCustomerBaseEntity"
    assert cat.get("Sales orders composite V3").composite
    assert "Fixed asset major type" in cat
    route = cat.extended(
        [EntityInfo("Vendors V2", "VendVendorV2Entity", key_fields=("vendoraccountnumber",))]
    )
    assert route.get("VendVendorV2Entity").key_fields == ("VENDORACCOUNTNUMBER",)
    assert cat.get("Vendors V2") is None  # the original is untouched
    route.add(EntityInfo("Customer groups", "CustCustomerGroupEntity", key_fields=("CUSTOMERGROUPID", "X")))
    assert route.get("Customer groups").key_fields == ("CUSTOMERGROUPID", "X")
    assert len(route) == len(cat) + 1
    assert isinstance(Catalogue.of([]), Catalogue)
    with pytest.raises(ValueError, match="label"):
        EntityInfo(" ", "X")


def test_limits_validation():
    with pytest.raises(ValueError, match="max_rows_per_package"):
        Limits(max_rows_per_package=0)
    assert Limits(max_rows_per_package=None).max_rows_per_package is None


def test_sha256_stream_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_stream(io.BytesIO(data)) == expected

    class ReadOnly:  # a stream without readinto, like some SDK download streams
        def __init__(self, b: bytes) -> None:
            self.b = io.BytesIO(b)

        def read(self, n: int = -1) -> bytes:
            return self.b.read(n)

    assert sha256_stream(ReadOnly(data), chunk_size=4096) == expected  # type: ignore[arg-type]
    p = tmp_path / "f"
    p.write_bytes(data)
    assert sha256_file(p) == expected


@pytest.mark.parametrize(
    ("head", "codec", "bom"),
    [
        (codecs.BOM_UTF8 + b"a,b", "utf-8", 3),
        (codecs.BOM_UTF16_LE + "a,b".encode("utf-16-le"), "utf-16-le", 2),
        (codecs.BOM_UTF16_BE + "a,b".encode("utf-16-be"), "utf-16-be", 2),
        ("abc,def\r\n".encode("utf-16-le"), "utf-16-le", 0),
        ("abc,def\r\n".encode("utf-16-be"), "utf-16-be", 0),
        ("café".encode(), "utf-8", 0),
        ("café,x\r\n".encode("cp1252"), "cp1252", 0),
    ],
)
def test_detect_encoding(head, codec, bom):
    enc = detect_encoding(head)
    assert (enc.codec, enc.bom_len) == (codec, bom)


def test_detect_encoding_truncated_utf8_at_end_of_whole_file():
    assert detect_encoding("café".encode("cp1252"), complete=True).codec == "cp1252"
    assert detect_encoding("café".encode("cp1252")[:3] + b"\xc3", complete=False).codec == "utf-8"


def test_normalisation_handles_crlf_split_across_chunks():
    raw = "a,b\r\nc,d\re,f\ng,h\r\n".encode("utf-16-le")
    src = io.BytesIO(raw)
    head = src.read(7)  # odd size: splits a UTF-16 code unit and later a CRLF
    text = "".join(iter_normalised_text(src, head, detect_encoding(b"a\x00b\x00"), chunk_size=3))
    assert text == "a,b\nc,d\ne,f\ng,h\n"


def test_record_splitter_keeps_quoted_newlines_across_chunks():
    sp = RecordSplitter()
    out = sp.feed('H1,H2\n1,"multi\n')
    out += sp.feed('line ""quoted"""\n\n2,x\n3,"y')
    rest, open_quote = sp.finish()
    assert out == ["H1,H2", '1,"multi\nline ""quoted"""', "2,x"]
    assert rest == ['3,"y'] and open_quote


def test_record_splitter_bounds_an_unclosed_quote():
    sp = RecordSplitter(max_record_chars=100)
    sp.feed('h\n"')
    with pytest.raises(RecordTooLongError):
        for _ in range(20):
            sp.feed("x" * 10 + "\n")


def test_duplicate_keys_in_memory_report_key_text():
    f = DuplicateKeyFinder()
    for row, key in enumerate(["A", "B", "A", "C", "B"], start=2):
        f.add((key,), row)
    dups = f.finish()
    assert [(d.row, d.first_row, d.key) for d in dups] == [(4, 2, ("A",)), (6, 3, ("B",))]


def test_duplicate_keys_after_spilling_to_disk():
    f = DuplicateKeyFinder(spill_threshold=100, max_reported=5)
    n = 5000
    for i in range(n):
        f.add((f"K{i}", "LE1"), i + 2)
    f.add(("K10", "LE1"), n + 2)  # duplicate of a key seen before the spill
    f.add(("K4999", "LE1"), n + 3)  # duplicate of a key seen after the spill
    f.add(("K10", "LE2"), n + 4)  # different composite key: not a duplicate
    dups = f.finish()
    assert [(d.row, d.first_row) for d in dups] == [(n + 2, 12), (n + 3, n + 1)]
    assert f.duplicate_count == 2


def test_extract_keys_fast_split_matches_csv_parsing():
    from dmf.package.textstream import extract_keys

    recs = ["A1 ,x,y", "B2,x", "C3", " D4,,z"]
    assert (
        extract_keys(recs, [0], ",", True) == extract_keys(recs, [0], ",", False) == ["A1", "B2", "C3", "D4"]
    )
    assert extract_keys(recs, [1], ",", True) == extract_keys(recs, [1], ",", False) == ["X", "X", "", ""]
    quoted = ['"A,1",x', '"B ""2""",y']
    assert extract_keys(quoted, [0], ",", False) == ["A,1", 'B "2"']
    assert extract_keys(quoted, [0, 1], ",", False) == [("A,1", "X"), ('B "2"', "Y")]
    # F&O compares keys case-insensitively, so the finder must see "g1" and "G1" as one key.
    assert extract_keys(["g1,a", "G1,b"], [0], ",", True) == ["G1", "G1"]


def test_duplicate_keys_in_batches_before_and_after_spill():
    f = DuplicateKeyFinder(spill_threshold=1000)
    f.add_batch([f"K{i}" for i in range(500)], 2)
    f.add_batch(["X", "K3", "X"], 502)  # one cross-batch and one in-batch duplicate
    f.add_batch([f"L{i}" for i in range(2000)], 505)  # pushes the finder over the threshold: spills
    f.add_batch(["L1999", "M"], 2505)
    dups = f.finish()
    assert [(d.row, d.first_row, d.key) for d in dups] == [
        (503, 5, ("K3",)), (504, 502, ("X",)), (2505, 2504, None)]  # fmt: skip


def test_extract_first_key_with_quotes_later_in_the_row():
    from dmf.package.textstream import extract_keys

    recs = ['A1,"x, y",z', '"B,2",q', 'C3,"multi\nline"']
    assert extract_keys(recs, [0], ",", False) == ["A1", "B,2", "C3"]
