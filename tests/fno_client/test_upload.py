"""Upload to the write URL against real Azurite (the emulator's SAS URLs point there too)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
from pytest_httpserver import HTTPServer

from dmf.fno.clients import package_api
from dmf.fno.errors import PermanentFnoError
from dmf.settings import Settings
from local.azurite import ACCOUNT, ACCOUNT_KEY, Azurite

ACTION = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."


@pytest.fixture
def dmf_container(azurite: Azurite, unique_name: str) -> Iterator[BlobServiceClient]:
    svc = BlobServiceClient.from_connection_string(azurite.connection_string)
    svc.create_container(unique_name)
    yield svc.get_container_client(unique_name)
    svc.delete_container(unique_name)


def sas_url(container, blob: str, perm: str = "rcw") -> str:
    sas = generate_blob_sas(
        ACCOUNT,
        container.container_name,
        blob,
        account_key=ACCOUNT_KEY,
        permission=BlobSasPermissions.from_string(perm),
        expiry=datetime.now(UTC) + timedelta(minutes=35),
    )
    return f"{container.url}/{blob}?{sas}"


def chunks(total: int, size: int = 1 << 20, seed: bytes = b"x") -> Iterator[bytes]:
    block = hashlib.sha256(seed).digest() * (size // 32)
    sent = 0
    while sent < total:
        part = block[: min(size, total - sent)]
        sent += len(part)
        yield part


def test_small_upload_single_put(settings: Settings, dmf_container) -> None:
    url = sas_url(dmf_container, "small.zip")
    package_api(settings, "main").upload_to_write_url(url, b"PK\x03\x04tiny", None)
    blob = dmf_container.get_blob_client("small.zip")
    assert blob.download_blob().readall() == b"PK\x03\x04tiny"
    assert blob.get_blob_properties().blob_type == "BlockBlob"


def test_large_stream_goes_up_in_blocks(settings: Settings, dmf_container) -> None:
    total = 21 * 2**20 + 123
    expected = hashlib.sha256(b"".join(chunks(total))).hexdigest()
    url = sas_url(dmf_container, "large.zip")
    package_api(settings, "main").upload_to_write_url(url, chunks(total), None)
    blob = dmf_container.get_blob_client("large.zip")
    digest = hashlib.sha256()
    for part in blob.download_blob().chunks():
        digest.update(part)
    assert digest.hexdigest() == expected
    committed, _ = blob.get_block_list("committed")
    assert len(committed) >= 5  # 4 MiB blocks, not one giant put
    assert blob.get_blob_properties().size == total


def test_file_object_with_known_length(settings: Settings, dmf_container) -> None:
    data = os.urandom(9 * 2**20)
    url = sas_url(dmf_container, "file.zip")
    package_api(settings, "main").upload_to_write_url(url, io.BytesIO(data), len(data))
    assert dmf_container.get_blob_client("file.zip").download_blob().readall() == data


def test_upload_package_asks_for_the_url_right_before_use(
    fno: HTTPServer, settings: Settings, dmf_container
) -> None:
    url = sas_url(dmf_container, "pkg-42.zip")
    fno.expect_request(ACTION + "GetAzureWriteUrl", json={"uniqueFileName": "pkg-42"}).respond_with_json(
        {"value": json.dumps({"BlobId": "{b10b}", "BlobUrl": url})}
    )
    write = package_api(settings, "main").upload_package("pkg-42", b"PK\x05\x06" + bytes(18), 22)
    assert write.blob_id == "{b10b}"
    assert dmf_container.get_blob_client("pkg-42.zip").download_blob().readall()[:4] == b"PK\x05\x06"


def test_read_only_sas_is_a_permanent_error_without_the_signature(settings: Settings, dmf_container) -> None:
    url = sas_url(dmf_container, "ro.zip", perm="r")
    sig = url.split("sig=", 1)[1].split("&")[0]
    with pytest.raises(PermanentFnoError) as info:
        package_api(settings, "main").upload_to_write_url(url, b"data", 4)
    assert info.value.status == 403
    assert sig not in str(info.value)
