"""Deterministic time helpers for orchestrators: everything comes from the orchestration context."""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from dmf.pipeline.polling import PollPolicy


def now_iso(context: df.DurableOrchestrationContext) -> str:
    """The replay-safe current time, as activities receive it."""
    return context.current_utc_datetime.isoformat()


def timer_in(context: df.DurableOrchestrationContext, seconds: float) -> df.Task:
    """A durable timer firing ``seconds`` from the replay-safe now."""
    return context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))


def refusal_wait(retry_after: float | None, refusals: int, waited: float, policy: PollPolicy) -> float:
    """How long to wait before calling F&O again after it refused a start (429, or 503 with Retry-After):
    its Retry-After, else the poll backoff for the n-th refusal; at least 1 s, never past the deadline."""
    backoff = min(policy.initial * 2**refusals, policy.max_interval)
    wait = float(retry_after) if retry_after is not None else backoff
    return max(1.0, min(wait, policy.deadline - waited))
