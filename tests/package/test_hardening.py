"""Issue #14, hardening: inputs from a hostile corpus, each scaled down through ``Limits`` so no test
writes more than a few MiB."""

from __future__ import annotations

import io
import json
import random
import re
import struct
import tracemalloc
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest

from dmf.package import inspect as inspect_mod
from dmf.package.batch import BatchManifestError, extract_batch_zip, parse_batch_manifest
from dmf.package.build import build_packages_from_raw
from dmf.package.catalogue import EntityInfo
from dmf.package.inspect import inspect_package
from dmf.package.limits import Limits
from dmf.package.problems import Code

from .conftest import csv_unicode, groups_package, header_bytes, make_zip, manifest_bytes

GOOD = "CUSTOMERGROUPID,DESCRIPTION\n10,Wholesale\n20,Retail\n"
GROUPS = EntityInfo("Customer groups", "CustCustomerGroupEntity", key_fields=("CUSTOMERGROUPID",),
                    fields=("CUSTOMERGROUPID", "DESCRIPTION"))  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


def errors(report) -> set[Code]:
    return {p.code for p in report.errors}


def package_files() -> dict[str, bytes]:
    return {
        "Manifest.xml": manifest_bytes([("Customer groups", "groups.csv", "CSV-Unicode",
                                         ["CUSTOMERGROUPID", "DESCRIPTION"])]),
        "PackageHeader.xml": header_bytes(),
        "groups.csv": csv_unicode(GOOD),
    }  # fmt: skip


def build(
    tmp_path: Path, data: bytes | io.RawIOBase, *, name: str = "groups.csv", limits: Limits | None = None
):
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    return build_packages_from_raw(src, file_name=name, entity=GROUPS, source_format="CSV-Unicode",  # type: ignore[arg-type]
                                   data_project="CG", limits=limits or Limits(), out_dir=tmp_path / "out")  # fmt: skip


# -- 1. zip bombs: every limit archive-wide and input-wide ------------------------------------------------


def test_many_small_unreferenced_entries_each_far_expanding_are_a_bomb(tmp_path):
    """300 entries of 64 KiB of zeros (each ~1,000×, all under the old 1 MiB floor of the ratio check) ride
    along unreferenced: they were only a warning, and F&O would have expanded them all."""
    pad = {f"pad{i:03d}.csv": b"0" * 65536 for i in range(300)}
    pkg = make_zip(tmp_path / "p.zip", {**package_files(), **pad})
    assert pkg.stat().st_size < 200_000
    rep = inspect_package(pkg)
    assert Code.ZIP_BOMB in errors(rep)
    assert rep.row_counts == {}  # nothing was decompressed


def test_an_entry_just_under_one_mib_is_ratio_checked(tmp_path):
    pkg = make_zip(tmp_path / "p.zip", {**package_files(), "pad.csv": b"0" * (1024 * 1024 - 1)})
    assert Code.ZIP_BOMB in errors(inspect_package(pkg))


def test_nested_archives_count_together_in_a_batch(tmp_path):
    """A batch of small packages, each within the limits on its own, that together pass them."""
    inner = make_zip(
        tmp_path / "inner.zip", {**package_files(), "notes.txt": bytes(range(256)) * 256}
    ).read_bytes()
    batch = make_zip(tmp_path / "b.zip", {f"p{i}.zip": inner for i in range(6)}, zipfile.ZIP_STORED)
    per_package = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(inner)).infolist())
    limits = Limits(max_uncompressed_bytes=per_package * 4)
    assert inspect_package(io.BytesIO(inner), limits=limits).ok  # each one alone is fine
    res = extract_batch_zip(batch, tmp_path / "x", limits)
    assert Code.ZIP_BOMB in {p.code for p in res.errors} and res.entries == []
    assert any("counting the archives inside it" in p.message for p in res.errors)
    # Entry counts add up across the batch and its packages the same way.
    res = extract_batch_zip(batch, tmp_path / "y", Limits(max_entries=20))
    assert Code.ZIP_TOO_MANY_ENTRIES in {p.code for p in res.errors}
    assert list((tmp_path / "x").iterdir()) == [] and list((tmp_path / "y").iterdir()) == []


