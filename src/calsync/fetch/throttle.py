"""Politeness per host: at most N requests at once, and a rate with bursts.

`TokenBucket` is the pure rate arithmetic (time passed in); `HostLimiter`
applies one semaphore and one bucket per host, with an injectable clock and
sleep so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from calsync.core.errors import ValidationError

__all__ = ["HostLimiter", "TokenBucket"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Idle hosts are forgotten once this many are remembered.
_SWEEP_ABOVE = 256


class TokenBucket:
    """*rate* requests per second on average, up to *burst* at once after a quiet spell.

    `reserve` always takes a token and says how long to wait for it, so callers
    queue fairly behind one another instead of polling.
    """

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if not rate > 0 or burst < 1:
            raise ValidationError("a rate limit needs rate > 0 and burst >= 1")
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = max(self._updated, now)

    def reserve(self, now: float) -> float:
        """Take a token at *now*; return the seconds to wait before using it (or 0)."""
        self._refill(now)
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled completely (the host has been quiet)."""
        self._refill(now)
        return self._tokens >= self._burst


class _Host:
    __slots__ = ("bucket", "semaphore", "users")

    def __init__(self, concurrency: int, bucket: TokenBucket | None) -> None:
        self.semaphore = asyncio.Semaphore(concurrency)
        self.bucket = bucket
        self.users = 0


def host_of(url: str) -> str:
    """Return the host a URL's requests count against (lower case; may be empty)."""
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


class HostLimiter:
    """Limit requests per host: *concurrency* at once, *rate* per second on average.

    Use ``async with limiter.slot(url): await fetcher.fetch(url)``. A *rate* of
    None turns the rate limit off. Not thread-safe: one limiter per event loop.
    """

    def __init__(
        self,
        *,
        concurrency: int = 4,
        rate: float | None = 2.0,
        burst: int = 4,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or concurrency < 1
        ):
            raise ValidationError(
                f"concurrency must be an integer >= 1, got {concurrency!r}"
            )
        if rate is not None:
            TokenBucket(rate, burst, 0.0)  # validates rate and burst
        self._concurrency = concurrency
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._hosts: dict[str, _Host] = {}

    def __repr__(self) -> str:
        return (
            f"HostLimiter(concurrency={self._concurrency}, rate={self._rate}, "
            f"burst={self._burst})"
        )

    @asynccontextmanager
    async def slot(self, url: str) -> AsyncIterator[None]:
        """Wait for a free slot and a token for *url*'s host, hold the slot inside."""
        key = host_of(url)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = self._new_host()
        host.users += 1
        try:
            async with host.semaphore:
                if host.bucket is not None:
                    wait = host.bucket.reserve(self._clock())
                    if wait > 0:
                        await self._sleep(wait)
                yield
        finally:
            host.users -= 1
            if len(self._hosts) > _SWEEP_ABOVE:
                self._sweep()

    def _new_host(self) -> _Host:
        bucket = None
        if self._rate is not None:
            bucket = TokenBucket(self._rate, self._burst, self._clock())
        return _Host(self._concurrency, bucket)

    def _sweep(self) -> None:
        now = self._clock()
        idle = [
            key
            for key, host in self._hosts.items()
            if host.users == 0 and (host.bucket is None or host.bucket.full(now))
        ]
        for key in idle:
            del self._hosts[key]
