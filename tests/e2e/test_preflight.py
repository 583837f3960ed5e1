"""Pre-flight (issue #12) end to end on the embedded stack: Azurite + the F&O emulator + the app under the local
runner. The snapshot is taken through the operator route (``POST /api/metadata/refresh``) from the emulator's
metadata service. Then, per kind of problem: with ``preflight: enforce`` the drop is Rejected with row and
column named and F&O is not called at all; the same file fixed imports; and with ``preflight: off`` the
emulator refuses the same bad data (the prediction is right)."""

from __future__ import annotations

import io
import json
import re
import urllib.request
import zipfile

import openpyxl
import pytest

from local.fno_emulator import EmulatorConfig
from local.fno_emulator.config import CatalogueEntity, DataProject, EntityField, ProjectEntity
from tests.e2e_support import Stack

LABEL = "Preflight items"
HEADER = ["ITEMID", "QTY", "PRICE", "VALIDFROM", "STAMP", "ACTIVE", "KIND", "NOTE"]
GOOD = ["A1", "5", "1.5", "2026-11-01", "2026-11-01T10:00:00", "Yes", "Service", "fine"]


def _config() -> EmulatorConfig:
    cfg = EmulatorConfig()
    cfg.catalogue.append(
        CatalogueEntity(
            label=LABEL,
            target_entity="PreflightItemEntity",
            keys=["ITEMID"],
            fields=[
                EntityField(name="ITEMID", max_length=10),
                EntityField(name="QTY", type="int"),
                EntityField(name="PRICE", type="decimal"),
                EntityField(name="VALIDFROM", type="date", mandatory=True),
                EntityField(name="STAMP", type="datetime"),
                EntityField(name="ACTIVE", type="enum", values=["No", "Yes"]),
                EntityField(name="KIND", type="enum", values=["Standard", "Service"]),
                EntityField(name="NOTE", max_length=60),
            ],
        )
    )
    cfg.data_projects.append(DataProject(name="Items-Import", entities=[ProjectEntity(entity=LABEL)]))
    cfg.metadata_page_size = 3  # the collections come in pages: the client must follow @odata.nextLink
    return cfg


def _route(name: str, folder: str, **kw: object) -> dict:
    return {"name": name, "pattern": f"{folder}/*", "data_project": "Items-Import", "legal_entity": "USMF",
            "entity": LABEL, **kw}  # fmt: skip


ROUTES = {
    "version": 2,
    "routes": [
        _route("enforce", "enforce", preflight="enforce", xlsx_as="excel", xlsx_formulas="reject"),
        _route("off", "off", preflight="off", xlsx_as="excel"),
        _route("unknown-enforce", "unknown-enforce", preflight="enforce", entity="Preflight itemz"),
        _route("unknown-off", "unknown-off", preflight="off", entity="Preflight itemz"),
        _route("tocsv", "tocsv", preflight="enforce"),  # version 2: xlsx_as csv by default
    ],
}


