"""Fixtures for the local runner tests: runners bound to the session's Azurite, each on its own task hub."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from local.azurite import Azurite
from local.functions_runner import LocalRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub() -> str:
    return "rt" + uuid.uuid4().hex[:12]


@pytest.fixture
def make_runner(azurite: Azurite, hub: str) -> Iterator[Callable[..., LocalRunner]]:
    started: list[LocalRunner] = []

    def make(app, **kwargs) -> LocalRunner:
        kwargs.setdefault("storage_connection_string", azurite.connection_string)
        kwargs.setdefault("task_hub", hub)
        kwargs.setdefault("host_json", ROOT / "host.json")
        settings = {"TASKHUB_NAME": hub, **kwargs.pop("settings", {})}
        runner = LocalRunner(app=app, settings=settings, **kwargs).start()
        started.append(runner)
        return runner

    yield make
    for r in started:
        r.stop()
