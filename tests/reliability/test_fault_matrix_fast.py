"""Fault matrix, fast subset of ``bench/reliability.py`` (issue #14): a few fault kinds × {inbound drops,
outbound drain, scheduled export, enqueue}, each fault kind on one embedded stack (virtual clock) running
every flow it can reach at once. The profiles, the workload and the counting live in
``local/reliability.py`` (shared with the full matrix); counted from the emulator's admin API (executions,
messages, violations), the archive container, the outcome table and an audit of the app's ack calls, and
every count must be 0:

- inbound: lost drops (a drop not ending with its one final row, or rows missing in F&O), double imports
  (an execution id imported twice, or more imports than packages), overlapping imports (the emulator's
  parallel-import violations, peak concurrent imports > 1);
- drain: lost messages (seeded but never archived-and-acked, even after F&O's redelivery), messages
  archived twice (more than one archive blob or "Archived" row), acks before archive (an ack sent while
  the message had no verified archive);
- scheduled export: lost exports (the run not Succeeded or without its archive), double exports;
- enqueue: lost drops, files enqueued twice (an ambiguous enqueue is reported Failed, never repeated).

Faults stay on while the work runs; a message the faults left un-acked gets F&O's redelivery (virtual clock
past the visibility timeout) and another drain, with the faults still on, as production would.
"""

from __future__ import annotations

import pytest

from local.reliability import FAULTS, Scale, run_inproc, run_killed, total

SCALE = Scale(drops=4, messages=6, enqueues=1)
# What must have been hit for the cell to mean anything: (endpoint, or a prefix of "endpoint:kind").
HIT = {
    "429 storm": [
        "ImportFromPackageAsync",
        "ExportToPackageAsync|GetExportedPackageUrl",
        "dequeue|download|ack",
    ],
    "5xx 20%": [
        "ImportFromPackageAsync",
        "ExportToPackageAsync|GetExportedPackageUrl",
        "dequeue|download|ack",
    ],
    "answers lost": ["ImportFromPackageAsync", "ExportToPackageAsync", "dequeue|download|ack", "enqueue"],
    "archive writes failing": [],
}


def _table(result: dict) -> str:
    return "\n".join(
        f"{flow:17s} {name:24s} {n}" for flow, c in result["counts"].items() for name, n in c.items()
    )


@pytest.mark.parametrize("fault", list(HIT))
def test_fault_matrix(azurite, unique_name, fault: str) -> None:
    result = run_inproc(FAULTS[fault], azurite, unique_name, SCALE)
    hit = {key.split(":")[0] for key in result["faults_injected"]}
    for need in HIT[fault]:
        assert hit & set(need.split("|")), (need, result["faults_injected"])
    if fault == "archive writes failing":
        assert result["context"]["archive writes refused"] >= 3, result["context"]
    assert set(result["counts"]) == {"inbound", "outbound drain", "scheduled export", "enqueue"}
    assert total(result["counts"]) == 0, f"{fault}:\n{_table(result)}\n{result['problems']}"
    assert result["emulator_errors"] == [] and result["loop_blocks"] == 0


def test_gate_holder_terminated(azurite, unique_name) -> None:
    """The holder's drop ends Failed with a reason; the others import once each, never two at a time."""
    result = run_inproc(FAULTS["gate holder terminated"], azurite, unique_name, Scale(drops=3, messages=1))
    assert result["context"]["terminated"]
    assert set(result["counts"]) == {"inbound"}  # n/a elsewhere: only imports take the gate
    assert total(result["counts"]) == 0, f"{_table(result)}\n{result['problems']}"
    # Its package row is closed too (by the sweeper, even when a waiter freed the permit first).
    assert result["problems"] == []


def test_runner_sigkilled_at_activity_boundaries(azurite, unique_name) -> None:
    """A subprocess runner SIGKILLs itself at three boundaries where a repeat would do harm (an import
    started but its result not recorded, a drain batch about to run, a file enqueued but its message id not
    recorded), once each, and is started again on the same task hub each time: every flow still ends with
    nothing lost or doubled. (``bench/reliability.py`` kills at every boundary.)"""
    targets = ["after:start_import", "before:drain_batch", "after:enqueue_send"]
    result = run_killed(
        azurite, unique_name, Scale(drops=2, messages=2, enqueues=1), timeout=240, kill_only=targets
    )
    assert result["finished"], result
    assert sorted(result["kills"]) == sorted(targets), result["kills"]
    assert total(result["counts"]) == 0, f"{_table(result)}\n{result['problems']}"
    assert result["emulator_errors"] == []