def test_a_deflated_zip_of_deflated_zips_is_measured_against_the_input_size(tmp_path):
    """Each level alone stays under the ratio (~30×); multiplied across the nesting it does not (~900×)."""
    rnd = random.Random(7)
    block = bytes(rnd.randrange(256) for _ in range(1000))
    pad = {
        f"pad{i:02d}.bin": block * 40 for i in range(50)
    }  # identical streams: the outer zip compresses them
    inner = make_zip(tmp_path / "inner.zip", {**package_files(), **pad}).read_bytes()
    batch = make_zip(tmp_path / "b.zip", {f"p{i}.zip": inner for i in range(10)})
    limits = Limits(max_ratio=60)
    for level in (zipfile.ZipFile(batch), zipfile.ZipFile(io.BytesIO(inner))):
        assert max(i.file_size / i.compress_size for i in level.infolist()) < 40
    assert inspect_package(io.BytesIO(inner), limits=limits).ok  # each package alone is fine
    res = extract_batch_zip(batch, tmp_path / "x", limits)
    assert [p.code for p in res.errors] == [Code.ZIP_BOMB], res.problems
    assert "the input expands" in res.errors[0].message and res.entries == []


def test_entry_count_is_read_before_the_directory_is_loaded(tmp_path, monkeypatch):
    pkg = make_zip(tmp_path / "m.zip", {**package_files(), **{f"f{i}.csv": b"x" for i in range(30)}})

    def refuse(*a, **k):
        raise AssertionError("the central directory was loaded")

    monkeypatch.setattr(inspect_mod.zipfile, "ZipFile", refuse)
    rep = inspect_package(pkg, limits=Limits(max_entries=10))
    assert [p.code for p in rep.problems] == [Code.ZIP_TOO_MANY_ENTRIES]
    assert "33 entries (limit 10)" in rep.problems[0].message


def test_entry_names_longer_than_the_limit_are_rejected(tmp_path):
    long_name = "n" * 300 + ".csv"
    pkg = make_zip(tmp_path / "p.zip", {**package_files(), long_name: b"x"})
    rep = inspect_package(pkg)
    assert Code.NAME_TOO_LONG in errors(rep)
    assert "304 characters (limit 255)" in str(rep.problems)
    assert Code.NAME_TOO_LONG in errors(
        inspect_package(groups_package(tmp_path, GOOD), limits=Limits(max_name_chars=8))
    )


# -- 2. a batch manifest naming a batch manifest ---------------------------------------------------------


@pytest.mark.parametrize("file", ["run.batch.json", "Other.BATCH.json"])
def test_a_batch_manifest_cannot_name_a_batch_manifest(file):
    doc = {"items": [{"file": "a.zip"}, {"file": file, "entity": "Customer groups"}]}
    with pytest.raises(BatchManifestError, match="is a batch manifest") as e:
        parse_batch_manifest(json.dumps(doc).encode())
    assert e.value.problem.code is Code.BAD_BATCH_MANIFEST and file in str(e.value)


def test_a_batch_zip_whose_manifest_lists_itself_is_rejected(tmp_path):
    pkg = groups_package(tmp_path, GOOD).read_bytes()
    doc = {"items": [{"file": "a.zip"}, {"file": "order.batch.json", "entity": "Customer groups"}]}
    batch = make_zip(tmp_path / "b.zip", {"a.zip": pkg, "order.batch.json": json.dumps(doc).encode()})
    res = extract_batch_zip(batch, tmp_path / "x")
    assert [p.code for p in res.errors] == [Code.BAD_BATCH_MANIFEST] and res.entries == []
    assert "order.batch.json" in res.errors[0].message and "is a batch manifest" in res.errors[0].message


# -- 3. long names: never temp file names; over the limit, a clear reason ---------------------------------


