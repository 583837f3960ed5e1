"""Pre-flight of delimited files: the fast paths (one regex per run of records, C-level column scans) find
exactly what the row-by-row checks find, on random good and bad values, in any chunking of the input."""

from __future__ import annotations

import io
import random

import pytest

from dmf.fno.metadata import EntityMeta, FieldMeta, Snapshot
from dmf.package import preflight as pf
from dmf.package.preflight import PreflightOptions, preflight_delimited


def _snapshot() -> Snapshot:
    snap = Snapshot("test", "2026-11-29T00:00:00+00:00")
    snap.enums["NoYes"] = [("No", 0), ("Yes", 1)]
    fields = [
        FieldMeta("ID", "string", True, True, 8),
        FieldMeta("NAME", "string", False, False, 12),
        FieldMeta("QTY", "int"),
        FieldMeta("PRICE", "real", True),
        FieldMeta("DAY", "date"),
        FieldMeta("AT", "datetime"),
        FieldMeta("ACTIVE", "enum", enum="NoYes"),
        FieldMeta("REF", "guid"),
        FieldMeta("FREE", "string"),
    ]
    snap.entities["things"] = EntityMeta(
        "Things", "ThingEntity", "Thing", "Things", {f.staging: f for f in fields}
    )
    return snap


GOOD = {
    "ID": ["A1", "B22", '"Q 7"', "ZZZZZZZZ"],
    "NAME": ["", "x", '"a, b"', "twelve chars"],
    "QTY": ["", "0", "42", "-3", " 7"],
    "PRICE": ["1", "1.5", "0.25", "5.", "-2.5", "1e3"],
    "DAY": ["", "2024-02-29", "2026-12-31", "1999-01-01"],
    "AT": ["", "2026-11-01T10:00:00", "2026-11-01T10:00:00Z", "2026-11-01 10:00"],
    "ACTIVE": ["", "Yes", "no", "1"],
    "REF": ["", "0f8fad5b-d9cb-469f-a165-70867728950e", "{0f8fad5b-d9cb-469f-a165-70867728950e}"],
    "FREE": ["", "anything", '"multi""quote"', '"line\nbreak"'],
}
BAD = {
    "ID": ["", "   ", "NINECHARS"],
    "NAME": ["thirteen char"],
    "QTY": ["1.5", "x", "1 2"],
    "PRICE": ["", "1.2.3", "abc", "."],
    "DAY": ["2023-02-29", "2026-13-01", "31/12/2026", "0000-01-01"],
    "AT": ["yesterday", "2026-11-01T25:00:00"],
    "ACTIVE": ["Maybe", "2"],
    "REF": ["not-a-guid"],
    "FREE": [],
}
COLS = list(GOOD)


class _Trickle(io.BytesIO):
    """Answers every read with at most ``step`` bytes: runs of records end inside quotes and lines."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def read(self, n: int | None = -1) -> bytes:
        return super().read(self.step if n is None or n < 0 else min(n, self.step))


def _file(rnd: random.Random, rows: int, bad_rate: float) -> bytes:
    lines = [",".join(COLS)]
    for _ in range(rows):
        vals = []
        for c in COLS:
            pool = BAD[c] if BAD[c] and rnd.random() < bad_rate else GOOD[c]
            vals.append(rnd.choice(pool))
        lines.append(",".join(vals))
    if rnd.random() < 0.3:
        lines.insert(rnd.randint(1, len(lines)), "")  # a blank line is not a record
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _run(
    data: bytes, *, fast: bool, monkeypatch: pytest.MonkeyPatch, step: int = 1 << 20, max_listed: int = 10_000
):
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(pf, "fast_rows", lambda *a: None)
            m.setattr(pf, "_columns_fast", lambda *a: None)
            m.setattr(pf.ColumnCheck, "batch_ok", lambda self, col: False)
        r = preflight_delimited(
            _Trickle(data, step),
            snapshot=_snapshot(),
            label="Things",
            delimiter=",",
            opts=PreflightOptions(mode="enforce", max_listed=max_listed),
            file_name="t.csv",
            max_record_chars=1 << 20,
        )
    return r.rows, r.counts, [(p.code, p.row, p.message) for p in r.problems]


@pytest.mark.parametrize("seed", range(12))
def test_fast_paths_agree_with_the_row_by_row_checks(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(seed)
    rows = rnd.choice([5, 300, 3000])
    data = _file(rnd, rows, rnd.choice([0.0, 0.001, 0.05, 0.5]))
    step = rnd.choice([7, 64, 4096, 1 << 20])
    fast = _run(data, fast=True, monkeypatch=monkeypatch, step=step)
    slow = _run(data, fast=False, monkeypatch=monkeypatch, step=step)
    assert fast == slow
    assert fast[0] == rows


def test_every_bad_value_is_named_by_row_and_column(monkeypatch: pytest.MonkeyPatch) -> None:
    for col, values in BAD.items():
        for v in values:
            good = [GOOD[c][1] if c != col else v for c in COLS]
            data = (
                "\r\n".join([",".join(COLS), ",".join(GOOD[c][1] for c in COLS), ",".join(good)]) + "\r\n"
            ).encode()
            rows, _counts, problems = _run(data, fast=True, monkeypatch=monkeypatch)
            assert rows == 2 and len(problems) == 1, (col, v, problems)
            _code, row, msg = problems[0]
            assert row == 3 and f"column {col}" in msg, (col, v, msg)
    for col, values in GOOD.items():
        for v in values:
            good = [GOOD[c][1] if c != col else v for c in COLS]
            data = ("\r\n".join([",".join(COLS), ",".join(good)]) + "\r\n").encode()
            assert _run(data, fast=True, monkeypatch=monkeypatch)[2] == [], (col, v)


def test_a_package_member_is_checked_through_its_entity_map() -> None:
    """``preflight_member`` (the pipeline's and the CLI's one path for data files inside a package): the
    package's column THING_ID maps to the staging field ID, so ID's length applies to it."""
    import types
    import zipfile

    from dmf.package.formats import format_rules

    data = "THING_ID,PRICE\r\nA1,1.5\r\nNINECHARS,2\r\n".encode("utf-16")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Things.csv", data)
    mapping = [types.SimpleNamespace(xml_field="THING_ID", entity_field="ID"),
               types.SimpleNamespace(xml_field="PRICE", entity_field="PRICE")]  # fmt: skip
    entity = types.SimpleNamespace(entity_name="Things", entity_map_list=mapping)
    with zipfile.ZipFile(buf) as z:
        r = pf.preflight_member(
            z, "Things.csv", entity, format_rules("CSV-Unicode"), snapshot=_snapshot(),
            opts=PreflightOptions(mode="enforce"), max_record_chars=1 << 20,
        )  # fmt: skip
    assert r.rows == 2
    assert [p.message for p in r.problems] == [
        "Things.csv: row 3, column THING_ID: 9 characters, longer than ID's 8"
    ]
