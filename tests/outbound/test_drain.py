"""Recurring-export drains against the F&O emulator and Azurite: archives, acks, outcome rows, redelivery."""

from __future__ import annotations

import base64
import hashlib

import pytest

from dmf.pipeline.archive import archive_index, archive_path, archive_stem
from dmf.pipeline.drain import drain_batch
from dmf.pipeline.ids import safe_name

from .conftest import DAY, EXPORT_ACTIVITY, Env

RUN = "drain-cust-groups-20261125T080000"


def _export() -> dict:
    return {"name": "cust-groups", "environment": "main", "activity_id": EXPORT_ACTIVITY}


def _drain(env: Env, run: str = RUN, **kw) -> dict:
    req = {"export": _export(), "run_id": run, "day": DAY, "max_messages": 100, "max_seconds": 60} | kw
    return drain_batch(env.svc, req)


def _payload(n: int) -> bytes:
    # Zip-looking bytes (the archive name sniffs PK\x03\x04) with distinct content per message.
    return b"PK\x03\x04" + hashlib.sha256(str(n).encode()).digest() * (50 + n)


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()  # Azure's Content-MD5, not security


def _statuses(env: Env) -> dict[str, str]:
    return {m["correlationId"]: m["status"] for m in env.emu.admin.outbound(EXPORT_ACTIVITY)}


def test_n_messages_make_n_archives_n_acks_and_n_rows(env: Env) -> None:
    seeded = {env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n)): _payload(n) for n in range(7)}
    res = _drain(env)
    assert res["archived"] == 7 and res["failed"] == 0 and res["empty"], res
    assert set(_statuses(env).values()) == {"Acked"}

    blobs = env.archive_blobs()
    assert len(blobs) == 7
    for cid, data in seeded.items():
        name = archive_path("cust-groups", DAY, cid, ".zip")
        assert name in blobs
        bc = env.archive.get_blob_client(name)
        assert bc.download_blob().readall() == data
        props = bc.get_blob_properties()
        assert bytes(props.content_settings.content_md5) == _md5(data)
        assert props.metadata["correlation_id"] == cid
        assert props.metadata["source"] == "recurring-export"
        assert props.metadata["last_dequeue"] == ""  # first delivery

    rows = env.rows("message")
    assert len(rows) == 7
    assert {r["CorrelationId"] for r in rows} == set(seeded)
    for r in rows:
        assert r["Status"] == "Archived" and r["Acked"] is True
        assert r["ArchivedBlob"].endswith(f"{r['CorrelationId']}.zip")
        assert r["SizeBytes"] == len(seeded[r["CorrelationId"]])
        assert r["ContentMd5"] == base64.b64encode(_md5(seeded[r["CorrelationId"]])).decode()
    assert env.svc.settings.archive_container + "/" + safe_name("cust-groups") in rows[0]["ArchivedBlob"]


def test_package_built_from_fno_data_is_archived_intact(env: Env) -> None:
    env.emu.admin.seed_rows("USMF", "Customer groups", [{"CUSTOMERGROUPID": "G1", "DESCRIPTION": "One"}])
    cid = env.emu.admin.seed_outbound(EXPORT_ACTIVITY)  # a real package built by the emulator
    assert _drain(env)["archived"] == 1
    import io
    import zipfile

    data = (
        env.archive.get_blob_client(archive_path("cust-groups", DAY, cid, ".zip")).download_blob().readall()
    )
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert "Manifest.xml" in names
        csv = next(n for n in names if n.lower().endswith(".csv"))
        assert "G1" in zf.read(csv).decode("utf-16")


def test_empty_queue_is_a_clean_stop(env: Env) -> None:
    res = _drain(env)
    assert res == {**res, "archived": 0, "taken": 0, "empty": True}
    assert env.rows() == []


def test_count_budget_stops_before_dequeuing_more(env: Env) -> None:
    for n in range(5):
        env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n))
    res = _drain(env, max_messages=3, workers=2)
    assert res["archived"] == 3 and res["taken"] == 3 and not res["empty"]
    assert sorted(_statuses(env).values()) == ["Acked"] * 3 + ["Enqueued"] * 2  # never dequeued


def test_time_budget_spent_takes_nothing(env: Env) -> None:
    env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(1))
    res = _drain(env, max_seconds=0)
    assert res["taken"] == 0
    assert list(_statuses(env).values()) == ["Enqueued"]


