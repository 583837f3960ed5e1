"""Package zips written one part at a time: the data entry is streamed, the XML files follow it."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import BinaryIO

from dmf.package.build.context import COMPRESS_LEVEL, BuiltPackage, Ctx
from dmf.package.fingerprint import sha256_file


class Parts:
    """Writes package zips one part at a time; the data entry is streamed, the XML files follow it."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.built: list[BuiltPackage] = []
        self.paths: list[Path] = []
        self.zf: zipfile.ZipFile | None = None
        self.stream: BinaryIO | None = None
        self.rows = 0
        self.bytes = 0
        self.columns: list[str] = []

    @property
    def open(self) -> bool:
        return self.zf is not None

    def start(self, prefix: bytes) -> None:
        n = len(self.paths) + 1
        path = self.ctx.out_dir / f"{self.ctx.stem}-part{n:03d}.zip"
        self.paths.append(path)
        self.zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)
        info = zinfo(self.ctx.data_name, self.ctx.compress_level)
        big = self.ctx.limits.max_bytes_per_package is None or self.ctx.limits.max_bytes_per_package > 2**31
        self.stream = self.zf.open(info, "w", force_zip64=big)
        self.rows = 0
        self.bytes = 0
        self.write(prefix, 0)

    def write(self, data: bytes, rows: int) -> None:
        assert self.stream is not None
        self.stream.write(data)
        self.bytes += len(data)
        self.rows += rows

    def finish_part(self, suffix: bytes = b"", columns: list[str] | None = None) -> None:
        assert self.zf is not None and self.stream is not None
        if suffix:
            self.write(suffix, 0)
        self.stream.close()
        manifest, header = self.ctx.package_xml(columns if columns is not None else self.columns)
        self.zf.writestr(zinfo("Manifest.xml"), manifest)
        self.zf.writestr(zinfo("PackageHeader.xml"), header)
        self.zf.close()
        path = self.paths[-1]
        self.built.append(
            BuiltPackage(
                path, self.rows, path.stat().st_size, "", self.ctx.data_name, self.bytes, len(self.paths)
            )
        )
        self.zf = None
        self.stream = None

    def abandon(self) -> None:
        if self.zf is not None:
            try:
                if self.stream is not None:
                    self.stream.close()
                self.zf.close()
            except Exception:  # noqa: S110 - the partial file is deleted next; its close error is noise
                pass
        self.zf = None
        self.stream = None
        for p in self.paths:
            p.unlink(missing_ok=True)
        self.built = []

    def finalise(self) -> list[BuiltPackage]:
        """Name a single part ``<stem>.zip`` (parts are ``<stem>-partNNN.zip``) and fingerprint every part."""
        out = []
        if len(self.built) == 1:
            only = self.built[0]
            dest = only.path.with_name(f"{self.ctx.stem}.zip")
            only.path.replace(dest)
            self.built = [BuiltPackage(dest, only.rows, only.bytes, "", only.data_file, only.data_bytes, 1)]
        for b in self.built:
            out.append(
                BuiltPackage(b.path, b.rows, b.bytes, sha256_file(b.path), b.data_file, b.data_bytes, b.part)
            )
        return out


def zinfo(name: str, level: int = COMPRESS_LEVEL) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi._compresslevel = level  # type: ignore[attr-defined]  # ZipInfo has no public setter
    zi.external_attr = 0o644 << 16
    return zi
