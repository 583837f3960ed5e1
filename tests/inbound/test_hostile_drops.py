"""Hostile drops (issue #14) through the inbound pipeline's own steps on a real Azurite: ``plan_drop``, then
``prepare_item`` for each item, then ``finalize_drop``, sequenced as the ``inbound_drop`` orchestration does
it (an activity that raises ends the drop through its error path). No F&O: a drop that would reach it stops
the run. What the user sees is asserted: the outcome row, the blob in ``rejected/`` and its ``.reason.txt``."""

from __future__ import annotations

import io
import json
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from dmf.pipeline import drops
from dmf.pipeline.services import Services
from dmf.redact import redact
from dmf.settings import load_settings
from local.samples import customer_groups_csv, customer_groups_package
from tests.e2e_support import reset_app_caches

DAY = "20261129"
FOLDER = "USMF/CustomerGroups-Import"


@dataclass
class Outcome:
    status: str
    row: dict[str, Any]
    rejected: list[str]  # blob names in the rejected container
    reason_file: dict[str, Any] | None
    prepared: list[dict[str, Any]]


class WouldImport(AssertionError):
    """The drop passed validation: F&O would have been called."""


class Pipeline:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.s = svc.settings

    def drop(self, name: str, data: bytes, parts: dict[str, bytes] | None = None) -> Outcome:
        inbound = self.s.inbound_container
        for part, body in (parts or {}).items():
            self.svc.blob(inbound, part).upload_blob(body, overwrite=True)
        blob = self.svc.blob(inbound, name)
        blob.upload_blob(data, overwrite=True)
        etag = blob.get_blob_properties().etag
        drop_id = f"drop-{uuid.uuid4().hex}"
        req = {"instance_id": drop_id, "day": DAY, "container": inbound, "name": name, "etag": etag}
        final: dict[str, Any] = {
            "instance_id": drop_id,
            "day": DAY,
            "source": f"{inbound}/{name}",
            "etag": etag,
        }
        prepared: list[dict[str, Any]] = []
        plan = drops.plan_drop(self.svc, req)
        final.update(sha256=plan.get("sha256"), members=plan.get("members", []))
        if plan["action"] in ("reject", "duplicate"):
            final.update(action=plan["action"], reason=plan["reason"])
        else:
            assert plan["action"] == "import", plan
            try:
                for it in plan["items"]:
                    prepared.append(
                        drops.prepare_item(
                            self.svc, {"drop_id": drop_id, "day": DAY, "item": it, "route": plan["route"]}
                        )
                    )
            except Exception as exc:  # the orchestration's path for an activity that keeps failing
                final.update(action="error", reason=redact(f"preparing the drop failed: {exc}"))
            else:
                if any(p["ok"] for p in prepared):
                    raise WouldImport(prepared)
                by_seq = {it["seq"]: it for it in plan["items"]}
                rejected = [{"seq": p["seq"], "problems": p["problems"], "source": by_seq[p["seq"]]["source"]}
                            for p in prepared]  # fmt: skip
                final.update(action="import", results=[], rejected=rejected)
        res = drops.finalize_drop(self.svc, final)
        row = self.svc.outcomes.get(DAY, drop_id) or {}
        rejected_names = [b.name for b in self._names(self.s.rejected_container)]
        reason_file = None
        archived = res["archived"]
        try:
            reason_file = json.loads(self.svc.blob_at(archived + ".reason.txt").download_blob().readall())
        except ResourceNotFoundError:
            pass
        return Outcome(res["status"], row, rejected_names, reason_file, prepared)

    def _names(self, container: str) -> list[Any]:
        from dmf.storage import clients

        return list(clients.container(self.s, container).list_blobs())


@pytest.fixture
def pipeline(azurite, unique_name):
    made = []

    def make(**overrides: str) -> Pipeline:
        made.append(1)
        unique = f"{unique_name}{len(made)}"  # own containers and tables (and content claims) per pipeline
        values = {
            "DATA_STORAGE": azurite.connection_string,
            "FNO_MAIN_BASE_URL": "https://127.0.0.1:9",  # never called: these drops stop before F&O
            "FNO_MAIN_AUTH_MODE": "managed_identity",
            "ROUTES_JSON": '{"version": 1, "routes": []}',
            **{f"{c}_CONTAINER": f"{unique}-{c.lower()}"
               for c in ("INBOUND", "STAGING", "PROCESSED", "FAILED", "REJECTED")},
            "OUTCOMES_TABLE": f"{unique}outcomes",
            "LEDGER_TABLE": f"{unique}ledger",
            **overrides,
        }  # fmt: skip
        reset_app_caches()
        return Pipeline(Services(load_settings(values)))

    yield make
    reset_app_caches()