def test_never_more_messages_in_flight_than_twice_the_workers(env: Env) -> None:
    """Each worker holds the message it is writing and acking, and at most the next one (dequeued while
    that write and ack run)."""
    for n in range(24):
        env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n))
    workers = 3
    res = _drain(env, workers=workers)
    assert res["archived"] == 24
    # Replay the emulator's call log: dequeues that returned a message minus acks, at every point.
    in_flight = peak = 0
    for c in sorted(env.emu.admin.calls(), key=lambda c: c["wall"]):
        if c["endpoint"] == "dequeue" and c["status"] == 200:
            in_flight += 1
        elif c["endpoint"] == "ack" and c["status"] == 200:
            in_flight -= 1
        peak = max(peak, in_flight)
    assert 1 <= peak <= 2 * workers


def test_archive_write_failure_is_not_acked_and_is_archived_once_after_redelivery(env: Env) -> None:
    cids = [env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n)) for n in range(3)]
    victim = cids[1]
    # A real storage failure: another writer holds a lease on the blob our archive must be written to.
    blocker = env.archive.get_blob_client(archive_path("cust-groups", DAY, victim, ".zip"))
    if not env.archive.exists():
        env.archive.create_container()
    blocker.upload_blob(b"someone else's", overwrite=True)
    lease = blocker.acquire_lease(lease_duration=-1)

    res = _drain(env, workers=1)
    assert res["archived"] == 2 and res["failed"] == 1, res
    statuses = _statuses(env)
    assert statuses[victim] == "Dequeued"  # not acked
    assert [statuses[c] for c in (cids[0], cids[2])] == ["Acked", "Acked"]
    failed = [r for r in env.rows("message") if r["Status"] == "Failed"]
    assert len(failed) == 1 and failed[0]["CorrelationId"] == victim
    assert "not acknowledged" in failed[0]["Reason"]

    lease.release()
    # Still invisible: a drain now finds nothing.
    assert _drain(env, run=RUN + "b")["taken"] == 0
    env.emu.admin.advance(1801)  # F&O's visibility timeout passes
    res2 = _drain(env, run=RUN + "c")
    assert res2["archived"] == 1 and res2["taken"] == 1, res2
    assert _statuses(env)[victim] == "Acked"

    names = [n for n in env.archive_blobs() if victim in n]
    assert names == [archive_path("cust-groups", DAY, victim, ".zip")]  # exactly one archive
    bc = env.archive.get_blob_client(names[0])
    assert bc.download_blob().readall() == _payload(1)
    assert bc.get_blob_properties().metadata["last_dequeue"]  # redelivery: LastDequeueDateTime was set
    ok = [r for r in env.rows("message") if r["CorrelationId"] == victim and r["Status"] == "Archived"]
    assert len(ok) == 1 and ok[0]["RowKey"].startswith(RUN + "c~")


def test_failed_ack_redelivery_is_acked_without_a_second_archive(env: Env) -> None:
    cid = env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(9))
    # Every ack attempt fails: 2 HTTP tries (FNO_MAX_RETRIES=1), the one retry layer.
    env.emu.admin.inject_fault("ack", "500", next_n=2)
    res = _drain(env)
    assert res["not_acked"] == 1 and res["archived"] == 0, res
    assert len(env.emu.admin.calls("ack")) == 2  # no retry loop of the drain's own on top of the HTTP layer
    row = env.rows("message")[0]
    assert row["Status"] == "ArchivedNotAcked" and row["Acked"] is False
    name = archive_path("cust-groups", DAY, cid, ".zip")
    etag = env.archive.get_blob_client(name).get_blob_properties().etag
    assert archive_index(env.svc).get(EXPORT_ACTIVITY, cid).archived

    env.emu.admin.advance(1801)
    res2 = _drain(env, run=RUN + "b")
    assert res2["duplicate"] == 1 and res2["archived"] == 0, res2
    assert _statuses(env)[cid] == "Acked"
    assert env.archive_blobs() == [name]
    assert env.archive.get_blob_client(name).get_blob_properties().etag == etag  # never rewritten
    dup = [r for r in env.rows("message") if r["RowKey"].startswith(RUN + "b~")]
    assert dup[0]["Status"] == "Duplicate" and dup[0]["Acked"] is True


def test_crash_after_commit_before_index_update_adopts_the_blob(env: Env) -> None:
    """A committed archive whose index row still says 'claimed' is recognised by its metadata."""
    cid = env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(3))
    env.emu.admin.inject_fault("ack", "500", next_n=2)
    _drain(env)
    name = archive_path("cust-groups", DAY, cid, ".zip")
    etag = env.archive.get_blob_client(name).get_blob_properties().etag
    # Roll the index back to the state a crash between commit and index update leaves.
    idx = archive_index(env.svc)
    key = idx._key(EXPORT_ACTIVITY, cid)
    e = idx.table.get_entity("outbound-archive", key)
    e["Archived"] = False
    idx.table.update_entity(e)
    env.emu.admin.advance(1801)
    res = _drain(env, run=RUN + "b")
    assert res["archived"] == 1
    assert env.archive.get_blob_client(name).get_blob_properties().etag == etag
    row = next(r for r in env.rows("message") if r["RowKey"].startswith(RUN + "b~"))
    assert "earlier attempt" in row["Reason"]


