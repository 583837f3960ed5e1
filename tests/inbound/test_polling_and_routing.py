"""Pure parts of the inbound pipeline: the polling schedule and routing."""

from __future__ import annotations

import math

import pytest

from dmf.pipeline.polling import PollPolicy
from dmf.routing import RoutesFile, RoutingError, entity_from_file_name, kind_of, resolve
from dmf.settings import load_settings

POLICY = PollPolicy(initial=15, factor=2, max_interval=3600, deadline=24 * 3600, not_found_grace=600)


def simulate(duration: float, expected: float | None, policy: PollPolicy = POLICY) -> tuple[int, float]:
    """Status calls made and the time the terminal status was seen, for an import taking ``duration``."""
    t, polls = 0.0, 0
    while True:
        wait = policy.next_wait(polls, t, expected)
        assert wait > 0
        t += wait
        polls += 1
        if t >= duration:
            return polls, t


@pytest.mark.parametrize("duration", [20, 61, 300, 1800, 3 * 3600])
def test_unknown_duration_calls_stay_logarithmic(duration: float) -> None:
    polls, _ = simulate(duration, None)
    assert polls <= math.log2(duration / POLICY.initial) + 3


@pytest.mark.parametrize("duration", [40, 600, 7200])
def test_learned_duration_takes_few_calls_and_ends_close_to_the_real_end(duration: float) -> None:
    tail = max(POLICY.initial, 0.05 * duration)
    for actual in (duration * 0.85, duration, duration * 1.1):
        polls, seen = simulate(actual, expected=duration)
        assert polls <= 4, (actual, polls)
        # Seen at the first call, or late by no more than how far it ran past that call (doubling backoff).
        assert seen <= max(0.9 * duration, actual + max(2 * tail, actual - 0.9 * duration + tail)), (
            actual,
            seen,
        )


def test_waits_never_pass_the_deadline() -> None:
    p = PollPolicy(initial=60, factor=2, max_interval=900, deadline=100, not_found_grace=0)
    assert p.next_wait(0, 0, None) == 60
    assert p.next_wait(1, 60, None) == 40
    assert p.next_wait(2, 100, None) == 0


SETTINGS = load_settings(
    {
        "DATA_STORAGE": "UseDevelopmentStorage=true",
        "FNO_ENVIRONMENTS": "main,test",
        "FNO_MAIN_BASE_URL": "https://main.example.com",
        "FNO_MAIN_AUTH_MODE": "managed_identity",
        "FNO_MAIN_LEGAL_ENTITY": "usmf",
        "FNO_TEST_BASE_URL": "https://test.example.com",
        "FNO_TEST_AUTH_MODE": "managed_identity",
    }
)
ROUTES = RoutesFile.model_validate(
    {
        "routes": [
            {
                "name": "by-folder",
                "pattern": "groups/*/*.csv",
                "data_project": "CG",
                "legal_entity_segment": 1,
                "entity": "Customer groups",
            },
            {
                "name": "token",
                "pattern": "customers/**/*.csv",
                "data_project": "CU",
                "legal_entity_token": "^(?P<le>[A-Z]{4})_",
                "environment": "test",
            },
            {
                "name": "xslt",
                "pattern": "xml/*.xml",
                "mode": "enqueue",
                "activity_id": "{A}",
                "legal_entity": "DEMF",
            },
        ]
    }
)


def test_routes_resolve_legal_entity_three_ways() -> None:
    r = resolve("groups/usrt/new.csv", SETTINGS, ROUTES)
    assert (r.route, r.data_project, r.legal_entity, r.entity, r.kind) == (
        "by-folder",
        "CG",
        "USRT",
        "Customer groups",
        "raw",
    )
    r = resolve("customers/2026/11/DEMF_customers.csv", SETTINGS, ROUTES)
    assert (r.route, r.environment, r.legal_entity, r.entity) == ("token", "test", "DEMF", "DEMF_customers")
    r = resolve("xml/orders.xml", SETTINGS, ROUTES)
    assert (r.mode, r.activity_id, r.legal_entity) == ("enqueue", "{A}", "DEMF")
    with pytest.raises(RoutingError, match="no legal entity token"):
        resolve("customers/x/customers.csv", SETTINGS, ROUTES)


def test_convention_without_a_route() -> None:
    r = resolve("usmf/CustomerGroups-Import/Customer groups__2026-11-25.csv", SETTINGS, ROUTES)
    assert (r.route, r.legal_entity, r.data_project, r.entity, r.environment) == (
        "convention",
        "USMF",
        "CustomerGroups-Import",
        "Customer groups",
        "main",
    )
    assert resolve("USMF/Proj/package.zip", SETTINGS, RoutesFile()).kind == "package"
    with pytest.raises(RoutingError, match="convention"):
        resolve("loose-file.csv", SETTINGS, RoutesFile())


def test_file_kinds_and_entity_names() -> None:
    assert kind_of("a/b.batch.json") == "batch"
    assert kind_of("a/b.ZIP") == "package"
    assert kind_of("a/b.exe") == "unknown"
    assert entity_from_file_name("Customers V3.csv") == "Customers V3"
    assert entity_from_file_name("Customers V3__part1.csv") == "Customers V3"


def test_invalid_routes_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="activity_id"):
        RoutesFile.model_validate({"routes": [{"name": "x", "pattern": "*", "mode": "enqueue"}]})
    with pytest.raises(ValidationError, match="data_project"):
        RoutesFile.model_validate({"routes": [{"name": "x", "pattern": "*"}]})