def test_a_long_non_ascii_file_name_within_the_limit_builds(tmp_path):
    """250 characters, 500 bytes in UTF-8: too long for a file name on Linux, fine for F&O (NTFS)."""
    name = "é" * 250 + ".csv"
    res = build(tmp_path, GOOD.encode(), name=name)
    assert res.ok, res.problems
    assert [p.data_file for p in res.packages] == [name]
    assert all(name not in str(p.path) for p in res.packages)


def test_a_file_name_over_the_limit_is_refused_with_a_reason(tmp_path):
    res = build(tmp_path, GOOD.encode(), name="x" * 1000 + ".csv")
    assert [p.code for p in res.problems] == [Code.NAME_TOO_LONG] and res.packages == []
    assert "1004 characters (limit 255, FILE_NAME_MAX_CHARS)" in res.problems[0].message
    assert list((tmp_path / "out").iterdir()) == []


def test_batch_entries_are_extracted_under_positional_names(tmp_path):
    name = "é" * 240 + ".zip"
    batch = make_zip(tmp_path / "b.zip", {name: groups_package(tmp_path, GOOD).read_bytes()})
    res = extract_batch_zip(batch, tmp_path / "x", name="mine.zip")
    assert res.ok, res.problems
    assert [(e.name, e.path.name) for e in res.entries] == [(name, "0001.zip")]


def test_batch_messages_name_the_batch_not_the_temp_file(tmp_path):
    not_zip = tmp_path / "tmpq8v3k2x1.zip"
    not_zip.write_bytes(b"hello")
    [p] = extract_batch_zip(not_zip, tmp_path / "x", name="orders.zip").problems
    assert p.message == "orders.zip is not a zip archive"


# -- 4. only regular files ------------------------------------------------------------------------------


def _with_entry_mode(path: Path, files: dict[str, bytes], special: str, mode: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        info = zipfile.ZipInfo(special)
        info.create_system = 3
        info.external_attr = mode << 16
        zf.writestr(info, b"/etc/passwd")
    return path


@pytest.mark.parametrize(("mode", "kind"), [(0o120777, "symbolic link"), (0o020644, "character device"),
                                            (0o010644, "named pipe")])  # fmt: skip
def test_a_symbolic_link_or_device_entry_is_rejected(tmp_path, mode, kind):
    pkg = _with_entry_mode(tmp_path / "p.zip", package_files(), "link.csv", mode)
    rep = inspect_package(pkg)
    assert Code.ZIP_NOT_A_FILE in errors(rep)
    assert f"'link.csv' is a {kind}, not a regular file" in str(rep.problems)


def test_the_data_file_itself_as_a_link_is_rejected_and_batches_check_too(tmp_path):
    files = package_files()
    del files["groups.csv"]
    pkg = _with_entry_mode(tmp_path / "p.zip", files, "groups.csv", 0o120777)
    assert Code.ZIP_NOT_A_FILE in errors(inspect_package(pkg))
    good = groups_package(tmp_path, GOOD).read_bytes()
    batch = _with_entry_mode(tmp_path / "b.zip", {"a.zip": good}, "b.zip", 0o120777)
    assert Code.ZIP_NOT_A_FILE in {p.code for p in extract_batch_zip(batch, tmp_path / "x").errors}
    # Regular files written on Unix (mode 0o100644) or Windows (no mode bits) stay fine.
    assert inspect_package(_with_entry_mode(tmp_path / "r.zip", package_files(), "n.txt", 0o100644)).ok


# -- 5. no DTD in any XML from outside ------------------------------------------------------------------

_DOCTYPE = b'<!DOCTYPE DataManagementPackageManifest SYSTEM "http://attacker.example/x.dtd">'


def _with_doctype(xml: bytes) -> bytes:
    text = xml.decode("utf-16")
    return ("\ufeff" + _DOCTYPE.decode() + text.lstrip("\ufeff")).encode("utf-16-le")


@pytest.mark.parametrize(("member", "code"), [("Manifest.xml", Code.BAD_MANIFEST),
                                              ("PackageHeader.xml", Code.BAD_PACKAGE_HEADER)])  # fmt: skip
def test_a_doctype_with_an_external_identifier_is_rejected(tmp_path, member, code):
    files = package_files()
    files[member] = _with_doctype(files[member])
    rep = inspect_package(make_zip(tmp_path / "p.zip", files))
    assert code in errors(rep)
    assert "DTD" in str(rep.problems) and "attacker" not in str(rep.problems)


def _workbook_with_doctype(tmp_path: Path) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["CUSTOMERGROUPID", "DESCRIPTION"])
    ws.append(["10", "Wholesale"])
    plain = tmp_path / "plain.xlsx"
    wb.save(plain)
    out = io.BytesIO()
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = _DOCTYPE.replace(b"DataManagementPackageManifest", b"worksheet") + data
                assert b"<!DOCTYPE" in data
            dst.writestr(info.filename, data)
    return out.getvalue()


