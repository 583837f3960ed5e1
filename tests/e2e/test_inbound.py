"""Inbound end to end: blobs dropped in Azurite → the app under the local runner → the F&O emulator.

Nothing is mocked: the app's own trigger, orchestrations (replayed by the Durable SDK), activities, F&O
client (azure-identity over HTTPS to the emulator) and storage code run; the emulator's data store, call log
and violation counter are the evidence. The virtual clock makes hours of F&O time pass in seconds.
"""

from __future__ import annotations

import io
import itertools
import json
import zipfile

import pytest

from tests.e2e_support import Stack, customer_groups_csv, customer_groups_package

OK = {"Succeeded", "PartiallySucceeded"}


@pytest.fixture
def stack(azurite, unique_name):
    with Stack(azurite, unique_name) as s:
        yield s
    assert s.loop_blocks == [], "client functions blocked the event loop"


def _no_overlap(stack: Stack) -> None:
    """Imports ran strictly one at a time: no violation, and execution windows never overlap."""
    assert stack.emu.admin.violations == 0, stack.emu.admin.violation_details()
    assert stack.emu.admin.peak_concurrent_imports <= 1
    spans = sorted(
        (e["startAt"], e["endAt"])
        for e in stack.emu.admin.executions()
        if e["kind"] == "import" and e["endAt"]
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


def test_package_raw_csv_and_batch_of_three_arriving_together(stack: Stack) -> None:
    stack.drop("USMF/CustomerGroups-Import/groups-package.zip", customer_groups_package(["P1", "P2"]))
    stack.drop("USMF/CustomerGroups-Import/Customer groups.csv", customer_groups_csv(["R1", "R2", "R3"]))
    batch = io.BytesIO()
    with zipfile.ZipFile(batch, "w") as zf:
        for n in range(3):
            zf.writestr(f"{n}-part.zip", customer_groups_package([f"B{n}"]))
    stack.drop("USRT/CustomerGroups-Import/batch-of-three.zip", batch.getvalue())
    stack.drop("DEMF/CustomerGroups-Import/_two/a.csv", customer_groups_csv(["M1"]))
    stack.drop("DEMF/CustomerGroups-Import/_two/b.zip", customer_groups_package(["M2"]))
    stack.drop(
        "DEMF/CustomerGroups-Import/two.batch.json",
        json.dumps({"items": [{"file": "b.zip"}, {"file": "a.csv", "entity": "Customer groups"}]}).encode(),
    )
    stack.settle()

    drops = stack.drops()
    assert len(drops) == 4, [d["SourceBlob"] for d in drops]
    assert {d["Status"] for d in drops} == {"Succeeded"}, [
        (d["SourceBlob"], d["Status"], d.get("Reason")) for d in drops
    ]
    assert stack.drop_row("batch-of-three.zip")["PackageCount"] == 3
    assert stack.drop_row("two.batch.json")["PackageCount"] == 2
    data = stack.emu.admin.data
    assert {r["CUSTOMERGROUPID"] for r in data("USMF", "Customer groups")} == {"P1", "P2", "R1", "R2", "R3"}
    assert {r["CUSTOMERGROUPID"] for r in data("USRT", "Customer groups")} == {"B0", "B1", "B2"}
    assert {r["CUSTOMERGROUPID"] for r in data("DEMF", "Customer groups")} == {"M1", "M2"}
    # Seven packages, seven imports, one at a time; every dropped blob moved to processed.
    assert len(stack.import_calls()) == 7
    _no_overlap(stack)
    assert [n for n in stack.blob_names("INBOUND_CONTAINER")] == []
    assert "USMF/CustomerGroups-Import/Customer groups.csv" in stack.blob_names("PROCESSED_CONTAINER")
    assert "DEMF/CustomerGroups-Import/_two/a.csv" in stack.blob_names("PROCESSED_CONTAINER")


def test_five_drops_together_import_strictly_one_at_a_time(stack: Stack) -> None:
    for n in range(5):
        stack.drop(
            f"USMF/CustomerGroups-Import/Customer groups__{n}.csv",
            customer_groups_csv([f"F{n}{i}" for i in range(20)]),
        )
    stack.settle()
    drops = stack.drops()
    assert len(drops) == 5 and all(d["Status"] == "Succeeded" for d in drops)
    assert len(stack.import_calls()) == 5
    _no_overlap(stack)
    packages = [p for d in drops for p in stack.packages(d)]
    assert all(p["Status"] == "Succeeded" and p["ImportConfirmed"] for p in packages)
    # Polling learns the data project's duration: later imports need fewer status calls.
    polls = [p["PollCount"] for p in sorted(packages, key=lambda p: p["ImportRequestedAt"])]
    assert polls[-1] <= 2, polls


def test_partially_succeeded_and_failed_with_error_files_copied(stack: Stack) -> None:
    stack.drop(
        "USMF/CustomerGroups-Import/Customer groups__partial.csv",
        customer_groups_csv(["OK1", "OK2"], bad_rows=2),
    )
    stack.drop("USMF/CustomerGroups-Import/Customer groups__failed.csv", customer_groups_csv([], bad_rows=3))
    stack.settle()
    partial = stack.drop_row("Customer groups__partial.csv")
    failed = stack.drop_row("Customer groups__failed.csv")
    assert partial["Status"] == "PartiallySucceeded"
    assert failed["Status"] == "Failed"
    for drop, errors in ((partial, 2), (failed, 3)):
        (pkg,) = stack.packages(drop)
        assert pkg["ErrorCount"] == errors
        assert "longer than 10 characters" in pkg["ErrorSummary"]
        files = json.loads(pkg["ErrorFiles"])
        assert files, pkg
        errors_container = stack.container("ERRORS_CONTAINER")
        for f in files:
            name = f.partition("/")[2]
            body = errors_container.get_blob_client(name).download_blob().readall()
            assert body, f
        assert pkg["SummaryPageUrl"].startswith("https://")
    assert "USMF/CustomerGroups-Import/Customer groups__failed.csv" in stack.blob_names("FAILED_CONTAINER")
    assert "USMF/CustomerGroups-Import/Customer groups__failed.csv.reason.txt" in stack.blob_names(
        "FAILED_CONTAINER"
    )
    assert {r["CUSTOMERGROUPID"] for r in stack.emu.admin.data("USMF", "Customer groups")} == {"OK1", "OK2"}


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _package_entries() -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(customer_groups_package(["X1"]))) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _bad_inputs() -> dict[str, tuple[bytes, str]]:
    good = _package_entries()
    bomb = _zip({**good, "Customer groups.csv": b"\xff\xfe" + b"A\x00" * (60 * 2**20)})
    return {
        "not-a-zip.zip": (b"this is not a zip file", "zip"),
        "nested.zip": (_zip({f"folder/{n}": d for n, d in good.items()}), "folder"),
        "no-manifest.zip": (_zip({k: v for k, v in good.items() if k != "Manifest.xml"}), "Manifest.xml"),
        "missing-data.zip": (
            _zip({k: v for k, v in good.items() if not k.endswith(".csv")}),
            "Customer groups.csv",
        ),
        "traversal.zip": (_zip({**good, "../evil.csv": b"x"}), "evil"),
        "bomb.zip": (bomb, "zip_bomb"),
        "empty.csv": (b"", "empty"),
        "lf-only.zip": (
            _zip(
                {
                    **good,
                    "Customer groups.csv": b"\xff\xfe"
                    + "CUSTOMERGROUPID,DESCRIPTION,PAYMENTTERMID\nA,B,C\n".encode("utf-16-le"),
                }
            ),
            "line",
        ),
        "Customer groups__dupes.csv": (customer_groups_csv(["D1", "D1"]), "duplicate"),
        "notes.docx": (b"PK fake docx", "unsupported"),
    }


