"""Helpers for the CLI's tests: run ``dmf.cli.main`` in this process against the embedded stack."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pytest

from dmf.cli import main
from tests.e2e_support import Stack


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def stack(azurite, unique_name):
    with Stack(azurite, unique_name) as s:
        yield s
    assert s.loop_blocks == [], "client functions blocked the event loop"


@pytest.fixture
def cli(capsys):
    """``cli(stack, "retry", id)`` → Run; the stack's URL and function key are passed as options."""

    def run(stack: Stack | None, *args: str, key: str | None = None) -> Run:
        argv = list(args)
        if stack is not None:
            argv += ["--url", stack.runner.http_base_url, "--key", key or stack.runner.function_key]
        capsys.readouterr()
        rc = main(argv)
        cap = capsys.readouterr()
        if stack is not None:  # the key is never shown
            assert stack.runner.function_key not in cap.out + cap.err
        return Run(rc, cap.out, cap.err)

    return run


def wait(cond, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("condition not met in time")
