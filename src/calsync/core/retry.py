"""When to try a calendar again: backoff with full jitter, Retry-After, refresh floors.

Pure: the current time is an argument and the random source is injectable, so a
test pins every delay without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

import attrs

from calsync.core.errors import ValidationError
from calsync.core.model import as_aware_utc

__all__ = ["RandomSource", "RetryPolicy", "next_sync_at"]

RandomSource = Callable[[], float]
"""Returns a float in [0, 1), like `random.random`."""

# Statuses whose Retry-After calsync honours (RFC 9110 §10.2.3).
_RETRY_AFTER_STATUSES = frozenset({429, 503})
# 2**62 minutes is already past any cap; a larger exponent only risks overflow.
_MAX_EXPONENT = 62


def _positive(
    instance: object, attribute: attrs.Attribute[timedelta], value: timedelta
) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValidationError(
            f"{attribute.name} must be a positive timedelta, got {value!r}"
        )


def _failures(failures: int) -> int:
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        raise ValidationError(
            f"failures counts from 1 (the first failure), got {failures!r}"
        )
    return failures


@attrs.frozen
class RetryPolicy:
    """Exponential backoff with full jitter for a calendar whose sync failed.

    After the n-th consecutive failure the next attempt waits a uniformly random
    delay in [0, min(cap, base * 2**(n-1))), so calendars that failed together do
    not retry together. A Retry-After sent with 429 or 503 is honoured as a lower
    bound, trusted up to `max_retry_after`.
    """

    base: timedelta = attrs.field(default=timedelta(minutes=1), validator=_positive)
    cap: timedelta = attrs.field(default=timedelta(hours=6), validator=_positive)
    max_retry_after: timedelta = attrs.field(
        default=timedelta(days=1), validator=_positive
    )

    def ceiling(self, failures: int) -> timedelta:
        """Return the upper bound of the delay after *failures* consecutive failures."""
        exponent = min(_failures(failures) - 1, _MAX_EXPONENT)
        seconds = self.base.total_seconds() * 2.0**exponent
        return min(self.cap, timedelta(seconds=min(seconds, self.cap.total_seconds())))

    def backoff(self, failures: int, *, rng: RandomSource = random.random) -> timedelta:
        """Return a full-jitter delay: uniform in [0, `ceiling`(failures))."""
        draw = rng()
        if not 0.0 <= draw < 1.0:
            raise ValidationError(f"the random source must return [0, 1), got {draw!r}")
        return self.ceiling(failures) * draw

    def server_delay(
        self, error: BaseException | None, now: datetime
    ) -> timedelta | None:
        """Return the wait a 429/503 asked for with Retry-After (capped), else None.

        Any error with a ``status`` and a ``retry_after`` counts (`FetchStatusError`
        has both), so this policy needs nothing of the network code.
        """
        hint = getattr(error, "retry_after", None)
        if hint is None or getattr(error, "status", None) not in _RETRY_AFTER_STATUSES:
            return None
        delay = hint if isinstance(hint, timedelta) else hint - as_aware_utc(now)
        return min(max(delay, timedelta(0)), self.max_retry_after)

    def next_attempt(
        self,
        now: datetime,
        failures: int,
        *,
        error: BaseException | None = None,
        rng: RandomSource = random.random,
    ) -> datetime:
        """When to try again after the *failures*-th consecutive failure, *error*.

        The jittered backoff, or the server's Retry-After when that is longer.
        """
        delay = self.backoff(failures, rng=rng)
        asked = self.server_delay(error, now)
        if asked is not None:
            delay = max(delay, asked)
        return as_aware_utc(now) + delay


def next_sync_at(
    now: datetime,
    cadence: timedelta,
    *,
    refresh_interval: timedelta | None = None,
    max_age: timedelta | None = None,
    longest: timedelta = timedelta(days=1),
) -> datetime:
    """Return when a calendar synced at *now* is next due: after *cadence*, or later.

    The feed's REFRESH-INTERVAL (`ParsedCalendar.refresh_interval`) and the
    server's Cache-Control max-age (`FetchResult.max_age`) are floors; a floor
    above *longest* counts as *longest*, so a feed cannot silence itself for a year.
    """
    floors = [
        min(hint, longest)
        for hint in (refresh_interval, max_age)
        if hint is not None and hint > timedelta(0)
    ]
    return as_aware_utc(now) + max([cadence, *floors])