def test_a_workbook_with_a_doctype_is_rejected_raw_and_in_a_package(tmp_path):
    xlsx = _workbook_with_doctype(tmp_path)
    res = build_packages_from_raw(io.BytesIO(xlsx), file_name="groups.xlsx", entity=GROUPS, source_format="EXCEL",
                                  data_project="CG", limits=Limits(), out_dir=tmp_path / "out")  # fmt: skip
    assert Code.BAD_EXCEL in {p.code for p in res.problems} and res.packages == []
    assert "DTD" in str(res.problems)
    pkg = make_zip(tmp_path / "p.zip", {
        "Manifest.xml": manifest_bytes([("Customer groups", "g.xlsx", "EXCEL", ["CUSTOMERGROUPID", "DESCRIPTION"])]),
        "PackageHeader.xml": header_bytes(), "g.xlsx": xlsx,
    })  # fmt: skip
    rep = inspect_package(pkg)
    assert Code.BAD_EXCEL in errors(rep) and "DTD" in str(rep.problems)


# -- 6. bomb checks for input from outside only --------------------------------------------------------


def test_a_very_repetitive_raw_csv_builds_into_a_package_that_passes_its_own_validation(tmp_path):
    text = "CUSTOMERGROUPID,DESCRIPTION\n" + "".join(f"G{i:05d},{'same words ' * 300}\n" for i in range(300))
    res = build(tmp_path, text.encode())
    assert res.ok, res.problems
    [pkg] = res.packages
    with zipfile.ZipFile(pkg.path) as zf:
        info = zf.getinfo("groups.csv")
    assert info.file_size > 200 * info.compress_size  # a bomb by ratio, had it come from outside
    assert Code.ZIP_BOMB in errors(inspect_package(pkg.path))
    assert inspect_package(pkg.path, outside=False).ok


# -- 7. one source of truth for limit defaults ------------------------------------------------------------

# Setting → Limits field; docs/SETTINGS.md and docs/INBOUND.md ("Limits") must show the same defaults.
LIMIT_SETTINGS = {
    "PACKAGE_MAX_ROWS": "max_rows_per_package",
    "PACKAGE_MAX_BYTES": "max_bytes_per_package",
    "ZIP_MAX_UNCOMPRESSED_BYTES": "max_uncompressed_bytes",
    "ZIP_MAX_RATIO": "max_ratio",
    "ZIP_MAX_ENTRIES": "max_entries",
    "FILE_NAME_MAX_CHARS": "max_name_chars",
    "RECORD_MAX_CHARS": "max_record_chars",
    "INPUT_MAX_BYTES": "max_input_bytes",
    "PACKAGE_FILE_MAX_BYTES": "max_package_file_bytes",
}


def test_settings_defaults_are_the_limits_defaults():
    from dmf.pipeline.services import Services
    from dmf.settings import load_settings

    s = load_settings({"DATA_STORAGE": "UseDevelopmentStorage=true", "FNO_MAIN_BASE_URL": "https://x.example.com",
                       "FNO_MAIN_AUTH_MODE": "managed_identity"})  # fmt: skip
    assert Services(s).limits() == Limits()
    overridden = load_settings({"DATA_STORAGE": "UseDevelopmentStorage=true", "FNO_MAIN_BASE_URL": "https://x.example.com",
                                "FNO_MAIN_AUTH_MODE": "managed_identity", **{k: "4096" for k in LIMIT_SETTINGS}})  # fmt: skip
    limits = Services(overridden).limits()
    assert all(getattr(limits, f) == 4096 for f in LIMIT_SETTINGS.values())
    assert set(LIMIT_SETTINGS.values()) <= {f.name for f in fields(Limits)}