def test_each_bad_input_is_rejected_with_its_reason_and_no_fno_call(stack: Stack) -> None:
    cases = _bad_inputs()
    for name, (data, _) in cases.items():
        stack.drop(f"USMF/CustomerGroups-Import/{name}", data)
    stack.drop("bad'project/Customer groups.csv", customer_groups_csv(["Q"]))  # no route, no convention
    stack.drop("USMF/Bad'Project/Customer groups.csv", customer_groups_csv(["Q"]))
    stack.settle()
    assert stack.import_calls() == []
    assert [c for c in stack.emu.admin.calls() if c["endpoint"] == "GetAzureWriteUrl"] == []
    rejected = set(stack.blob_names("REJECTED_CONTAINER"))
    for name, (_, words) in cases.items():
        row = stack.drop_row(name)
        assert row["Status"] == "Rejected", (name, row)
        assert (
            words.lower() in row["Reason"].lower() or words.lower() in (row.get("ErrorSummary") or "").lower()
        ), (name, row["Reason"])
        path = f"USMF/CustomerGroups-Import/{name}"
        assert path in rejected and f"{path}.reason.txt" in rejected, name
    reasons = {r["SourceBlob"]: r["Reason"] for r in stack.drops()}
    assert any("apostrophe" in v for k, v in reasons.items() if "Bad'Project" in k)
    assert any("convention" in v for k, v in reasons.items() if "bad'project/" in k)
    assert stack.blob_names("INBOUND_CONTAINER") == []


def test_duplicate_delivery_and_redrop_of_same_content_import_once(azurite, unique_name) -> None:
    with Stack(azurite, unique_name, runner_kwargs={"duplicate_blob_deliveries": 2}) as stack:
        data = customer_groups_csv(["U1", "U2"])
        stack.drop("USMF/CustomerGroups-Import/Customer groups__first.csv", data)
        stack.settle()
        stack.drop("USMF/CustomerGroups-Import/Customer groups__again.csv", data)
        stack.settle()
        assert len(stack.import_calls()) == 1
        first = stack.drop_row("Customer groups__first.csv")
        again = stack.drop_row("Customer groups__again.csv")
        assert first["Status"] == "Succeeded"
        assert again["Status"] == "Duplicate" and again["DuplicateOf"] == first["RowKey"]
        assert "USMF/CustomerGroups-Import/Customer groups__again.csv.reason.txt" in stack.blob_names(
            "REJECTED_CONTAINER"
        )


