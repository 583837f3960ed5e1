"""ImportFromPackage under refusals and lost answers, on the embedded stack (virtual clock).

- A refusal (503 with Retry-After, 429) is "not done": the import is called again after Retry-After, and
  the environment's gate is not held for the not-found grace, so the next drop does not wait minutes.
- A lost answer (F&O started the import, then the client got a 5xx, a reset or no answer in time) is
  ambiguous: F&O is asked about our execution id, and the drop ends with exactly one import.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from local.embedded_stack import Stack
from local.fno_emulator import EmulatorConfig
from local.samples import customer_groups_csv

ASYNC = "ImportFromPackageAsync"


def _drop_two(stack: Stack) -> None:
    stack.drop("USMF/CustomerGroups-Import/Customer groups__a.csv", customer_groups_csv(["A1", "A2"]))
    stack.drop("USMF/CustomerGroups-Import/Customer groups__b.csv", customer_groups_csv(["B1"]))
    stack.settle()


def _imports_per_execution(stack: Stack) -> Counter:
    return Counter(e["executionId"] for e in stack.emu.admin.executions() if e["kind"] == "import")


def _assert_all_imported_once(stack: Stack) -> None:
    drops = stack.drops()
    assert len(drops) == 2 and all(d["Status"] == "Succeeded" for d in drops), [
        (d["SourceBlob"], d["Status"], d.get("Reason")) for d in drops
    ]
    per_id = _imports_per_execution(stack)
    assert len(per_id) == 2 and set(per_id.values()) == {1}, per_id
    assert stack.emu.admin.violations == 0
    rows = {r["CUSTOMERGROUPID"] for r in stack.emu.admin.data("USMF", "Customer groups")}
    assert rows == {"A1", "A2", "B1"}


def _at(call: dict) -> datetime:
    return datetime.fromisoformat(call["arrived"])


@pytest.mark.parametrize("kind", ["503", "429"])
def test_a_refused_import_is_called_again_after_retry_after_and_the_gate_moves_on(
    azurite, unique_name, kind: str
) -> None:
    with Stack(azurite, unique_name) as stack:
        stack.emu.admin.inject_fault(ASYNC, kind, next_n=1, retry_after=1)
        _drop_two(stack)
        _assert_all_imported_once(stack)
        calls = stack.import_calls()
        assert [c["status"] for c in calls] == [int(kind), 200, 200], calls
        # Re-called once Retry-After had passed, not after the 600-s not-found grace...
        assert 1 <= (_at(calls[1]) - _at(calls[0])).total_seconds() < 30
        # ...and the next drop's import followed within its normal polling, not 10 minutes later.
        assert (_at(calls[2]) - _at(calls[0])).total_seconds() < 120


@pytest.mark.parametrize("kind", ["after_503", "after_drop"])
def test_an_import_whose_answer_is_lost_is_imported_exactly_once(azurite, unique_name, kind: str) -> None:
    with Stack(azurite, unique_name) as stack:
        stack.emu.admin.inject_fault(ASYNC, kind, next_n=1)
        _drop_two(stack)
        _assert_all_imported_once(stack)
        calls = stack.import_calls()
        assert calls[0]["fault"] == kind and len(calls) == 2, calls
        assert (_at(calls[1]) - _at(calls[0])).total_seconds() < 120


def test_a_timed_out_import_that_fno_shows_late_is_not_imported_twice(azurite, unique_name) -> None:
    """The answer hangs past the client's timeout, and F&O says "not found" for longer than the verify
    grace: the import is called again, F&O answers that our execution id exists, and that counts as started."""
    cfg = EmulatorConfig()
    cfg.timings.not_found_seconds = 90
    with Stack(azurite, unique_name, emulator_config=cfg, FNO_HTTP_TIMEOUT_SECONDS="2") as stack:
        stack.emu.admin.inject_fault(ASYNC, "after_hang", next_n=1, delay_seconds=3)
        _drop_two(stack)
        _assert_all_imported_once(stack)
        calls = sorted(stack.import_calls(), key=_at)  # a hung call is logged when it ends
        # The hung call, the recall answered "already exists", and the second drop's import.
        assert [c["status"] for c in calls] == [0, 400, 200], calls
        # The gate was held for about the verify grace (60 s), not the 600-s not-found grace.
        assert (_at(calls[2]) - _at(calls[0])).total_seconds() < 300
