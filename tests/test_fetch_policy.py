"""Retry backoff with full jitter, Retry-After and the next-sync floor; no sleeping."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from calsync import ValidationError
from calsync.core import RetryPolicy, next_sync_at
from calsync.fetch import FetchStatusError
from calsync.fetch.hints import parse_max_age, parse_retry_after

NOW = datetime(2026, 3, 26, 8, 0, tzinfo=UTC)
POLICY = RetryPolicy(base=timedelta(seconds=30), cap=timedelta(hours=1))
URL = "https://example.com/cal.ics"


def status_error(
    status: int, retry_after: timedelta | datetime | None
) -> FetchStatusError:
    return FetchStatusError(URL, status, retry_after=retry_after)


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (9, 3600), (10_000, 3600)],
)
def test_ceiling_doubles_per_failure_up_to_the_cap(failures: int, ceiling: int) -> None:
    assert POLICY.ceiling(failures) == timedelta(seconds=ceiling)


@pytest.mark.parametrize("failures", [1, 2, 5, 9, 60])
def test_backoff_delays_fall_inside_the_full_jitter_bounds(failures: int) -> None:
    rng = random.Random(failures)
    delays = [POLICY.backoff(failures, rng=rng.random) for _ in range(2000)]
    ceiling = POLICY.ceiling(failures)
    assert all(timedelta(0) <= delay < ceiling for delay in delays)
    # Full jitter spreads over the whole range, not just near the ceiling.
    assert min(delays) < ceiling * 0.05
    assert max(delays) > ceiling * 0.95


def test_backoff_is_the_random_draw_times_the_ceiling() -> None:
    assert POLICY.backoff(3, rng=lambda: 0.0) == timedelta(0)
    assert POLICY.backoff(3, rng=lambda: 0.25) == timedelta(seconds=30)


def test_random_source_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValidationError):
        POLICY.backoff(1, rng=lambda: 1.0)


def test_failures_count_from_one() -> None:
    with pytest.raises(ValidationError):
        POLICY.ceiling(0)


def test_next_attempt_adds_the_jittered_delay_to_now() -> None:
    assert POLICY.next_attempt(NOW, 2, rng=lambda: 0.5) == NOW + timedelta(seconds=30)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_a_lower_bound_on_429_and_503(status: int) -> None:
    error = status_error(status, timedelta(minutes=20))
    at = POLICY.next_attempt(NOW, 1, error=error, rng=lambda: 0.0)
    assert at == NOW + timedelta(minutes=20)


def test_retry_after_date_is_read_against_now() -> None:
    error = status_error(503, NOW + timedelta(minutes=7))
    at = POLICY.next_attempt(NOW, 1, error=error, rng=lambda: 0.0)
    assert at == NOW + timedelta(minutes=7)


def test_retry_after_in_the_past_falls_back_to_backoff() -> None:
    error = status_error(429, NOW - timedelta(hours=1))
    at = POLICY.next_attempt(NOW, 2, error=error, rng=lambda: 0.5)
    assert at == NOW + timedelta(seconds=30)


def test_longer_backoff_wins_over_a_short_retry_after() -> None:
    error = status_error(429, timedelta(seconds=1))
    at = POLICY.next_attempt(NOW, 8, error=error, rng=lambda: 0.5)
    assert at == NOW + timedelta(minutes=30)


def test_retry_after_is_ignored_on_other_statuses() -> None:
    error = status_error(500, timedelta(hours=2))
    at = POLICY.next_attempt(NOW, 1, error=error, rng=lambda: 0.0)
    assert at == NOW


def test_huge_retry_after_is_capped() -> None:
    error = status_error(429, timedelta(days=365))
    policy = RetryPolicy(max_retry_after=timedelta(hours=12))
    at = policy.next_attempt(NOW, 1, error=error, rng=lambda: 0.0)
    assert at == NOW + timedelta(hours=12)


def test_policy_refuses_a_non_positive_base() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(base=timedelta(0))


# --- the next-sync floor -----------------------------------------------------------


def test_cadence_alone_sets_the_next_sync() -> None:
    assert next_sync_at(NOW, timedelta(minutes=15)) == NOW + timedelta(minutes=15)


def test_refresh_interval_is_a_floor_over_a_shorter_cadence() -> None:
    at = next_sync_at(NOW, timedelta(minutes=15), refresh_interval=timedelta(hours=1))
    assert at == NOW + timedelta(hours=1)


def test_max_age_is_a_floor_over_a_shorter_cadence() -> None:
    at = next_sync_at(NOW, timedelta(minutes=15), max_age=timedelta(minutes=40))
    assert at == NOW + timedelta(minutes=40)


def test_a_longer_cadence_wins_over_the_floors() -> None:
    at = next_sync_at(
        NOW,
        timedelta(hours=6),
        refresh_interval=timedelta(hours=1),
        max_age=timedelta(minutes=5),
    )
    assert at == NOW + timedelta(hours=6)


def test_a_feed_cannot_silence_itself_beyond_the_longest_floor() -> None:
    at = next_sync_at(NOW, timedelta(minutes=15), refresh_interval=timedelta(days=365))
    assert at == NOW + timedelta(days=1)


def test_next_sync_refuses_a_naive_now() -> None:
    with pytest.raises(ValidationError):
        next_sync_at(datetime(2026, 3, 26, 8, 0), timedelta(minutes=15))  # noqa: DTZ001


# --- reading the hints ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("Wed, 21 Oct 2037 07:28:00 GMT", datetime(2037, 10, 21, 7, 28, tzinfo=UTC)),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("9" * 40, timedelta(days=3650)),
    ],
)
def test_retry_after_header_forms(
    header: str | None, expected: timedelta | datetime | None
) -> None:
    assert parse_retry_after(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("public, max-age=600", timedelta(minutes=10)),
        ('max-age="60"', timedelta(minutes=1)),
        ("MAX-AGE=5", timedelta(seconds=5)),
        ("no-cache, max-age=600", None),
        ("no-store", None),
        ("max-age=soon", None),
        ("s-maxage=600", None),
        (None, None),
    ],
)
def test_cache_control_max_age_forms(
    header: str | None, expected: timedelta | None
) -> None:
    assert parse_max_age(header) == expected
