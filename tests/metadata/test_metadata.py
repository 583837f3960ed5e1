"""The metadata client against the emulator's metadata service (real HTTPS, real token), the streaming OData
reader, the snapshot, and the offline command line (``python -m dmf``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dmf.fno.metadata import MetadataError, Snapshot, iter_json_array_items
from local.embedded_stack import app_settings, environ
from local.fno_emulator import Emulator, EmulatorConfig
from local.fno_emulator.config import FaultRule

ROOT = Path(__file__).resolve().parents[2]


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_stream_reader_yields_items_and_the_next_link_whatever_the_chunking() -> None:
    items = [{"Name": f"E{i}", "Members": [{"Name": "a,]}", "Value": i}]} for i in range(5)]
    doc = json.dumps(
        {"@odata.context": "x#DataEntities", "value": items, "@odata.nextLink": "https://n?$skip=5"}
    )
    for size in (1, 2, 3, 7, 64, len(doc)):
        out = list(iter_json_array_items(_chunks(doc, size)))
        assert [o for k, o in out if k == "item"] == items, size
        assert out[-1] == (
            "tail",
            {"@odata.context": "x#DataEntities", "@odata.nextLink": "https://n?$skip=5"},
        )
    # nextLink before the array, and an empty array
    doc = '{"@odata.nextLink": "u", "value": [ ]}'
    assert list(iter_json_array_items(_chunks(doc, 3))) == [("tail", {"@odata.nextLink": "u"})]
    with pytest.raises(MetadataError):
        list(iter_json_array_items(['{"value": [{"a": 1}, {"b"']))
    with pytest.raises(MetadataError):
        list(iter_json_array_items(['{"error": {}}']))


@pytest.fixture
def emu(azurite):
    cfg = EmulatorConfig(metadata_page_size=2, faults=[FaultRule(endpoint="metadata", kind="429", next_n=1)])
    e = Emulator(cfg, storage_connection_string=azurite.connection_string, clock=None, state_dir=None).start()
    try:
        yield e
    finally:
        e.stop()


def test_snapshot_from_the_emulator_pages_retries_and_maps_labels(
    emu, azurite, unique_name, tmp_path
) -> None:
    from dmf.package.catalogue import default_catalogue
    from dmf.pipeline import metadata as pm
    from dmf.settings import get_settings

    with environ(app_settings(azurite, emu, METADATA_CONTAINER=f"{unique_name}-md")):
        s = get_settings()
        summary = pm.refresh(s, "main", default_catalogue())
        assert summary["names"] == 7  # every entity of the emulator's catalogue
        assert "Customer groups" in summary["entities"] and summary["failed"] == []
        calls = emu.admin.calls("metadata")
        assert (
            calls[0]["status"] == 429 and calls[1]["status"] == 200
        )  # refused once, repeated after Retry-After
        # Page size 2: DataEntities came in 4 pages (7 entities), each a call.
        assert sum(1 for c in calls if "DataEntities" in c["path"] and c["status"] == 200) == 4
        snap, _ = pm.load(s, "main")
        assert snap is not None
        groups = snap.entity("customer GROUPS")
        assert (groups.name, groups.public, groups.entity_set) == (
            "CustCustomerGroupEntity",
            "CustCustomerGroup",
            "CustCustomerGroups",
        )
        f = groups.fields["CUSTOMERGROUPID"]
        assert (f.type, f.key, f.mandatory, f.length) == ("string", True, True, 10)
        assert groups.fields["ISSALESTAXINCLUDEDINPRICE"].enum == "NoYes"
        assert snap.enums["NoYes"] == [("No", 0), ("Yes", 1)]
        assert snap.entity("Customers V3").fields["CREDITLIMIT"].type == "real"
        # A label no route named: fetched once (mapped through Labels), then cached in the blob.
        before = len(emu.admin.calls("metadata"))
        snap = pm.entity_for(s, "main", "Sales order lines V2", default_catalogue())
        lines = snap.entity("Sales order lines V2")
        assert lines.name == "SalesOrderLineV2Entity" and lines.fields["LINENUMBER"].key
        after = len(emu.admin.calls("metadata"))
        assert after > before
        pm.entity_for(s, "main", "Sales order lines V2", default_catalogue())
        assert len(emu.admin.calls("metadata")) == after
        assert pm.load(s, "main")[0].entity("Sales order lines V2") is not None
        # Round trip of the compact form
        again = Snapshot.loads(snap.dumps())
        assert again.to_json() == snap.to_json()
        assert "Customer groups" in snap.suggestions("Customer group")


def test_cli_metadata_snapshot_then_validate_offline(emu, azurite, tmp_path) -> None:
    env = app_settings(azurite, emu)
    out = tmp_path / "snap.json"
    run = subprocess.run(
        [sys.executable, "-m", "dmf", "metadata-snapshot", "--environment", "main", "-o", str(out)],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Customers V3" in run.stdout and out.exists()
    assert "emulator-secret" not in run.stdout + run.stderr + out.read_text()

    bad = tmp_path / "Customers V3.csv"
    bad.write_text(
        "CUSTOMERACCOUNT,CUSTOMERGROUPID,CREDITLIMIT,PARTYTYPE,CUSTOMERSINCEDATE,COLOR\n"
        "C1,G1,10.5,Organization,2026-01-01,red\n"
        "C2,,ten,Robot,2026-13-01,blue\n",
        encoding="utf-8",
    )
    v = subprocess.run(
        [sys.executable, "-m", "dmf", "validate", str(bad), "--snapshot", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert v.returncode == 1, v.stdout + v.stderr
    for words in (
        "row 1, column COLOR",
        "row 3, column CUSTOMERGROUPID",
        "row 3, column CREDITLIMIT",
        "row 3, column PARTYTYPE",
        "row 3, column CUSTOMERSINCEDATE",
    ):
        assert words in v.stdout, (words, v.stdout)
    good = tmp_path / "Customers V3__ok.csv"
    good.write_text("CUSTOMERACCOUNT,CUSTOMERGROUPID,CREDITLIMIT\nC1,G1,10.5\n", encoding="utf-8")
    ok = subprocess.run(
        [sys.executable, "-m", "dmf", "validate", str(good), "--snapshot", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "OK:" in ok.stdout, ok.stdout + ok.stderr
    unknown = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmf",
            "validate",
            str(good),
            "--snapshot",
            str(out),
            "--entity",
            "Customer V3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 1 and "did you mean 'Customers V3'" in unknown.stdout, unknown.stdout