def _number(text: str) -> float:
    text = text.strip("` ").replace(",", "")
    m = re.fullmatch(r"([\d.]+)\s*(GiB|MiB)?", text)
    assert m, text
    return float(m.group(1)) * {"GiB": 2**30, "MiB": 2**20, None: 1}[m.group(2)]


def test_docs_show_the_limits_defaults():
    settings_doc = (REPO / "docs" / "SETTINGS.md").read_text()
    inbound_doc = (REPO / "docs" / "INBOUND.md").read_text()
    limits_table = inbound_doc.split("## Limits", 1)[1].split("\n## ", 1)[0]
    for setting, field in LIMIT_SETTINGS.items():
        default = getattr(Limits(), field)
        row = re.search(rf"^\| `{setting}` \|.*$", settings_doc, re.M)
        assert row, setting
        assert _number(row.group(0).split("|")[3]) == default, (setting, row.group(0))
        row = re.search(rf"^\|[^|\n]*\| `{setting}`[^|\n]*\|([^|\n]*)\|.*$", limits_table, re.M)
        assert row, f"{setting} missing from the Limits table in docs/INBOUND.md"
        assert _number(row.group(1)) == default, (setting, row.group(0))


# -- 8. record length ----------------------------------------------------------------------------------


def test_a_record_over_the_limit_is_refused_naming_the_row(tmp_path):
    text = "CUSTOMERGROUPID,DESCRIPTION\n10,a\n20," + "y" * 5000 + "\n30,c\n"
    res = build(tmp_path, text.encode(), limits=Limits(max_record_chars=1000))
    assert [p.code for p in res.problems] == [Code.RECORD_TOO_LONG] and res.packages == []
    assert res.problems[0].row == 3 and "row 3 is longer than 1000 characters" in res.problems[0].message
    assert build(tmp_path, text.encode(), limits=Limits(max_record_chars=6000)).ok
    # A quoted field spanning lines counts as one record.
    quoted = 'CUSTOMERGROUPID,DESCRIPTION\n10,"' + "z\n" * 800 + '"\n'
    res = build(tmp_path, quoted.encode(), limits=Limits(max_record_chars=1000))
    assert [(p.code, p.row) for p in res.problems] == [(Code.RECORD_TOO_LONG, 2)]


def test_inspect_refuses_a_record_over_the_limit_naming_the_row(tmp_path):
    text = "CUSTOMERGROUPID,DESCRIPTION\r\n10,a\r\n20,b\r\n30," + "y" * 5000 + "\r\n"
    pkg = groups_package(tmp_path, "", raw=b"\xff\xfe" + text.encode("utf-16-le"))
    rep = inspect_package(pkg, limits=Limits(max_record_chars=1000))
    assert [(p.code, p.row) for p in rep.problems] == [(Code.RECORD_TOO_LONG, 4)]
    assert "row 4 is longer than 1000 characters" in rep.problems[0].message
    assert inspect_package(pkg).ok


class _EndlessLine(io.RawIOBase):
    """A header, then one line that never ends: only a streaming reader can answer at all."""

    def __init__(self) -> None:
        self.read_bytes = 0
        self.first = True

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        chunk = b"CUSTOMERGROUPID,DESCRIPTION\n10," if self.first else b"x" * len(b)
        self.first = False
        n = min(len(b), len(chunk))
        b[:n] = chunk[:n]
        self.read_bytes += n
        return n