def _csv(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    return ("\r\n".join(",".join(r) for r in [header, *rows]) + "\r\n").encode("utf-8")


def _with(col: str, value: str, header: list[str] = HEADER) -> list[str]:
    row = dict(zip(HEADER, GOOD, strict=True))
    row[col] = value
    return [row.get(h, "x") for h in header]


# name -> (bad file, fixed file, code, row, column)
def _cases() -> dict[str, tuple[bytes, bytes, str, int, str]]:
    ok2 = ["A2", *GOOD[1:]]
    cases: dict[str, tuple[bytes, bytes, str, int, str]] = {}
    for col, bad, code in (
        ("QTY", "12x", "BAD_VALUE"),
        ("PRICE", "1.2.3", "BAD_VALUE"),
        ("VALIDFROM", "31/12/2026", "BAD_VALUE"),
        ("STAMP", "yesterday", "BAD_VALUE"),
        ("ACTIVE", "Maybe", "BAD_VALUE"),
        ("KIND", "Goods", "BAD_VALUE"),
        ("NOTE", "n" * 61, "VALUE_TOO_LONG"),
        ("VALIDFROM", "", "MANDATORY_MISSING"),
    ):
        key = f"{col.lower()}-{code.lower()}"
        cases[key] = (_csv([ok2, _with(col, bad)]), _csv([ok2, GOOD]), code, 3, col)
    extra = [*HEADER, "COLOUR"]
    cases["unknown-column"] = (
        _csv([[*ok2, "red"], [*GOOD, "blue"]], extra),
        _csv([ok2, GOOD]),
        "UNKNOWN_FIELD",
        1,
        "COLOUR",
    )
    no_date = [h for h in HEADER if h != "VALIDFROM"]
    cases["mandatory-column"] = (
        _csv([[v for h, v in zip(HEADER, r, strict=True) if h != "VALIDFROM"] for r in (ok2, GOOD)], no_date),
        _csv([ok2, GOOD]),
        "MANDATORY_MISSING",
        1,
        "VALIDFROM",
    )
    return cases


def _xlsx(rows: list[list[object]], formula: tuple[str, str] | None = None) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    data = buf.getvalue()
    if formula is None:
        return data
    # openpyxl saves no value for a formula; give the cell one, as Excel does.
    cell, cached = formula
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            body = zin.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                body = re.sub(
                    rf'(<c r="{cell}"[^>]*>)<f>([^<]*)</f><v\s*/?>(</v>)?'.encode(),
                    rb"\1<f>\2</f><v>" + cached.encode() + b"</v>",
                    body,
                )
                assert cached.encode() in body
            zout.writestr(item, body)
    return out.getvalue()


def _xrow(**over: object) -> list[object]:
    from datetime import datetime

    row: dict[str, object] = dict(zip(HEADER, GOOD, strict=True))
    row.update(QTY=5, PRICE=1.5, VALIDFROM=datetime(2026, 11, 1), STAMP=datetime(2026, 11, 1, 10, 0))
    row.update(over)
    return [row[h] for h in HEADER]


def _refresh(stack: Stack) -> dict:
    req = urllib.request.Request(
        f"{stack.runner.http_base_url}/api/metadata/refresh",
        data=b'{"environment": "main"}',
        method="POST",
        headers={"x-functions-key": stack.runner.function_key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200
        return json.loads(r.read())


@pytest.fixture
def stack(azurite, unique_name):
    with Stack(azurite, unique_name, emulator_config=_config(), ROUTES_JSON=json.dumps(ROUTES)) as s:
        yield s
    assert s.loop_blocks == [], "client functions blocked the event loop"


def test_each_preflight_kind_is_rejected_before_fno_the_fixed_file_imports_and_fno_agrees(
    stack: Stack,
) -> None:
    # The operator route takes the snapshot; the unknown label is remembered as unknown.
    (snap,) = _refresh(stack)["snapshots"]
    assert LABEL in snap["entities"] and "Preflight itemz" in snap["unknown"], snap
    md_calls = [c for c in stack.emu.admin.calls() if c["endpoint"] == "metadata"]
    assert len(md_calls) >= 3  # pages of DataEntities (page size 3), the target map, PublicEntities, enums
    seen_before = len(stack.emu.admin.calls())

    cases = _cases()
    xlsx_bad = {
        "formula": (
            _xlsx([HEADER, _xrow(ITEMID="A2"), _xrow(QTY="=2+3")], ("B3", "5")),
            "EXCEL_FORMULA",
            3,
            "QTY",
        ),
        "serial": (
            _xlsx([HEADER, _xrow(ITEMID="A2"), _xrow(VALIDFROM=46000)]),
            "EXCEL_SERIAL_DATE",
            3,
            "VALIDFROM",
        ),
        "dummy": (_xlsx([HEADER, _xrow(ITEMID="A2"), _xrow(NOTE="x" * 300)]), "EXCEL_DUMMY_TEXT", 3, "NOTE"),
    }
    for name, (bad, _, _, _, _) in cases.items():
        stack.drop(f"enforce/{name}.csv", bad)
    for name, (bad, *_) in xlsx_bad.items():
        stack.drop(f"enforce/{name}.xlsx", bad)
    stack.drop("unknown-enforce/items.csv", _csv([GOOD]))
    stack.settle()

    # Nothing reached F&O: not even the metadata service (the snapshot knew every label).
    assert stack.emu.admin.calls()[seen_before:] == []
    for name, (_, _, code, row, column) in cases.items():
        r = stack.drop_row(f"{name}.csv")
        assert r["Status"] == "Rejected", (name, r)
        assert code in r["Reason"] and f"row {row}" in r["Reason"] and f"column {column}" in r["Reason"], (
            name,
            r["Reason"],
        )
        reason = stack.container("REJECTED_CONTAINER").get_blob_client(f"enforce/{name}.csv.reason.txt")
        assert f"row {row}, column {column}" in reason.download_blob().readall().decode("utf-8")
    for name, (_, code, row, column) in xlsx_bad.items():
        r = stack.drop_row(f"{name}.xlsx")
        assert r["Status"] == "Rejected" and code in r["Reason"], (name, r)
        assert f"row {row}, column {column}" in r["Reason"], r["Reason"]
    unknown = stack.drop_row("items.csv")
    assert unknown["Status"] == "Rejected" and "UNKNOWN_ENTITY" in unknown["Reason"]
    assert "did you mean 'Preflight items'" in unknown["Reason"], unknown["Reason"]

    # The same files fixed import; the same bad files with pre-flight off are refused by F&O (the emulator).
    for i, (name, (bad, fixed, *_)) in enumerate(cases.items()):
        stack.drop(f"enforce/{name}-fixed.csv", fixed.replace(b"A1,", f"F{i},".encode(), 1))  # no duplicates
        stack.drop(f"off/{name}.csv", bad)
    for name, (bad, *_) in xlsx_bad.items():
        stack.drop(f"off/{name}.xlsx", bad)
    stack.drop("unknown-off/items.csv", _csv([GOOD]))
    # XLSX as CSV: serial dates converted, numbers in text fields imported with a warning.
    stack.drop("tocsv/serial.xlsx", _xlsx([HEADER, _xrow(ITEMID="S1", VALIDFROM=46000)]))
    stack.drop("tocsv/numbers.xlsx", _xlsx([HEADER, _xrow(ITEMID=123, NOTE=7)]))
    stack.settle(timeout=600)

    for name in cases:
        assert stack.drop_row(f"{name}-fixed.csv")["Status"] == "Succeeded", name
    for name, (_, _, _, _, column) in cases.items():
        rows = [r for r in stack.drops() if r.get("SourceBlob", "").endswith(f"off/{name}.csv")]
        (r,) = rows
        assert r["Status"] in ("Failed", "PartiallySucceeded"), (name, r)
        text = (r.get("Reason") or "") + " " + (r.get("ErrorSummary") or "")
        assert column in text.upper(), (name, text)
    for name in xlsx_bad:
        (r,) = [r for r in stack.drops() if r.get("SourceBlob", "").endswith(f"off/{name}.xlsx")]
        assert r["Status"] in ("Failed", "PartiallySucceeded"), (name, r)
    (r,) = [r for r in stack.drops() if r.get("SourceBlob", "").endswith("unknown-off/items.csv")]
    assert r["Status"] in ("Failed", "Rejected") and "does not exist" in (
        (r.get("Reason") or "") + (r.get("ErrorSummary") or "")
    ), r
    serial = next(r for r in stack.drops() if r.get("SourceBlob", "").endswith("tocsv/serial.xlsx"))
    assert serial["Status"] == "Succeeded", serial
    numbers = next(r for r in stack.drops() if r.get("SourceBlob", "").endswith("tocsv/numbers.xlsx"))
    assert numbers["Status"] == "Succeeded", numbers
    warn = numbers.get("PreflightWarnings") or ""
    assert "EXCEL_NUMBER_AS_TEXT" in warn and "column ITEMID" in warn and warn.startswith("item 1: "), numbers
    stored = {r["ITEMID"]: r for r in stack.emu.admin.data("USMF", LABEL)}
    assert stored["S1"]["VALIDFROM"] == "2025-12-09"  # Excel serial 46000
    assert "123" in stored