def test_http_download_location_is_rewritten_to_https(make_env) -> None:
    from local.fno_emulator import EmulatorConfig

    env = make_env(EmulatorConfig(download_location_http=True))
    env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(2))
    assert _drain(env)["archived"] == 1
    downloads = env.emu.admin.calls("download")
    assert downloads and all(c["status"] == 200 for c in downloads)


def test_dequeue_outage_stops_the_batch_with_an_error(env: Env) -> None:
    env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(1))
    env.emu.admin.inject_fault("dequeue", "503", next_n=10)
    res = _drain(env, workers=1)
    assert res["taken"] == 0 and not res["empty"] and res["errors"]
    assert "sig=" not in str(res)


@pytest.mark.parametrize("ct,head,ext", [("application/octet-stream", b"PK\x03\x04", ".zip"),
                                         ("text/csv", b"a,b", ".csv"), (None, b"\xff\xfe<\x00", ".xml"),
                                         (None, b"xx", ".bin")])  # fmt: skip
def test_extension_from_content_type_or_bytes(ct, head, ext) -> None:
    from dmf.pipeline.archive import _ext_for

    assert _ext_for(ct, head) == ext


def test_file_deleted_by_retention_is_acked_and_recorded_failed(env: Env) -> None:
    cid = env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(4))
    env.emu.admin.advance(8 * 24 * 3600)  # past F&O's 7-day blob retention
    res = _drain(env)
    assert res["failed"] == 1 and res["archived"] == 0
    assert _statuses(env)[cid] == "Acked"  # otherwise it would come back every 30 minutes forever
    row = env.rows("message")[0]
    assert row["Status"] == "Failed" and row["Acked"] is True and "gone" in row["Reason"]
    # Nothing was written: no archive (a first delivery's claim is fresh, so not even a listing ran).
    assert not env.archive.exists() or env.archive_blobs() == []
    assert not archive_index(env.svc).get(EXPORT_ACTIVITY, cid).archived


def _audit_acks(env: Env, monkeypatch) -> list[str]:
    """Wraps the app's ack: records each correlation id acknowledged before its archive was committed and
    verified (a blob of its own with ``verified=1``); the list must stay empty."""
    from dmf.fno.recurring_api import RecurringApi

    early: list[str] = []
    real_ack = RecurringApi.ack

    def audited(self, activity_id, message):
        cid = message.correlation_id
        verified = [
            b.name
            for b in env.archive.list_blobs(include=["metadata"])
            if cid in b.name and (b.metadata or {}).get("verified") == "1"
        ]
        if not verified:
            early.append(cid)
        return real_ack(self, activity_id, message)

    monkeypatch.setattr(RecurringApi, "ack", audited)
    return early


@pytest.mark.parametrize("kind", ["after_500", "after_503", "after_drop", "after_hang"])
def test_an_ack_whose_answer_is_lost_is_archived_once_and_acked(make_env, monkeypatch, kind: str) -> None:
    """F&O acknowledged the message, then the answer was lost: the ack is repeated (safe), the message is
    not redelivered, and it has exactly one archive, written before the first ack."""
    env = make_env(FNO_HTTP_TIMEOUT_SECONDS="1")
    early = _audit_acks(env, monkeypatch)
    cids = [env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n)) for n in range(3)]
    env.emu.admin.inject_fault("ack", kind, next_n=1, delay_seconds=1.5)
    res = _drain(env, workers=1)
    assert res["archived"] == 3 and res["failed"] == 0 and res["not_acked"] == 0, res
    assert set(_statuses(env).values()) == {"Acked"}
    assert [c["fault"] for c in env.emu.admin.calls("ack")].count(kind) == 1
    assert early == []
    assert env.archive_blobs() == sorted(archive_path("cust-groups", DAY, c, ".zip") for c in cids)
    rows = env.rows("message")
    assert sorted(r["CorrelationId"] for r in rows) == sorted(cids)
    assert all(r["Status"] == "Archived" and r["Acked"] is True for r in rows), rows
    # Nothing comes back after F&O's visibility timeout: it was acknowledged.
    env.emu.admin.advance(1801)
    assert _drain(env, run=RUN + "b")["taken"] == 0


