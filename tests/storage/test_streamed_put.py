"""One streamed Put Blob for transfers of known size (dmf.storage.transfer.upload_stream), on real Azurite."""

from __future__ import annotations

import hashlib
import os

import pytest
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from dmf.storage import transfer

MiB = 2**20


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()  # Azure's Content-MD5, not security


@pytest.fixture
def container(storage_conn: str, unique_name: str):
    return BlobServiceClient.from_connection_string(storage_conn).create_container(unique_name)


def _pieces(data: bytes, size: int = MiB + 7):
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_file_goes_up_in_one_put_with_its_md5_and_metadata(container, tmp_path) -> None:
    data = os.urandom(9 * MiB + 123)
    path = tmp_path / "p.zip"
    path.write_bytes(data)
    dest = container.get_blob_client("staged.zip")
    res = transfer.upload_path(path, dest, metadata={"source": "x"}, content_type="application/zip")
    assert res.size == len(data)
    assert dest.download_blob().readall() == data
    props = dest.get_blob_properties()
    assert bytes(props.content_settings.content_md5) == _md5(data)
    assert props.content_settings.content_type == "application/zip"
    assert props.metadata == {"source": "x"}
    assert dest.get_block_list("committed") == ([], [])  # one Put Blob: no staged blocks


def test_a_streamed_copy_is_one_put_checked_against_the_source_md5(container) -> None:
    data = os.urandom(10 * MiB + 5)  # more than two read ranges
    src = container.get_blob_client("src.zip")
    src.upload_blob(data, content_settings=ContentSettings(content_md5=bytearray(_md5(data))))
    dest = container.get_blob_client("dest.zip")
    res = transfer.copy_blob(src, dest, prefer_server_side=False)
    assert res.method == "stream" and res.size == len(data)
    assert dest.download_blob().readall() == data
    assert bytes(dest.get_blob_properties().content_settings.content_md5) == _md5(data)
    assert dest.get_block_list("committed") == ([], [])


def test_the_service_refuses_a_body_that_differs_from_the_md5_given(container) -> None:
    data = os.urandom(3 * MiB)
    dest = container.get_blob_client("wrong.zip")
    with pytest.raises(HttpResponseError):
        transfer.upload_stream(lambda: _pieces(data), len(data), dest, content_md5=_md5(b"other bytes"))
    with pytest.raises(ResourceNotFoundError):
        dest.get_blob_properties()  # nothing committed


@pytest.mark.parametrize("short", [True, False])
def test_a_source_that_differs_from_its_announced_size_commits_nothing(container, monkeypatch, short) -> None:
    monkeypatch.setattr(transfer, "PUT_ATTEMPTS", 1)
    data = os.urandom(3 * MiB)
    dest = container.get_blob_client("short.zip")
    announced = len(data) + (1 if short else -1)
    with pytest.raises((AzureError, OSError)):
        transfer.upload_stream(lambda: _pieces(data), announced, dest)
    with pytest.raises(ResourceNotFoundError):
        dest.get_blob_properties()


def test_a_failed_put_is_repeated_whole_from_a_fresh_source(container) -> None:
    data = os.urandom(2 * MiB + 1)
    dest = container.get_blob_client("again.zip")
    opened = []

    def dying():
        yield data[:MiB]
        raise ConnectionResetError("the source went away mid-body")  # the request fails mid-body

    def open_chunks():
        opened.append(1)
        return dying() if len(opened) == 1 else iter(_pieces(data))

    res = transfer.upload_stream(open_chunks, len(data), dest)
    assert len(opened) == 2 and res.size == len(data)
    assert dest.download_blob().readall() == data


def test_above_the_single_put_limit_blocks_are_staged(container, monkeypatch) -> None:
    monkeypatch.setattr(transfer, "SINGLE_PUT_MAX", MiB)
    data = os.urandom(3 * MiB + 11)
    dest = container.get_blob_client("blocks.zip")
    res = transfer.upload_stream(lambda: _pieces(data), len(data), dest)
    assert res.size == len(data)
    assert dest.download_blob().readall() == data
    committed, _ = dest.get_block_list("committed")
    assert committed
    assert bytes(dest.get_blob_properties().content_settings.content_md5) == _md5(data)
