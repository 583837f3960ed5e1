"""Batch manifests and batch zips."""

from __future__ import annotations

import json

import pytest

from dmf.package.batch import BatchManifestError, extract_batch_zip, natural_key, parse_batch_manifest
from dmf.package.fingerprint import sha256_file
from dmf.package.inspect import inspect_package
from dmf.package.limits import Limits
from dmf.package.problems import Code

from .conftest import groups_package, make_zip, zip_bytes

CSV = "CUSTOMERGROUPID,DESCRIPTION\n10,a\n"


def test_parse_batch_manifest():
    doc = {
        "items": [{"file": "a.zip"}, {"file": "b.csv", "entity": "Customer groups", "source_format": "CSV"}]
    }
    m = parse_batch_manifest(json.dumps(doc).encode("utf-8-sig"))
    assert [(i.file, i.is_package) for i in m.items] == [("a.zip", True), ("b.csv", False)]
    assert m.items[1].source_format == "CSV"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (b"{not json", "not UTF-8 JSON"),
        (b'{"items": []}', "items"),
        (b'{"items": [{"file": "../x.zip"}]}', "plain file name"),
        (b'{"items": [{"file": "dir/x.zip"}]}', "plain file name"),
        (b'{"items": [{"file": "a.zip"}, {"file": "A.ZIP"}]}', "listed twice"),
        (b'{"items": [{"file": "b.csv"}]}', "needs an entity"),
        (b'{"items": [{"file": "a.zip", "entitiy": "typo"}]}', "entitiy"),
        (b'{"items": [{"file": "a.zip"}]}' + b" " * 2_000_000, "limit"),
    ],
)
def test_bad_batch_manifests(doc, needle):
    with pytest.raises(BatchManifestError, match=needle) as e:
        parse_batch_manifest(doc)
    assert e.value.problem.code is Code.BAD_BATCH_MANIFEST


def test_natural_order():
    assert sorted(["p10.zip", "p2.zip", "P1.zip"], key=natural_key) == ["P1.zip", "p2.zip", "p10.zip"]


def test_batch_zip_in_natural_name_order_and_inner_packages_valid(tmp_path, catalogue):
    inner = {f"part{i}.zip": groups_package(tmp_path, CSV.replace("10", str(i)), name=f"in{i}.zip").read_bytes()
             for i in (10, 2, 1)}  # fmt: skip
    batch = make_zip(tmp_path / "batch.zip", {**inner, "readme.txt": b"hello", "__MACOSX/._part1.zip": b"x"})
    res = extract_batch_zip(batch, tmp_path / "x")
    assert res.ok, res.problems
    assert [e.name for e in res.entries] == ["part1.zip", "part2.zip", "part10.zip"]
    assert [e.path.name for e in res.entries] == ["0001.zip", "0002.zip", "0003.zip"]
    assert [p.code for p in res.problems] == [Code.UNREFERENCED_FILE]  # readme.txt, a warning
    assert res.errors == [] and res.packages == [e.path for e in res.entries]
    for e in res.entries:
        assert e.kind == "package" and e.sha256 == sha256_file(e.path) and e.bytes == e.path.stat().st_size
        assert inspect_package(e.path, catalogue=catalogue).ok


def test_batch_zip_with_manifest_sets_order_and_raw_items(tmp_path):
    pkg = groups_package(tmp_path, CSV).read_bytes()
    manifest = {"items": [{"file": "b.csv", "entity": "Customer groups"}, {"file": "a.zip"}]}
    batch = make_zip(tmp_path / "batch.zip", {"a.zip": pkg, "b.csv": CSV.encode(), "x.zip": pkg,
                                              "order.batch.json": json.dumps(manifest).encode()})  # fmt: skip
    res = extract_batch_zip(batch, tmp_path / "x")
    assert res.ok, res.problems
    assert [(e.name, e.kind, e.entity) for e in res.entries] == [("b.csv", "raw", "Customer groups"),
                                                                 ("a.zip", "package", None)]  # fmt: skip
    assert [p.code for p in res.problems] == [Code.UNREFERENCED_FILE]  # x.zip skipped, with a warning
    assert res.manifest is not None
    assert [p.name for p in res.packages] == ["0002.zip"]


def test_batch_zip_errors_leave_nothing_behind(tmp_path):
    pkg = groups_package(tmp_path, CSV).read_bytes()
    out = tmp_path / "x"
    missing = make_zip(tmp_path / "m.zip", {"a.zip": pkg, "o.batch.json": b'{"items": [{"file": "zz.zip"}]}'})
    assert [p.code for p in extract_batch_zip(missing, out).problems] == [Code.INPUT_FILE_MISSING,
                                                                          Code.UNREFERENCED_FILE]  # fmt: skip
    nested = make_zip(tmp_path / "n.zip", {"a.zip": pkg, "sub/b.zip": pkg, "../c.zip": pkg})
    assert {p.code for p in extract_batch_zip(nested, out).problems} == {
        Code.ZIP_NESTED_FOLDER,
        Code.PATH_TRAVERSAL,
    }
    bomb_inner = zip_bytes({"big.csv": b"0" * (8 * 1024 * 1024)})
    bomb = make_zip(tmp_path / "b.zip", {"a.zip": bomb_inner})
    # The inner zip itself is small, but limits hold for the batch and the archives in it together.
    res = extract_batch_zip(bomb, out, Limits(max_uncompressed_bytes=1024 * 1024))
    assert {p.code for p in res.problems} == {Code.ZIP_BOMB} and res.entries == []
    assert all(p.message.startswith("a.zip: ") for p in res.problems)
    big = make_zip(tmp_path / "big.zip", {"a.zip": pkg, "z.zip": b"0" * (4 * 1024 * 1024)})
    res = extract_batch_zip(big, out, Limits(max_ratio=50))
    assert [p.code for p in res.problems] == [Code.ZIP_BOMB] and res.entries == []
    not_zip = tmp_path / "nz.zip"
    not_zip.write_bytes(b"hello")
    assert [p.code for p in extract_batch_zip(not_zip, out).problems] == [Code.NOT_A_ZIP]
    assert [p.code for p in extract_batch_zip(make_zip(tmp_path / "e.zip", {"r.txt": b"x"}), out).problems] == [
        Code.UNREFERENCED_FILE, Code.EMPTY_PACKAGE]  # fmt: skip
    assert list(out.iterdir()) == []
