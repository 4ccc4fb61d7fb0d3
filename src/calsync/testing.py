"""Helpers for testing an application that embeds calsync.

`MemoryStore` keeps everything in memory, so a test needs no database;
`ManualClock` is a clock the test moves by hand; `FeedServer` is a real HTTP
server on 127.0.0.1 that serves the feeds a test sets and injects faults.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from calsync._errors import ValidationError
from calsync._feedserver import FeedRequest, FeedServer
from calsync._model import as_aware_utc
from calsync._store.memory import MemoryStore

__all__ = ["FeedRequest", "FeedServer", "ManualClock", "MemoryStore"]


class ManualClock:
    """A clock that stands still until the test moves it; pass it as ``clock=``.

    Calling it returns the current instant, aware and in UTC. It refuses naive
    datetimes (`ValidationError`), whose instant is unknown.
    """

    def __init__(self, start: datetime) -> None:
        self._now = as_aware_utc(start)

    def __call__(self) -> datetime:
        """Return the instant the clock shows."""
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"

    @property
    def now(self) -> datetime:
        """The instant the clock shows."""
        return self._now

    def advance(self, by: timedelta) -> datetime:
        """Move the clock forward by *by* (>= 0) and return the new instant."""
        if not isinstance(by, timedelta) or by < timedelta(0):
            raise ValidationError(
                f"advance takes a timedelta >= 0, got {by!r}; use set() to go back"
            )
        self._now += by
        return self._now

    def set(self, instant: datetime) -> datetime:
        """Put the clock at *instant* (forward or back) and return it in UTC."""
        self._now = as_aware_utc(instant)
        return self._now