@pytest.mark.parametrize("endpoint", ["dequeue", "download"])
def test_a_lost_dequeue_or_download_answer_loses_no_message(make_env, monkeypatch, endpoint: str) -> None:
    """The dequeue (or download) happened in F&O but its answer was lost: the message is not acked, comes
    back after the visibility timeout, and is archived once."""
    env = make_env()
    early = _audit_acks(env, monkeypatch)
    cids = [env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n)) for n in range(3)]
    env.emu.admin.inject_fault(endpoint, "after_503", next_n=1)
    res = _drain(env, workers=1)
    env.emu.admin.advance(1801)
    res2 = _drain(env, run=RUN + "b", workers=1)
    assert res["archived"] + res2["archived"] == 3, (res, res2)
    assert set(_statuses(env).values()) == {"Acked"}
    assert early == []
    for cid in cids:
        assert [n for n in env.archive_blobs() if cid in n] == [archive_path("cust-groups", DAY, cid, ".zip")]
    archived = [r["CorrelationId"] for r in env.rows("message") if r["Status"] == "Archived"]
    assert sorted(archived) == sorted(cids)  # each archived exactly once


def test_a_large_message_is_staged_in_blocks_verified_then_marked(env: Env, monkeypatch) -> None:
    """Above SMALL_MESSAGE_BYTES the archive is staged in blocks, read back, then marked verified."""
    monkeypatch.setattr("dmf.pipeline.archive.SMALL_MESSAGE_BYTES", 1024)
    early = _audit_acks(env, monkeypatch)
    data = _payload(40)  # ~2 KiB: "large" at this threshold
    cid = env.emu.admin.seed_outbound(EXPORT_ACTIVITY, data)
    res = _drain(env, workers=1)
    assert res["archived"] == 1 and res["failed"] == 0, res
    assert early == []
    bc = env.archive.get_blob_client(archive_path("cust-groups", DAY, cid, ".zip"))
    assert bc.download_blob().readall() == data
    props = bc.get_blob_properties()
    assert props.metadata["verified"] == "1"
    committed, _ = bc.get_block_list("committed")
    assert committed  # staged blocks (one Put Blob leaves no block list)
    assert bytes(props.content_settings.content_md5) == _md5(data)
    assert env.rows("message")[0]["ContentMd5"] == base64.b64encode(_md5(data)).decode()


def test_a_first_delivery_whose_claim_finds_a_verified_archive_adopts_it(env: Env) -> None:
    """The claim races the download on a first delivery; an archive an earlier attempt committed (here
    without F&O having set LastDequeueDateTime) is still adopted, not written again."""
    data = _payload(5)
    cid = env.emu.admin.seed_outbound(EXPORT_ACTIVITY, data)
    idx = archive_index(env.svc)
    stem = archive_stem("cust-groups", DAY, cid)
    assert idx.claim(EXPORT_ACTIVITY, cid, stem, "earlier-run").fresh
    if not env.archive.exists():
        env.archive.create_container()
    from azure.storage.blob import ContentSettings

    earlier = env.archive.get_blob_client(stem + ".zip")
    earlier.upload_blob(
        data,
        metadata={"correlation_id": cid, "verified": "1"},
        content_settings=ContentSettings(content_md5=bytearray(_md5(data))),
    )
    etag = earlier.get_blob_properties().etag
    res = _drain(env, workers=1)
    assert res["archived"] == 1 and res["failed"] == 0, res
    assert _statuses(env)[cid] == "Acked"
    assert env.archive_blobs() == [stem + ".zip"]
    assert earlier.get_blob_properties().etag == etag  # not rewritten
    row = env.rows("message")[0]
    assert row["Status"] == "Archived" and "earlier attempt" in row["Reason"]
    assert idx.get(EXPORT_ACTIVITY, cid).archived


def test_a_message_costs_three_fno_calls_and_no_index_write_after_its_claim(env: Env) -> None:
    """Dequeue, download, ack per message (plus the dequeue that finds the queue empty), as the simplest
    loop makes; the index row is claimed once and, the ack having succeeded, never rewritten."""
    cids = [env.emu.admin.seed_outbound(EXPORT_ACTIVITY, _payload(n)) for n in range(4)]
    res = _drain(env, workers=1)
    assert res["archived"] == 4 and res["empty"], res
    calls = [c["endpoint"] for c in env.emu.admin.calls() if c["endpoint"] in ("dequeue", "download", "ack")]
    assert sorted(calls) == sorted(["dequeue"] * 5 + ["download"] * 4 + ["ack"] * 4)
    idx = archive_index(env.svc)
    for cid in cids:
        entry = idx.get(EXPORT_ACTIVITY, cid)
        assert entry is not None and not entry.archived  # claimed; the acked message never comes back
