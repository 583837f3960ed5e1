"""Integration with real storage (Azurite): build straight from a blob download stream and upload the
packages; a batch manifest read from a blob names sibling blobs."""

from __future__ import annotations

import zipfile

from azure.storage.blob import BlobServiceClient

from dmf.package.batch import parse_batch_manifest
from dmf.package.build import build_packages_from_raw
from dmf.package.fingerprint import sha256_stream
from dmf.package.inspect import inspect_package
from dmf.package.limits import Limits
from dmf.package.problems import Code


def test_blob_stream_to_packages_and_back(azurite, unique_name, tmp_path, catalogue):
    # Small download chunks force many network reads, so the build really streams.
    svc = BlobServiceClient.from_connection_string(
        azurite.connection_string, max_single_get_size=64 * 1024, max_chunk_get_size=64 * 1024
    )
    container = svc.create_container(unique_name)
    rows = "".join(f"G{i:05d},Group {i} – ünïcode\n" for i in range(5000))
    raw = ("CUSTOMERGROUPID,DESCRIPTION\n" + rows).encode()
    container.upload_blob("inbound/customer groups.csv", raw)
    blob = container.get_blob_client("inbound/customer groups.csv")
    stream = blob.download_blob(max_concurrency=1)
    res = build_packages_from_raw(
        stream,  # type: ignore[arg-type]  # StorageStreamDownloader has read(size)
        file_name=blob.blob_name,
        entity=catalogue.get("Customer groups"),
        source_format="CSV-Unicode",
        data_project="CG",
        limits=Limits(max_rows_per_package=2000),
        out_dir=tmp_path,
    )
    assert res.ok, res.problems
    assert [p.rows for p in res.packages] == [2000, 2000, 1000]
    assert res.packages[0].data_file == "customer groups.csv"
    for p in res.packages:
        with open(p.path, "rb") as f:
            container.upload_blob(f"packages/{p.path.name}", f)
    # Inspect straight from a blob download stream (spooled to a temp file inside).
    streamed = inspect_package(container.download_blob(f"packages/{res.packages[0].path.name}"), catalogue=catalogue,
                               limits=Limits(max_rows_per_package=2000))  # fmt: skip
    assert streamed.ok and streamed.row_counts == {"Customer groups": 2000}
    too_big = inspect_package(container.download_blob(f"packages/{res.packages[0].path.name}"),
                              limits=Limits(max_package_file_bytes=1000))  # fmt: skip
    assert [p.code for p in too_big.problems] == [Code.TOO_LARGE]
    for p in res.packages:
        downloaded = tmp_path / f"dl-{p.path.name}"
        downloaded.write_bytes(container.download_blob(f"packages/{p.path.name}").readall())
        assert sha256_stream(open(downloaded, "rb")) == p.sha256  # noqa: SIM115
        report = inspect_package(downloaded, catalogue=catalogue, limits=Limits(max_rows_per_package=2000))
        assert report.ok, report.problems
    with zipfile.ZipFile(res.packages[2].path) as zf:
        assert zf.read("customer groups.csv").decode("utf-16").endswith("G04999,Group 4999 – ünïcode\r\n")
    # Same content dropped again is recognised from the stream fingerprint alone.
    assert sha256_stream(container.download_blob("inbound/customer groups.csv")) == sha256_stream(
        blob.download_blob()
    )


def test_batch_manifest_from_blob_names_existing_siblings(azurite, unique_name):
    container = BlobServiceClient.from_connection_string(azurite.connection_string).create_container(
        unique_name
    )
    container.upload_blob("drop/a.zip", b"PK")
    container.upload_blob("drop/b.csv", b"X\r\n1\r\n")
    container.upload_blob("drop/run.batch.json", b'{"items": [{"file": "b.csv", "entity": "Customer groups"},'
                                                 b' {"file": "a.zip"}]}')  # fmt: skip
    manifest = parse_batch_manifest(container.download_blob("drop/run.batch.json").readall())
    for item in manifest.items:
        assert container.get_blob_client(f"drop/{item.file}").exists()
    assert [i.file for i in manifest.items] == ["b.csv", "a.zip"]
