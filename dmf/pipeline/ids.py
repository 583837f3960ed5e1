"""Deterministic identifiers: the same blob version always maps to the same orchestration and execution."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9\-]+")


def drop_instance_id(container: str, name: str, version: str) -> str:
    """Instance id for a dropped blob version (etag or version id): repeated deliveries map to it."""
    digest = hashlib.sha256(f"{container}/{name}|{version}".encode()).hexdigest()[:32]
    return f"drop-{digest}"


def package_instance_id(drop_id: str, seq: int) -> str:
    return f"{drop_id}-p{seq:03d}"


def execution_id(data_project: str, package_instance: str) -> str:
    """Our own DMF execution (job) id, recorded before ImportFromPackage is called.

    Shaped like RIS's ``{DataProject}-{timestamp}-{guid}`` convention but deterministic, so a retried
    activity can ask F&O about exactly this id instead of importing again.
    """
    return f"{project_prefix(data_project, 'import')}-{package_instance}"


def project_prefix(data_project: str, fallback: str) -> str:
    """A data project name made safe for a DMF execution id (at most 40 characters)."""
    return _UNSAFE.sub("-", data_project).strip("-")[:40] or fallback


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "x"


# A package instance id as ``package_instance_id`` builds it: a drop (or a retry of one: ``-rNN``) and ``-pNNN``.
_PACKAGE_INSTANCE = re.compile(r"(drop-[0-9a-f]{32}(?:-r\d{2,})*-p\d{3,})\Z")


def package_instance_from_execution(exec_id: str) -> str | None:
    """The import orchestration an execution id of ours belongs to (the inverse of ``execution_id``), or
    None for any other execution (F&O's own ids, other tools' imports). No storage is read."""
    m = _PACKAGE_INSTANCE.search(exec_id or "")
    if m is None or not exec_id[: m.start()].endswith("-"):
        return None
    return m.group(1)