def assert_rejected(out: Outcome, name: str, *words: str) -> str:
    """Rejected where the user looks: outcome row, the blob in rejected/ with its reason file; no temp path."""
    assert out.status == "Rejected", (out.status, out.row.get("Reason"))
    assert out.row["Status"] == "Rejected"
    reason = out.row["Reason"]
    assert out.reason_file is not None and out.reason_file["status"] == "Rejected"
    assert out.reason_file["reason"] == reason
    for w in words:
        assert w in reason, (w, reason)
    tmp = tempfile.gettempdir()
    assert tmp not in reason and "/tmp/" not in reason, reason
    assert any(n == name or n.startswith(name[:200]) for n in out.rejected), out.rejected
    return reason


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for n, d in entries.items():
            zf.writestr(n, d)
    return buf.getvalue()


def _package_entries() -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(customer_groups_package(["X1"]))) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


# -- 1 -------------------------------------------------------------------------------------------------


def test_many_small_far_expanding_entries_are_rejected_as_a_bomb(pipeline):
    p = pipeline()
    pad = {f"pad{i:03d}.csv": b"0" * 65536 for i in range(200)}
    out = p.drop(f"{FOLDER}/padded.zip", _zip({**_package_entries(), **pad}))
    assert_rejected(out, f"{FOLDER}/padded.zip", "ZIP_BOMB")


def test_limits_come_from_the_settings(pipeline):
    """The same 40-entry package passes with the defaults and is rejected under ZIP_MAX_ENTRIES=10."""
    entries = {**_package_entries(), **{f"note{i}.txt": b"n" for i in range(40)}}
    with pytest.raises(WouldImport):
        pipeline().drop(f"{FOLDER}/notes.zip", _zip(entries))
    out = pipeline(ZIP_MAX_ENTRIES="10").drop(f"{FOLDER}/notes2.zip", _zip(entries))
    assert_rejected(out, f"{FOLDER}/notes2.zip", "ZIP_TOO_MANY_ENTRIES", "limit 10")


# -- 2 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("names", ["self", "each-other"])
def test_a_batch_manifest_naming_a_batch_manifest_is_rejected(pipeline, names):
    p = pipeline()
    csv = customer_groups_csv(["B1"])
    if names == "self":
        doc = {"items": [{"file": "run.batch.json", "entity": "Customer groups"}]}
        parts = {f"{FOLDER}/_run/run.batch.json": json.dumps(doc).encode(), f"{FOLDER}/_run/g.csv": csv}
    else:
        doc = {"items": [{"file": "g.csv", "entity": "Customer groups"},
                         {"file": "other.batch.json", "entity": "Customer groups"}]}  # fmt: skip
        other = {"items": [{"file": "run.batch.json", "entity": "Customer groups"}]}
        parts = {f"{FOLDER}/_run/other.batch.json": json.dumps(other).encode(), f"{FOLDER}/_run/g.csv": csv}
    out = p.drop(f"{FOLDER}/run.batch.json", json.dumps(doc).encode(), parts)
    reason = assert_rejected(out, f"{FOLDER}/run.batch.json", "is a batch manifest")
    assert ("run.batch.json" if names == "self" else "other.batch.json") in reason


def test_a_batch_zip_whose_manifest_lists_itself_is_rejected(pipeline):
    doc = {"items": [{"file": "a.zip"}, {"file": "order.batch.json", "entity": "Customer groups"}]}
    batch = _zip({"a.zip": customer_groups_package(["Z1"]), "order.batch.json": json.dumps(doc).encode()})
    out = pipeline().drop(f"{FOLDER}/batch.zip", batch)
    assert_rejected(out, f"{FOLDER}/batch.zip", "BAD_BATCH_MANIFEST", "order.batch.json")


# -- 3 -------------------------------------------------------------------------------------------------


def test_a_1000_character_blob_name_is_rejected_with_a_clear_reason_not_failed(pipeline):
    name = f"{FOLDER}/Customer groups__{'n' * (1000 - len(FOLDER) - 22)}.csv"
    assert len(name) == 1000
    out = pipeline().drop(name, customer_groups_csv(["L1"]))
    assert_rejected(out, name, "NAME_TOO_LONG", "FILE_NAME_MAX_CHARS")


def test_a_1024_character_blob_name_still_gets_its_reason_file(pipeline):
    """Azure's longest blob name: rejected/ keeps it (shortened, tagged with the drop) beside its reason."""
    name = f"{FOLDER}/Customer groups__{'m' * (1024 - len(FOLDER) - 22)}.csv"
    assert len(name) == 1024
    out = pipeline().drop(name, customer_groups_csv(["L2"]))
    assert_rejected(out, name, "NAME_TOO_LONG")
    assert out.row["SourceBlob"].endswith(name)
    archived = out.row["ArchivedBlob"].partition("/")[2]
    assert archived in out.rejected and f"{archived}.reason.txt" in out.rejected


