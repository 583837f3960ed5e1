"""Deterministic time helpers for orchestrators: everything comes from the orchestration context."""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df


def now_iso(context: df.DurableOrchestrationContext) -> str:
    """The replay-safe current time, as activities receive it."""
    return context.current_utc_datetime.isoformat()


def timer_in(context: df.DurableOrchestrationContext, seconds: float) -> df.Task:
    """A durable timer firing ``seconds`` from the replay-safe now."""
    return context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
