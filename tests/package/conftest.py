"""Helpers for package tests: sample locations and small package builders."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from dmf.package.catalogue import Catalogue, default_catalogue
from dmf.package.manifest import (
    EntityData,
    Manifest,
    PackageHeader,
    entity_maps_for,
    render_manifest,
    render_package_header,
)

# Real F&O files live in ../shared beside the checkout (never an absolute path of one machine).
CHECKOUT = Path(__file__).resolve().parents[2]
SAMPLES = CHECKOUT.parent / "shared" / "samples"


@pytest.fixture
def samples() -> Path:
    if not SAMPLES.exists():
        pytest.skip(
            f"real F&O samples are not available: expected in ../shared/samples beside the checkout ({SAMPLES})"
        )
    return SAMPLES


@pytest.fixture
def catalogue() -> Catalogue:
    return default_catalogue()


def csv_unicode(text: str) -> bytes:
    return b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")


def manifest_bytes(
    entities: list[tuple[str, str, str, list[str]]], project: str = "Proj", target: str | None = None
) -> bytes:
    """entities: (label, input file, source format, columns)."""
    ents = [
        EntityData(entity_name=label, input_file_path=f, source_format=fmt, entity_map_list=entity_maps_for(cols),
                   target_entity=target)
        for label, f, fmt, cols in entities
    ]  # fmt: skip
    return render_manifest(Manifest(definition_group_name=project, entities=ents))


def header_bytes() -> bytes:
    return render_package_header(PackageHeader(description="Proj"))


def make_zip(path: Path, files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def groups_package(
    tmp_path: Path,
    csv_text: str,
    *,
    raw: bytes | None = None,
    name: str = "pkg.zip",
    extra: dict[str, bytes] | None = None,
) -> Path:
    files = {
        "Manifest.xml": manifest_bytes([("Customer groups", "groups.csv", "CSV-Unicode",
                                         ["CUSTOMERGROUPID", "DESCRIPTION"])]),
        "PackageHeader.xml": header_bytes(),
        "groups.csv": raw if raw is not None else csv_unicode(csv_text),
        **(extra or {}),
    }  # fmt: skip
    return make_zip(tmp_path / name, files)


def read_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
