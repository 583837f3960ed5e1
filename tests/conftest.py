"""Shared fixtures. Services bind to 127.0.0.1 on free ports, so test runs never collide."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from local.azurite import Azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite (from npm) for the whole session, with a throw-away data directory."""
    az = Azurite().start()
    try:
        yield az
    finally:
        az.stop()


@pytest.fixture
def storage_conn(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A name valid for containers and tables (letters and digits, starts with a letter)."""
    return "t" + uuid.uuid4().hex[:16]
