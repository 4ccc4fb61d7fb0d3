"""Per-host politeness: concurrency and rate, with an injected clock and sleep."""

from __future__ import annotations

import asyncio

import pytest

from calsync import ValidationError
from calsync.fetch import HostLimiter
from calsync.fetch.throttle import TokenBucket, host_of


class FakeTime:
    """A clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_bucket_allows_a_burst_then_spaces_requests() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    waits = [bucket.reserve(0.0) for _ in range(5)]
    assert waits == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_bucket_refills_with_time_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    bucket.reserve(0.0)
    bucket.reserve(0.0)
    assert not bucket.full(1.0)
    assert bucket.full(100.0)
    assert [bucket.reserve(100.0) for _ in range(3)] == [0.0, 0.0, 1.0]


def test_bucket_refuses_a_rate_of_zero() -> None:
    with pytest.raises(ValidationError):
        TokenBucket(rate=0.0, burst=1, now=0.0)


async def test_rate_limit_sleeps_until_the_next_token() -> None:
    time = FakeTime()
    limiter = HostLimiter(rate=2.0, burst=1, clock=time.clock, sleep=time.sleep)
    for _ in range(3):
        async with limiter.slot("https://calendar.example/a.ics"):
            pass
    assert time.sleeps == [0.5, 0.5]


async def test_hosts_have_their_own_rate() -> None:
    time = FakeTime()
    limiter = HostLimiter(rate=1.0, burst=1, clock=time.clock, sleep=time.sleep)
    for host in ("a.example", "b.example", "c.example"):
        async with limiter.slot(f"https://{host}/cal.ics"):
            pass
    assert time.sleeps == []


async def test_concurrency_per_host_is_bounded() -> None:
    limiter = HostLimiter(concurrency=2, rate=None)
    inside = 0
    most = 0
    release = asyncio.Event()

    async def fetch() -> None:
        nonlocal inside, most
        async with limiter.slot("https://calendar.example/cal.ics"):
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(fetch()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert inside == 2
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2


async def test_a_busy_host_does_not_hold_up_another() -> None:
    limiter = HostLimiter(concurrency=1, rate=None)
    async with limiter.slot("https://busy.example/cal.ics"):
        async with asyncio.timeout(1):
            async with limiter.slot("https://idle.example/cal.ics"):
                pass


async def test_idle_hosts_are_forgotten() -> None:
    time = FakeTime()
    limiter = HostLimiter(rate=10.0, burst=1, clock=time.clock, sleep=time.sleep)
    for number in range(300):
        async with limiter.slot(f"https://host{number}.example/cal.ics"):
            pass
        time.now += 1.0
    assert len(limiter._hosts) <= 257


def test_webcal_and_https_count_against_the_same_host() -> None:
    assert host_of("webcal://Calendar.Example./x") == host_of(
        "https://calendar.example/y"
    )


def test_limiter_refuses_zero_concurrency() -> None:
    with pytest.raises(ValidationError):
        HostLimiter(concurrency=0)
