"""``check`` and ``build`` run the pipeline's own build and validation on local files: what ``check`` says
about a file is what the app says when the same bytes are dropped on the embedded stack, and a package that
``build`` writes imports into the F&O emulator."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from tests.e2e_support import Stack, customer_groups_csv, customer_groups_package

PROJECT = "USMF/CustomerGroups-Import"


def _zip(parts: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_check_finds_what_the_pipeline_rejects(stack: Stack, cli, tmp_path: Path) -> None:
    dup = tmp_path / "dup.csv"
    dup.write_bytes(customer_groups_csv(["A1", "A2", "a1"]))  # keys compare case-insensitively, as in F&O
    r = cli(None, "check", str(dup), "--as", f"{PROJECT}/Customer groups__dup.csv")
    assert r.rc == 1 and r.out.startswith("FAILED: dup.csv (route convention; legal entity USMF")
    assert "DUPLICATE_KEY" in r.out and "row 4 repeats the key of row 2" in r.out
    (problem,) = cli(None, "check", str(dup), "--entity", "Customer groups", "--json").json()["items"][0][
        "problems"
    ]
    assert problem["code"] == "DUPLICATE_KEY" and problem["row"] == 4 and problem["severity"] == "error"

    no_manifest = tmp_path / "loose.zip"
    no_manifest.write_bytes(_zip({"Customer groups.csv": customer_groups_csv(["Z1"])}))
    r = cli(None, "check", str(no_manifest), "--json")
    assert r.rc == 1
    errors = {p["code"]: p for p in r.json()["items"][0]["problems"] if p["severity"] == "error"}
    assert set(errors) == {"MISSING_MANIFEST", "MISSING_PACKAGE_HEADER"}
    missing = errors["MISSING_MANIFEST"]

    # The app, given the same bytes, rejects both drops for the same reasons.
    stack.drop(f"{PROJECT}/Customer groups__dup.csv", dup.read_bytes())
    stack.drop(f"{PROJECT}/loose.zip", no_manifest.read_bytes())
    stack.settle()
    assert stack.drop_row("Customer groups__dup.csv")["Status"] == "Rejected"
    assert problem["message"] in stack.drop_row("Customer groups__dup.csv")["Reason"]
    assert stack.drop_row("loose.zip")["Status"] == "Rejected"
    assert missing["message"] in stack.drop_row("loose.zip")["Reason"]
    assert stack.import_calls() == []

    # A batch zip: each item checked as the pipeline unpacks and prepares it.
    batch = tmp_path / "two.zip"
    batch.write_bytes(
        _zip({"1-good.zip": customer_groups_package(["G1"]), "2-broken.zip": b"not a zip at all"})
    )
    r = cli(None, "check", str(batch), "--json")
    items = r.json()["items"]
    assert r.rc == 1 and [i["name"] for i in items] == ["1-good.zip", "2-broken.zip"]
    assert items[0]["ok"] and items[0]["packages"] == [{"rows": 1, "entities": ["Customer groups"]}]
    assert not items[1]["ok"] and items[1]["problems"][0]["code"] == "NOT_A_ZIP"

    good = tmp_path / "Customer groups.csv"
    good.write_bytes(customer_groups_csv(["A1", "A2"]))
    r = cli(None, "check", str(good))
    assert r.rc == 0 and "OK: Customer groups.csv" in r.out and "package 1: 2 rows, Customer groups" in r.out
    assert cli(None, "check", str(tmp_path / "absent.csv")).rc == 2


def test_check_with_a_named_route(cli, tmp_path: Path, monkeypatch) -> None:
    routes = {
        "version": 1,
        "routes": [
            {"name": "cg-by-company", "pattern": "customer-groups/*/*.csv", "legal_entity_segment": 1,
             "data_project": "CustomerGroups-Import", "entity": "Customer groups", "max_rows_per_package": 2}
        ],
    }  # fmt: skip
    monkeypatch.setenv("ROUTES_JSON", json.dumps(routes))
    f = tmp_path / "groups.csv"
    f.write_bytes(customer_groups_csv(["R1", "R2", "R3"]))
    r = cli(None, "check", str(f), "--route", "cg-by-company", "--as", "customer-groups/usrt/groups.csv")
    assert r.rc == 0, r.err
    assert "route cg-by-company; legal entity USRT; data project CustomerGroups-Import" in r.out
    # The route's max_rows_per_package applies: two packages, as the pipeline would stage.
    assert "package 1: 2 rows" in r.out and "package 2: 1 rows" in r.out
    r = cli(None, "check", str(f), "--route", "cg-by-company")
    assert r.rc == 2 and "legal_entity_segment=1" in r.err
    r = cli(None, "check", str(f), "--route", "nope")
    assert r.rc == 2 and "no route named 'nope'" in r.err


def test_build_writes_a_package_that_imports(stack: Stack, cli, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "groups.csv"
    src.write_bytes(customer_groups_csv(["B1", "B2"], newline="\n"))  # LF: build makes it CRLF
    out = tmp_path / "out" / "pkg.zip"
    r = cli(None, "build", str(src), "--entity", "Customer groups", "--project", "CustomerGroups-Import",
            "-o", str(out), "--json")  # fmt: skip
    assert r.rc == 0, r.err
    assert r.json()["packages"] == [{"path": str(out), "rows": 2, "bytes": out.stat().st_size}]
    assert r.err == ""  # no progress line: stderr is not a terminal and --progress was not given
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["Manifest.xml", "PackageHeader.xml", "groups.csv"]
        assert "CustomerGroups-Import" in zf.read("Manifest.xml").decode("utf-16")
    assert cli(None, "check", str(out)).rc == 0
    stack.drop(f"{PROJECT}/built.zip", out.read_bytes())
    stack.settle()
    assert stack.drop_row("built.zip")["Status"] == "Succeeded"
    assert {x["CUSTOMERGROUPID"] for x in stack.emu.admin.data("USMF", "Customer groups")} == {"B1", "B2"}

    again = cli(None, "build", str(src), "--entity", "Customer groups", "-o", str(out))
    assert again.rc == 2 and "exists" in again.err
    r = cli(None, "build", str(src), "--entity", "Customer groups", "-o", str(out), "--force", "--progress")
    assert r.rc == 0 and f"wrote {out}: 2 rows" in r.out
    assert "building and checking groups.csv" in r.err  # the progress line, asked for

    # Bad input: nothing written, the problem listed with its row.
    dup = tmp_path / "dup.csv"
    dup.write_bytes(customer_groups_csv(["D1", "D1"]))
    r = cli(None, "build", str(dup), "--entity", "Customer groups", "-o", str(tmp_path / "dup.zip"))
    assert r.rc == 1 and "DUPLICATE_KEY" in r.out and not (tmp_path / "dup.zip").exists()
    # Over PACKAGE_MAX_ROWS: parts beside -o, as the pipeline splits.
    monkeypatch.setenv("PACKAGE_MAX_ROWS", "2")
    many = tmp_path / "many.csv"
    many.write_bytes(customer_groups_csv([f"M{i}" for i in range(5)]))
    r = cli(None, "build", str(many), "--entity", "Customer groups", "-o", str(tmp_path / "m.zip"), "--json")
    assert r.rc == 0, r.err
    assert [(Path(p["path"]).name, p["rows"]) for p in r.json()["packages"]] == [
        ("m-part001.zip", 2), ("m-part002.zip", 2), ("m-part003.zip", 1)
    ]  # fmt: skip
    assert cli(None, "build", str(out), "--entity", "Customer groups", "-o", str(tmp_path / "x.zip")).rc == 2
    assert cli(None, "build", str(src), "-o", str(tmp_path / "x.zip")).rc == 2  # --entity is required


def test_check_a_batch_with_a_raw_member_as_the_pipeline_builds_it(stack: Stack, cli, tmp_path: Path) -> None:
    xml = (
        b'<?xml version="1.0" encoding="utf-8"?><Document><CUSTCUSTOMERGROUPENTITY>'
        b"<CUSTOMERGROUPID>Q1</CUSTOMERGROUPID><DESCRIPTION>q</DESCRIPTION><PAYMENTTERMID>Net30</PAYMENTTERMID>"
        b"</CUSTCUSTOMERGROUPENTITY></Document>"
    )
    order = {"items": [{"file": "groups.xml", "entity": "Customer groups"}, {"file": "pkg.zip"}]}
    batch = tmp_path / "mixed.zip"
    batch.write_bytes(
        _zip(
            {
                "order.batch.json": json.dumps(order).encode(),
                "groups.xml": xml,
                "pkg.zip": customer_groups_package(["P1"]),
            }
        )
    )
    r = cli(None, "check", str(batch), "--json")
    assert r.rc == 0, r.out
    items = r.json()["items"]
    assert [(i["name"], i["packages"][0]["rows"]) for i in items] == [("groups.xml", 1), ("pkg.zip", 1)]
    stack.drop(f"{PROJECT}/mixed.zip", batch.read_bytes())
    stack.settle()
    assert stack.drop_row("mixed.zip")["Status"] == "Succeeded"
    assert {x["CUSTOMERGROUPID"] for x in stack.emu.admin.data("USMF", "Customer groups")} == {"Q1", "P1"}