def test_a_long_non_ascii_name_within_the_limit_is_prepared(pipeline):
    """240 characters, 480 bytes in UTF-8: once an ENAMETOOLONG from a temp file named after the blob."""
    name = f"{FOLDER}/Customer groups__{'é' * 220}.csv"
    with pytest.raises(WouldImport) as e:
        pipeline().drop(name, customer_groups_csv(["L3"]))
    [prepared] = e.value.args[0]
    assert prepared["ok"] and prepared["packages"][0]["rows"] == 1


# -- 4, 5 ----------------------------------------------------------------------------------------------


def test_a_symbolic_link_entry_is_rejected(pipeline):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in _package_entries().items():
            zf.writestr(n, d)
        link = zipfile.ZipInfo("secrets.csv")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        zf.writestr(link, b"/etc/shadow")
    out = pipeline().drop(f"{FOLDER}/link.zip", buf.getvalue())
    assert_rejected(out, f"{FOLDER}/link.zip", "ZIP_NOT_A_FILE", "symbolic link")


def test_a_doctype_in_the_manifest_is_rejected(pipeline):
    entries = _package_entries()
    text = entries["Manifest.xml"].decode("utf-16")
    dtd = '<!DOCTYPE DataManagementPackageManifest SYSTEM "http://attacker.example/m.dtd">'
    text = text.replace("?>", "?>" + dtd, 1)
    entries["Manifest.xml"] = b"\xff\xfe" + text.lstrip("\ufeff").encode("utf-16-le")
    out = pipeline().drop(f"{FOLDER}/dtd.zip", _zip(entries))
    assert_rejected(out, f"{FOLDER}/dtd.zip", "BAD_MANIFEST", "DTD")


# -- 6 -------------------------------------------------------------------------------------------------


def test_a_very_repetitive_raw_csv_is_not_mistaken_for_a_bomb(pipeline):
    rows = [f"R{i:05d}" for i in range(2000)]
    text = "CUSTOMERGROUPID,DESCRIPTION,PAYMENTTERMID\r\n" + "".join(
        f"{r},{'same ' * 200},Net30\r\n" for r in rows
    )
    p = pipeline()
    with pytest.raises(WouldImport) as e:
        p.drop(f"{FOLDER}/Customer groups__repetitive.csv", text.encode())
    [prepared] = e.value.args[0]
    assert prepared["ok"] and prepared["packages"][0]["rows"] == 2000
    # ...while the very package built from it, dropped from outside, is one by ratio.
    package = p.svc.blob_at(prepared["packages"][0]["staged"]).download_blob().readall()
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        info = zf.getinfo("Customer groups__repetitive.csv")
        assert info.file_size > 200 * info.compress_size
    out = p.drop(f"{FOLDER}/repetitive.zip", package)
    assert_rejected(out, f"{FOLDER}/repetitive.zip", "ZIP_BOMB")


# -- 8 -------------------------------------------------------------------------------------------------


def test_a_record_over_record_max_chars_is_rejected_naming_the_row(pipeline):
    lines = [
        "CUSTOMERGROUPID,DESCRIPTION,PAYMENTTERMID",
        "A1,a,Net30",
        "A2,b,Net30",
        f"A3,{'w' * 3000},Net30",
    ]
    data = ("\r\n".join(lines) + "\r\n").encode()
    out = pipeline(RECORD_MAX_CHARS="1000").drop(f"{FOLDER}/Customer groups__wide.csv", data)
    assert_rejected(out, f"{FOLDER}/Customer groups__wide.csv", "RECORD_TOO_LONG", "row 4", "1000 characters")


def test_a_failed_drops_reason_never_shows_a_temp_path(pipeline):
    """An activity that keeps failing (disk full, say) ends the drop Failed; its reason names no local path."""
    p = pipeline()
    name = f"{FOLDER}/Customer groups__disk.csv"
    p.svc.blob(p.s.inbound_container, name).upload_blob(customer_groups_csv(["D1"]))
    tmp = f"{tempfile.gettempdir()}/tmpq1w2e3r4/package-part001.zip"
    res = drops.finalize_drop(p.svc, {
        "instance_id": "drop-disk", "day": DAY, "source": f"{p.s.inbound_container}/{name}", "action": "error",
        "reason": f"preparing the drop failed: [Errno 28] No space left on device: '{tmp}'",
    })  # fmt: skip
    assert res["status"] == "Failed"
    row = p.svc.outcomes.get(DAY, "drop-disk") or {}
    reason_file = json.loads(p.svc.blob_at(res["archived"] + ".reason.txt").download_blob().readall())
    for text in (row["Reason"], reason_file["reason"]):
        assert "No space left on device" in text and tmp not in text and "tmpq1w2e3r4" not in text


def test_a_batch_part_whose_blob_name_would_pass_azures_limit_is_rejected(pipeline):
    stem = "r" * 600
    doc = {"items": [{"file": "p" * 500 + ".zip"}]}
    out = pipeline().drop(f"{FOLDER}/{stem}.batch.json", json.dumps(doc).encode())
    assert_rejected(out, f"{FOLDER}/{stem}.batch.json", "over Azure's limit of 1024")
