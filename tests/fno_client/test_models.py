"""Parsing rules for F&O's values and headers (pure functions; the HTTP paths are tested elsewhere)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dmf.fno.errors import (
    ExecutionNotFound,
    FnoAuthError,
    PermanentFnoError,
    TransientFnoError,
    error_for_status,
    odata_error_message,
)
from dmf.fno.http import RetryPolicy, parse_retry_after
from dmf.fno.models import (
    ExecutionStatus,
    MessageStatus,
    https_download_location,
    optional_execution_id,
    parse_bool,
    parse_execution_errors,
)


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 25 Nov 2026 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    p = RetryPolicy(backoff_base=1, backoff_max=8)
    for attempt, (lo, hi) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (4, 8), (4, 8)]):
        waits = {p.backoff(attempt) for _ in range(50)}
        assert all(lo <= w <= hi for w in waits) and len(waits) > 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://fno.example/api/connector/download/x?a=1",
            "https://fno.example/api/connector/download/x?a=1",
        ),
        ("http://fno.example:80/d?a=1", "https://fno.example/d?a=1"),
        ("http://127.0.0.1:8443/d", "https://127.0.0.1:8443/d"),
        ("https://fno.example/d", "https://fno.example/d"),
    ],
)
def test_download_location_forced_to_https(url: str, expected: str) -> None:
    assert https_download_location(url) == expected


def test_odata_error_message_prefers_innererror() -> None:
    assert odata_error_message(b'{"error":{"message":"outer","innererror":{"message":"inner"}}}') == "inner"
    assert odata_error_message('{"error":{"message":"outer"}}') == "outer"
    assert odata_error_message('{"odata.error":{"message":{"lang":"en","value":"v3"}}}') == "v3"
    assert odata_error_message("<html/>") is None


@pytest.mark.parametrize(
    ("status", "body", "cls", "transient"),
    [
        (
            400,
            '{"error":{"innererror":{"message":"Execution details were not found for x"}}}',
            ExecutionNotFound,
            True,
        ),
        (400, '{"error":{"message":"bad"}}', PermanentFnoError, False),
        (401, "", FnoAuthError, False),
        (403, "", FnoAuthError, False),
        (404, "", PermanentFnoError, False),
        (413, "", PermanentFnoError, False),
        (429, "", TransientFnoError, True),
        (500, "", TransientFnoError, True),
        (503, "", TransientFnoError, True),
        (501, "", PermanentFnoError, False),
    ],
)
def test_status_classification(status: int, body: str, cls: type, transient: bool) -> None:
    err = error_for_status(status, body, action="X")
    assert type(err) is cls and err.transient is transient and err.status == status


def test_lenient_enums() -> None:
    assert MessageStatus("POSTPROCESSINGERROR") is MessageStatus.POSTPROCESSING_FAILED
    assert MessageStatus("Processed").is_terminal and not MessageStatus("Processed").is_failure
    assert MessageStatus("ProcessedWithErrors").is_failure
    assert ExecutionStatus("Cancelled") is ExecutionStatus.CANCELED
    odd = ExecutionStatus("Paused")
    assert odd.value == "Paused" and odd == "Paused" and not odd.recognised and not odd.is_terminal


def test_value_helpers() -> None:
    assert optional_execution_id("{00000000-0000-0000-0000-000000000000}") is None
    assert optional_execution_id({"value": "E-1"}) == "E-1"
    assert parse_bool("true") is True and parse_bool(False) is False
    assert [e.error_message for e in parse_execution_errors('"[{\\"ErrorMessage\\":\\"x\\"}]"')] == ["x"]
    assert (
        parse_execution_errors("") == [] and parse_execution_errors("not json")[0].error_message == "not json"
    )