def test_an_endless_line_stops_after_about_the_limit_with_bounded_memory(tmp_path):
    src = _EndlessLine()
    tracemalloc.start()
    try:
        res = build(tmp_path, io.BufferedReader(src), limits=Limits(max_record_chars=100_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(p.code, p.row) for p in res.problems] == [(Code.RECORD_TOO_LONG, 2)]
    assert src.read_bytes < 4 * 2**20
    assert peak < 16 * 2**20


# -- 13. shared samples are found beside the checkout only ------------------------------------------------


@pytest.mark.parametrize("path", ["tests/package/conftest.py", "tests/emulator/test_samples.py",
                                  "local/fno_emulator/README.md"])  # fmt: skip
def test_shared_files_are_found_relative_to_the_checkout(path):
    text = (REPO / path).read_text()
    assert "/work/shared" not in text and "/work/" not in text


def test_a_long_record_within_a_raised_limit_survives_redelimiting(tmp_path):
    """Records are checked once, against RECORD_MAX_CHARS; rewriting ``;`` as ``,`` must not re-limit them."""
    wide = "w" * 1_200_000
    text = f"CUSTOMERGROUPID;DESCRIPTION\n10;{wide}\n20;b\n"
    res = build_packages_from_raw(io.BytesIO(text.encode()), file_name="groups.csv", entity=GROUPS,
                                  source_format="CSV-UTF8", data_project="CG", input_delimiter=";",
                                  limits=Limits(max_record_chars=2_000_000), out_dir=tmp_path / "out")  # fmt: skip
    assert res.ok, res.problems
    assert res.packages[0].rows == 2


def test_a_quoted_key_field_over_128_kib_is_read_not_a_crash(tmp_path, catalogue):
    """The csv module's own field limit (128 KiB) raised out of validation; the record limit rules instead."""
    rnd = random.Random(3)
    key = "".join(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(200_000))
    text = f'CUSTOMERGROUPID,DESCRIPTION\r\n"{key}",a\r\n"{key}",b\r\n'
    pkg = groups_package(tmp_path, "", raw=b"\xff\xfe" + text.encode("utf-16-le"))
    rep = inspect_package(pkg, catalogue=catalogue)
    assert [(p.code, p.row) for p in rep.errors] == [(Code.DUPLICATE_KEY, 3)]


def _patch_declared_size(path: Path, entry: str, size: int) -> None:
    """Make the central directory and local header of ``entry`` declare ``size`` uncompressed bytes."""
    data = bytearray(path.read_bytes())
    name = entry.encode()
    cd = data.rfind(b"PK\x01\x02", 0, data.rfind(name) + 1)
    struct.pack_into("<I", data, cd + 24, size)
    lh = data.find(name) - 30  # the local header (written first) ends with the name
    assert data[lh : lh + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, lh + 22, size)
    path.write_bytes(bytes(data))


def test_an_unreferenced_entry_whose_headers_understate_its_size_is_caught(tmp_path):
    """Headers say 1,000 bytes (ratio < 1); it really expands to 8 MiB. Nothing read it before, and F&O would."""
    pkg = make_zip(tmp_path / "p.zip", {**package_files(), "pad.bin": b"0" * (8 * 2**20)})
    _patch_declared_size(pkg, "pad.bin", 1000)
    info = zipfile.ZipFile(pkg).getinfo("pad.bin")
    assert info.file_size == 1000 and info.compress_size > 1000
    rep = inspect_package(pkg)
    assert errors(rep) & {Code.ZIP_BOMB, Code.ZIP_CORRUPT}, rep.problems
    assert any(p.file == "pad.bin" for p in rep.errors)


def test_a_damaged_deflate_stream_is_reported_not_raised(tmp_path):
    rnd = random.Random(5)
    body = "".join(f"{rnd.randrange(10**9)},{rnd.randrange(10**9)}\n" for _ in range(5000))
    pkg = groups_package(tmp_path, "CUSTOMERGROUPID,DESCRIPTION\n" + body)
    data = bytearray(pkg.read_bytes())
    start = data.find(b"groups.csv") + len(b"groups.csv")  # first local header's name, then the stream
    for k in range(start + 200, start + 260):
        data[k] ^= 0x5A
    pkg.write_bytes(bytes(data))
    rep = inspect_package(pkg)
    assert [p.code for p in rep.errors] == [Code.ZIP_CORRUPT], rep.problems
