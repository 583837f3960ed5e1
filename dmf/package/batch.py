"""Batches: a zip of packages, or a small JSON batch manifest naming sibling files and their order.

Batch manifest (``*.batch.json``)::

    {"items": [{"file": "a.zip"}, {"file": "b.csv", "entity": "Customer groups", "source_format": "CSV-Unicode"}],
     "description": "optional"}

``file`` is a plain name (no folders); an item without ``entity`` must be a package (.zip); a raw file
needs ``entity`` (and may set ``source_format``). A batch zip holds packages at its root, imported in
natural name order (``part2`` before ``part10``) unless it also holds a ``*.batch.json``, which then sets
the order and may name raw files too.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dmf.package.fingerprint import sha256_file
from dmf.package.limits import Limits
from dmf.package.problems import Code, Problem, Severity, has_errors
from dmf.package.zipsafe import (
    Budget,
    Tally,
    ZipBombError,
    copy_entry,
    header_problems,
    name_problem,
    precheck,
    root_files,
)

BATCH_SUFFIX = ".batch.json"
MAX_BATCH_MANIFEST_BYTES = 1024 * 1024
_IGNORED = re.compile(r"(^__MACOSX/|(^|/)\.DS_Store$|(^|/)Thumbs\.db$)", re.IGNORECASE)


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(min_length=1, max_length=1024)
    entity: str | None = None
    source_format: str | None = None

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        problem = name_problem(v)
        if problem is not None or v in (".", ".."):
            raise ValueError(f"{v!r} must be a plain file name next to the batch manifest (no folders or ..)")
        if v.casefold().endswith(BATCH_SUFFIX):
            # Itself, or another manifest (which might name this one): its JSON would be imported as data.
            raise ValueError(
                f"{v!r} is a batch manifest; a batch lists packages and data files, never a batch"
            )
        return v

    @property
    def is_package(self) -> bool:
        return self.entity is None


class BatchManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[BatchItem] = Field(min_length=1, max_length=1000)
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> BatchManifest:
        seen: set[str] = set()
        for i, item in enumerate(self.items, start=1):
            key = item.file.casefold()
            if key in seen:
                raise ValueError(f"item {i}: {item.file!r} is listed twice")
            seen.add(key)
            if item.entity is None and not key.endswith(".zip"):
                raise ValueError(f"item {i}: {item.file!r} is not a .zip package, so it needs an entity")
        return self


class BatchManifestError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(Code.BAD_BATCH_MANIFEST, message)


def parse_batch_manifest(data: bytes) -> BatchManifest:
    """Parse and validate a batch manifest. Raises ``BatchManifestError`` with a message naming the item."""
    if len(data) > MAX_BATCH_MANIFEST_BYTES:
        raise BatchManifestError(
            f"the batch manifest is {len(data)} bytes (limit {MAX_BATCH_MANIFEST_BYTES})"
        )
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BatchManifestError(f"the batch manifest is not UTF-8 JSON ({e})") from None
    try:
        return BatchManifest.model_validate(doc)
    except ValidationError as e:
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'manifest'}: {err['msg']}" for err in e.errors()
        )
        raise BatchManifestError(f"invalid batch manifest: {msgs}") from None


@dataclass(frozen=True, slots=True)
class BatchEntry:
    """One thing to import, in order: a package zip, or a raw file to wrap with ``build``."""

    name: str
    path: Path
    kind: Literal["package", "raw"]
    bytes: int
    sha256: str
    entity: str | None = None
    source_format: str | None = None


@dataclass
class BatchExtraction:
    entries: list[BatchEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    manifest: BatchManifest | None = None

    @property
    def ok(self) -> bool:
        return not has_errors(self.problems) and bool(self.entries)

    @property
    def packages(self) -> list[Path]:
        """Paths of the extracted package zips, in import order (raw items are in ``entries`` only)."""
        return [e.path for e in self.entries if e.kind == "package"]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]


def natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.casefold() for t in re.split(r"(\d+)", name)]


def extract_batch_zip(
    path: str | Path, out_dir: str | Path, limits: Limits | None = None, *, name: str | None = None
) -> BatchExtraction:
    """Extract the packages of a batch zip to ``out_dir`` (streamed, zip bomb checked). Never raises for
    bad input: on any error no file is left in ``out_dir`` by this call.

    Every limit holds for the batch zip and the archives in it together (entries, expanded size, ratio
    against the batch zip's size). Extracted files are named by position (``0001.zip``), never after the
    entry. ``name`` is the batch as the user knows it, for messages (default: "the batch zip")."""
    limits = limits or Limits()
    label = name or "the batch zip"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = BatchExtraction()
    p = res.problems
    path = Path(path)
    zf = _open_batch(path, limits, label, p)
    if zf is None:
        return res
    written: list[Path] = []
    tally = Tally(path.stat().st_size)
    with zf:
        p.extend(header_problems(zf, limits, tally=tally))
        if has_errors(p):
            return res
        root: dict[str, zipfile.ZipInfo] = {}
        entries = (i for i in zf.infolist() if not _skipped(i))
        for info in root_files(entries, p):
            if info.file_size:
                root[info.filename.casefold()] = info
        plan = _plan(zf, root, res)
        if has_errors(p):
            return res
        if not plan:
            p.append(Problem(Code.EMPTY_PACKAGE, f"{label} holds no packages"))
            return res
        _extract(zf, plan, out, limits, tally, label, res, written)
    if has_errors(p):
        for w in written:
            w.unlink(missing_ok=True)
        res.entries = []
    return res


def _open_batch(path: Path, limits: Limits, label: str, p: list[Problem]) -> zipfile.ZipFile | None:
    """The batch zip, opened once its size and headers pass; None with a problem otherwise."""
    size = path.stat().st_size
    if size > limits.max_package_file_bytes:
        p.append(Problem(Code.TOO_LARGE, f"{label} is {size} bytes (limit {limits.max_package_file_bytes})"))
        return None
    early = precheck(path, limits)
    if early is not None:
        p.append(early)
        return None
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        p.append(Problem(Code.NOT_A_ZIP, f"{label} is not a zip archive"))
        return None


def _skipped(info: zipfile.ZipInfo) -> bool:
    """Files a desktop adds to a zip (Finder's __MACOSX, .DS_Store, Thumbs.db), and plain folders."""
    return bool(_IGNORED.search(info.filename)) or (
        info.is_dir() and not name_problem(info.filename.rstrip("/"))
    )


_Plan = list[tuple[zipfile.ZipInfo, BatchItem]]


def _plan(zf: zipfile.ZipFile, root: dict[str, zipfile.ZipInfo], res: BatchExtraction) -> _Plan:
    """What to extract, in order: as the batch manifest lists it, else every package in natural order."""
    p = res.problems
    manifests = [i for k, i in root.items() if k.endswith(BATCH_SUFFIX)]
    if len(manifests) > 1:
        p.append(Problem(Code.BAD_BATCH_MANIFEST, "the batch zip holds more than one *.batch.json"))
        return []
    if not manifests:
        return _plan_by_name(root, p)
    try:
        with zf.open(manifests[0]) as f:
            res.manifest = parse_batch_manifest(f.read(MAX_BATCH_MANIFEST_BYTES + 1))
    except BatchManifestError as e:
        p.append(
            Problem(Code.BAD_BATCH_MANIFEST, f"{manifests[0].filename}: {e}", file=manifests[0].filename)
        )
        return []
    return _plan_by_manifest(res.manifest, root, manifests[0], p)


def _plan_by_manifest(
    manifest: BatchManifest, root: dict[str, zipfile.ZipInfo], itself: zipfile.ZipInfo, p: list[Problem]
) -> _Plan:
    plan: _Plan = []
    listed = set()
    for item in manifest.items:
        info = root.get(item.file.casefold())
        if info is None:
            missing = f"the batch manifest lists {item.file!r}, which is not in the zip"
            p.append(Problem(Code.INPUT_FILE_MISSING, missing, file=item.file))
            continue
        listed.add(item.file.casefold())
        plan.append((info, item))
    for k, info in root.items():
        if k not in listed and info is not itself:
            p.append(_skipped_file(info, "is not listed in the batch manifest and is skipped"))
    return plan


def _plan_by_name(root: dict[str, zipfile.ZipInfo], p: list[Problem]) -> _Plan:
    plan: _Plan = []
    for k in sorted(root, key=natural_key):
        info = root[k]
        if k.endswith(".zip"):
            plan.append((info, BatchItem(file=info.filename)))
        else:
            p.append(_skipped_file(info, "is not a package (.zip) and is skipped"))
    return plan


def _skipped_file(info: zipfile.ZipInfo, why: str) -> Problem:
    return Problem(Code.UNREFERENCED_FILE, f"{info.filename!r} {why}", Severity.WARNING, file=info.filename)


def _extract(
    zf: zipfile.ZipFile,
    plan: _Plan,
    out: Path,
    limits: Limits,
    tally: Tally,
    label: str,
    res: BatchExtraction,
    written: list[Path],
) -> None:
    """Extract the plan's entries in order (each path is added to ``written`` before it is written)."""
    p = res.problems
    budget = Budget(limits.max_uncompressed_bytes)
    try:
        for n, (info, item) in enumerate(plan, start=1):
            # Named by position (unique, in import order on disk), never after the entry.
            dest = out / f"{n:04d}{_safe_suffix(info.filename)}"
            written.append(dest)
            with open(dest, "wb") as f:
                size = copy_entry(zf, info, f, budget)
            inner = _inner_archive_problems(dest, info.filename, limits, tally)
            if inner:
                p.extend(inner)
                return
            kind: Literal["package", "raw"] = "package" if item.is_package else "raw"
            res.entries.append(
                BatchEntry(
                    info.filename, dest, kind, size, sha256_file(dest), item.entity, item.source_format
                )
            )
    except ZipBombError as e:
        p.append(Problem(Code.ZIP_BOMB, str(e)))
    except (zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError, zlib.error) as e:
        p.append(Problem(Code.ZIP_CORRUPT, f"{label}: {e}"))


_ARCHIVES = (".zip", ".xlsx")


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 8 else ""


def _inner_archive_problems(path: Path, name: str, limits: Limits, tally: Tally) -> list[Problem]:
    """Limits for an archive inside the batch, counted with the batch as one input. A member that is not
    a zip is left to the check that reads it (inspect, build)."""
    if not name.lower().endswith(_ARCHIVES):
        return []
    early = precheck(path, limits)
    if early is not None:
        return [Problem(early.code, f"{name}: {early.message}", file=name)]
    try:
        with zipfile.ZipFile(path) as inner:
            return header_problems(inner, limits, tally=tally, where=f"{name}: ")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []
