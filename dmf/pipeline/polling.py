"""Status polling schedule: pure and deterministic, so orchestrators can use it during replay.

When a data project's usual import duration is known (learned in the ledger), the first status call is
made just before the import should be done (one long timer; the gate lease is extended to cover it), and
later calls back off from a small fraction of that duration: a typical import costs one to three calls and
is seen finished within a few percent of its real end. Unknown
projects start at ``initial`` seconds and grow by ``factor`` up to ``max_interval``: about
log_factor(duration / initial) + 1 calls. No wait passes the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmf.settings import Settings

TERMINAL = frozenset({"Succeeded", "PartiallySucceeded", "Failed", "Canceled"})
PENDING = frozenset({"NotRun", "Executing", "Unknown", "NotFound"})
TAIL_FRACTION = 0.05
# The first call comes a little before the usual end: a learned duration then converges from both sides.
EARLY_FRACTION = 0.9


@dataclass(frozen=True)
class PollPolicy:
    initial: float
    factor: float
    max_interval: float
    deadline: float  # seconds after the import call
    not_found_grace: float

    @classmethod
    def from_settings(cls, s: Settings) -> PollPolicy:
        return cls(
            initial=s.poll_initial_seconds,
            factor=s.poll_backoff_factor,
            max_interval=s.poll_max_interval_seconds,
            deadline=s.poll_deadline_minutes * 60,
            not_found_grace=s.poll_not_found_grace_seconds,
        )

    def to_dict(self) -> dict[str, float]:
        return self.__dict__.copy()

    def next_wait(self, polls_done: int, elapsed: float, expected: float | None) -> float:
        """Seconds to wait before the next status call (0 means the deadline has passed)."""
        remaining = self.deadline - elapsed
        if remaining <= 0:
            return 0.0
        if expected and expected > 0:
            first = EARLY_FRACTION * expected
            if elapsed < first:
                # Waiting for (just under) the usual duration is one long timer: no max_interval cap.
                return max(1.0, min(first - elapsed, remaining))
            # Past it: back off from a small slice of the usual duration.
            tail_polls = max(polls_done - 1, 0)
            wait = max(self.initial, TAIL_FRACTION * expected) * self.factor**tail_polls
        else:
            wait = self.initial * self.factor**polls_done
        return max(1.0, min(wait, self.max_interval, remaining))