def test_an_import_that_takes_hours_is_waited_on_with_timers(azurite, unique_name) -> None:
    from local.fno_emulator import EmulatorConfig
    from local.fno_emulator.config import DataProject, ProjectEntity

    cfg = EmulatorConfig()
    cfg.data_projects = [
        DataProject(
            name="CustomerGroups-Import",
            entities=[ProjectEntity(entity="Customer groups")],
            base_seconds=3 * 3600,
            per_row_seconds=0,
        )
    ]
    with Stack(azurite, unique_name, emulator_config=cfg, POLL_INITIAL_SECONDS="15") as stack:
        start = stack.clock.now()
        stack.drop("USMF/CustomerGroups-Import/Customer groups.csv", customer_groups_csv(["H1"]))
        stack.settle()
        row = stack.drop_row("Customer groups.csv")
        assert row["Status"] == "Succeeded"
        (pkg,) = stack.packages(row)
        # Three hours of F&O time passed on the virtual clock, with a logarithmic number of status calls.
        assert (stack.clock.now() - start).total_seconds() >= 3 * 3600
        status_calls = [c for c in stack.emu.admin.calls() if c["endpoint"] == "GetExecutionSummaryStatus"]
        assert len(status_calls) == pkg["PollCount"] <= 12, len(status_calls)


def test_batch_zip_with_its_own_manifest_orders_packages_and_raw_files(stack: Stack) -> None:
    batch = io.BytesIO()
    with zipfile.ZipFile(batch, "w") as zf:
        zf.writestr("b.zip", customer_groups_package(["ZB"]))
        zf.writestr("a.csv", customer_groups_csv(["ZA"]))
        zf.writestr(
            "readme.txt", b"notes for humans"
        )  # not named by the manifest: a warning, not a rejection
        zf.writestr(
            "order.batch.json",
            json.dumps({"items": [{"file": "a.csv", "entity": "Customer groups"}, {"file": "b.zip"}]}),
        )
    stack.drop("USRT/CustomerGroups-Import/mixed.zip", batch.getvalue())
    stack.settle()
    drop = stack.drop_row("mixed.zip")
    assert drop["Status"] == "Succeeded" and drop["PackageCount"] == 2, drop
    packages = stack.packages(drop)
    assert [p["Status"] for p in packages] == ["Succeeded", "Succeeded"]
    # Imported in the manifest's order: the raw file first.
    assert packages[0]["SourceBlob"].endswith("-a.csv") and packages[1]["SourceBlob"].endswith("-b.zip"), (
        packages
    )
    assert {r["CUSTOMERGROUPID"] for r in stack.emu.admin.data("USRT", "Customer groups")} == {"ZA", "ZB"}


def test_raw_file_split_by_rows_and_wrapped_with_the_routes_template(azurite, unique_name) -> None:
    templates = f"{unique_name}-templates"
    routes = {
        "version": 1,
        "routes": [
            {
                "name": "templated",
                "pattern": "templated/*.csv",
                "data_project": "CustomerGroups-Import",
                "legal_entity": "demf",
                "entity": "Customer groups",
                "template_package": f"{templates}/customer-groups.zip",
                "max_rows_per_package": 3,
            }
        ],
    }
    with Stack(azurite, unique_name, ROUTES_JSON=json.dumps(routes)) as stack:
        stack.blobs.create_container(templates).upload_blob(
            "customer-groups.zip", customer_groups_package(["T"], project="TemplateMarker")
        )
        ids = [f"S{i}" for i in range(7)]
        stack.drop("templated/new-groups.csv", customer_groups_csv(ids))
        stack.settle()
        drop = stack.drop_row("new-groups.csv")
        assert (
            drop["Status"] == "Succeeded" and drop["Route"] == "templated" and drop["LegalEntity"] == "DEMF"
        )
        packages = stack.packages(drop)
        assert [p["Records"] for p in packages] == [3, 3, 1]
        assert len(stack.import_calls()) == 3
        assert {r["CUSTOMERGROUPID"] for r in stack.emu.admin.data("DEMF", "Customer groups")} == set(ids)
        # The staged packages carry the template's manifest (its description names the template's project).
        staged = (
            stack.blobs.get_blob_client(*packages[0]["StagedBlob"].split("/", 1)).download_blob().readall()
        )
        with zipfile.ZipFile(io.BytesIO(staged)) as zf:
            manifest = zf.read("Manifest.xml").decode("utf-16")
        assert "TemplateMarker" in manifest and "CUSTOMERGROUPID" in manifest
