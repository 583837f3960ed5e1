"""Storage layer against a real Azurite: streamed and server-side copies, bounded memory, outcome rows."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import UTC, datetime

import psutil
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from dmf.storage.outcomes import OutcomeStore, day_key, safe_key
from dmf.storage.transfer import copy_blob, read_sas_url, stream_to_blob

MiB = 2**20


SEED = os.urandom(4 * MiB)


def _chunks(total: int, chunk: int = 4 * MiB):
    seed = SEED
    sent, n = 0, 0
    while sent < total:
        size = min(chunk, total - sent)
        # Vary each chunk so a wrong block order would change the digest.
        yield n.to_bytes(8, "big") + seed[8:size]
        sent += size
        n += 1


@pytest.fixture
def containers(storage_conn: str, unique_name: str):
    svc = BlobServiceClient.from_connection_string(storage_conn)
    src = svc.create_container(unique_name + "src")
    dst = svc.create_container(unique_name + "dst")
    return src, dst


def test_streamed_copy_of_200_mb_keeps_memory_bounded(containers) -> None:
    src_c, dst_c = containers
    total = 200 * MiB
    expected = hashlib.md5(usedforsecurity=False)  # integrity (Content-MD5)
    for c in _chunks(total):
        expected.update(c)
    src = src_c.get_blob_client("big.bin")
    up = stream_to_blob(_chunks(total), src)
    assert up.size == total

    dst = dst_c.get_blob_client("big-copy.bin")
    # Resident memory, sampled: each ranged GET makes the SDK/urllib3 allocate several times the range
    # that is never touched (tracemalloc counts it, RSS does not), so RSS is what "bounded" means here.
    proc = psutil.Process()
    idle = peak = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = copy_blob(src, dst, prefer_server_side=False)
    finally:
        done.set()
        sampler.join()
    assert result.method == "stream"
    assert result.size == total
    # 3 read chunks and 6 blocks of 4 MiB (transfer.py's bounds) plus SDK/HTTP buffers; a read-it-all
    # copy would peak above 200 MiB.
    above = (peak - idle) / MiB
    assert above < 64, f"peak RSS {above:.1f} MiB above the level before the copy"
    got = hashlib.md5(usedforsecurity=False)
    for chunk in dst.download_blob().chunks():
        got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()
    assert dst.get_blob_properties().size == total


def test_server_side_copy_into_a_sas_url(containers) -> None:
    src_c, dst_c = containers
    src = src_c.get_blob_client("pkg.zip")
    data = b"PK" + os.urandom(3 * MiB)
    src.upload_blob(data)
    # The destination is addressed only by a SAS URL, as F&O's GetAzureWriteUrl hands it out.
    from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

    dst_name = "fno/pkg.zip"
    token = generate_blob_sas(
        dst_c.account_name,
        dst_c.container_name,
        dst_name,
        account_key=dst_c.credential.account_key,
        permission=BlobSasPermissions(read=True, write=True, create=True),
        expiry=datetime.now(UTC).replace(year=datetime.now(UTC).year + 1),
    )
    dest = BlobClient.from_blob_url(f"{dst_c.url}/{dst_name}?{token}")
    result = copy_blob(src, dest)
    assert result.method == "server"
    assert dst_c.get_blob_client(dst_name).download_blob().readall() == data


def test_server_side_copy_falls_back_to_streaming_when_source_unreadable(containers) -> None:
    src_c, dst_c = containers
    src = src_c.get_blob_client("a.bin")
    src.upload_blob(b"x" * 1000)
    dst = dst_c.get_blob_client("b.bin")
    # A source URL the service cannot read (no SAS, private container) makes Copy Blob fail.
    result = copy_blob(src, dst, source_url=src.url + "-missing")
    assert result.method == "stream"
    assert dst.download_blob().readall() == b"x" * 1000


def test_read_sas_url_is_readable_anonymously(containers) -> None:
    src_c, _ = containers
    blob = src_c.get_blob_client("r.txt")
    blob.upload_blob(b"hello")
    from azure.storage.blob import BlobClient

    assert BlobClient.from_blob_url(read_sas_url(blob)).download_blob().readall() == b"hello"


def test_outcome_rows_round_trip_and_are_redacted(storage_conn: str, unique_name: str) -> None:
    tables = TableServiceClient.from_connection_string(storage_conn)
    store = OutcomeStore(tables.create_table(unique_name))
    day = day_key(datetime(2026, 11, 25, 23, 59, tzinfo=UTC))
    run = "in-abc123"
    store.upsert(day, run, {"Kind": "drop", "Status": "Running", "SourceBlob": "inbound/usmf/a#b?.csv"})
    store.upsert(
        day,
        f"{run}~001",
        {
            "Kind": "package",
            "Status": "Failed",
            "Records": 12,
            "ErrorSummary": "see https://x.blob.core.windows.net/dmf/e.csv?sv=1&sig=SECRETSIG123 Bearer abc.def",
            "ErrorFiles": ["import-errors/in-abc123/001/staging.csv"],
            "StartedAt": datetime(2026, 11, 25, 23, 0, tzinfo=UTC),
        },
    )
    store.upsert(day, run, {"Status": "Failed", "PackageCount": 1})
    rows = store.rows_for_run(day, run)
    assert [r["RowKey"] for r in rows] == [run, f"{run}~001"]
    summary, pkg = rows
    assert summary["Status"] == "Failed" and summary["Kind"] == "drop" and summary["PackageCount"] == 1
    assert (
        summary["SourceBlob"] == "inbound/usmf/a#b?.csv"
    )  # values keep their text; only keys are constrained
    assert pkg["Records"] == 12
    assert "SECRETSIG123" not in pkg["ErrorSummary"] and "sig=REDACTED" in pkg["ErrorSummary"]
    assert "abc.def" not in pkg["ErrorSummary"]
    assert pkg["ErrorFiles"] == '["import-errors/in-abc123/001/staging.csv"]'
    assert store.get(day, "nope") is None
    assert safe_key("a/b\\c#d?e\x01") == "a_b_c_d_e_"


def test_reads_pinned_to_a_version_refuse_a_replaced_blob(containers) -> None:
    from azure.core.exceptions import ResourceModifiedError

    from dmf.storage.transfer import stream_blob

    src_c, _ = containers
    blob = src_c.get_blob_client("v.csv")
    first = blob.upload_blob(b"version one")["etag"]
    assert b"".join(stream_blob(blob, etag=first)) == b"version one"
    blob.upload_blob(b"version two", overwrite=True)
    with pytest.raises(ResourceModifiedError):
        b"".join(stream_blob(blob, etag=first))
    assert b"".join(stream_blob(blob)) == b"version two"
