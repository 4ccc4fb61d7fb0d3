"""End-to-end fixtures: runner processes, a timed feed server, a store per test.

The runner runs in child processes (`_runner_child.py`). A test that asks for
the ``clock`` fixture runs them, and its own Engine, on one shared virtual clock
(`FileClock`) that moves only when the test moves it (`step_until` moves it a
tick at a time until the runners did something); other tests run on the real
clock and make their assertions about outcomes. The feed server runs in the
test's event loop, so a test waits by polling with `eventually`, never by
blocking. Every wait has a safety timeout (`SAFETY`) that fails a test only
when what it waits for never happens, never because the machine is slow.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
from aiohttp import web

from _feeds import event as event  # re-exported for the tests here
from _feeds import ics as ics
from calsync import (
    Calendar,
    Engine,
    HttpFetcher,
    Notification,
    PostgresStore,
    Settings,
    SQLiteStore,
    Store,
)
from calsync.core import OccurrenceKey
from calsync.stores import notification_id
from calsync.testing import FeedServer, disposable_postgres

from ._clock import FileClock

CHILD = Path(__file__).with_name("_runner_child.py")
POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL")
# Real seconds any machine, however busy, needs for what a test waits for.
SAFETY = 60.0
# Where the shared virtual clock starts.
C0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

needs_postgres = pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL to test against",
)
# For tests whose subject does not depend on the database.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=needs_postgres),
]

_T = TypeVar("_T")


class Timeline:
    """Event starts on the real clock, in whole seconds after the test began."""

    def __init__(self) -> None:
        self.origin = datetime.now(UTC)

    def at(self, seconds: float) -> datetime:
        """The first whole second at least ``seconds`` after the origin."""
        instant = self.origin + timedelta(seconds=seconds)
        whole = math.ceil(instant.timestamp())
        return datetime.fromtimestamp(whole, UTC)

    def until(self, instant: datetime) -> float:
        """Seconds from now until ``instant`` (negative once it passed)."""
        return (instant - datetime.now(UTC)).total_seconds()


def expected_id(calendar: Calendar, uid: str, start: datetime, lead: timedelta) -> str:
    """The id a reminder of a non-recurring event gets (the handler's key)."""
    return notification_id(
        calendar.id, Notification(key=OccurrenceKey(uid), lead=lead, start=start)
    )


@attrs.frozen
class Span:
    """One request the feed server answered, with monotonic start and end."""

    path: str
    began: float
    ended: float


class TimedFeedServer(FeedServer):
    """A `FeedServer` that also times each request and counts those in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[Span] = []
        self.in_flight: Counter[str] = Counter()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        began = time.monotonic()
        self.in_flight[request.path] += 1
        try:
            return await super()._answer(request)
        finally:
            self.in_flight[request.path] -= 1
            self.spans.append(Span(request.path, began, time.monotonic()))

    def overlaps(self, path: str) -> list[tuple[Span, Span]]:
        """Pairs of requests for ``path`` that were answered at the same time."""
        spans = sorted(
            (span for span in self.spans if span.path == path),
            key=lambda span: span.began,
        )
        return [
            (first, second)
            for first, second in itertools.pairwise(spans)
            if second.began < first.ended
        ]


@pytest.fixture
async def feeds() -> AsyncIterator[TimedFeedServer]:
    async with TimedFeedServer() as server:
        yield server


# -- stores ------------------------------------------------------------------


@attrs.frozen
class Backend:
    """Where a test's store lives: an SQLite file or a fresh PostgreSQL schema."""

    name: str
    target: str

    def store(self) -> Store:
        if self.name == "sqlite":
            return SQLiteStore(self.target)
        assert POSTGRES_URL is not None
        return PostgresStore(POSTGRES_URL, schema=self.target)

    def child_args(self) -> list[str]:
        if self.name == "sqlite":
            return ["--sqlite", self.target]
        assert POSTGRES_URL is not None
        return ["--postgres", POSTGRES_URL, "--schema", self.target]


async def _backend(name: str, tmp_path: Path) -> AsyncIterator[Backend]:
    if name == "sqlite":
        yield Backend("sqlite", str(tmp_path / "calsync.db"))
        return
    assert POSTGRES_URL is not None
    async with disposable_postgres(POSTGRES_URL, prefix="calsync_e2e") as store:
        yield Backend("postgres", store.schema)


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    """The test's store; a test on SQLite alone parametrizes it indirectly."""
    async for made in _backend(request.param, tmp_path):
        yield made


@pytest.fixture
def clock(tmp_path: Path) -> FileClock:
    """The virtual clock the test, its Engine and its runners share, at `C0`."""
    shared = FileClock(tmp_path / "clock")
    shared.set(C0)
    return shared


def _clock_of(request: pytest.FixtureRequest) -> FileClock | None:
    """The shared clock if the test asked for it, else None (the real clock)."""
    if "clock" not in request.fixturenames:
        return None
    shared: FileClock = request.getfixturevalue("clock")
    return shared


@pytest.fixture
async def engine(
    backend: Backend, request: pytest.FixtureRequest
) -> AsyncIterator[Engine]:
    """The test's own Engine on the runners' store (and clock): to add and look."""
    settings = Settings(worker="e2e-test", per_host_rate=None)
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    store = backend.store()
    async with Engine(
        store, fetcher, settings=settings, clock=_clock_of(request)
    ) as opened:
        yield opened


# -- runner processes --------------------------------------------------------


@attrs.frozen
class Delivered:
    """One line of the handler's file: which notification, which process, when."""

    id: str
    pid: int
    at: datetime


class RunnerProcess:
    """One runner child process; stop it with `kill` (SIGKILL) or `stop` (SIGTERM)."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def exited(self, within: float) -> int | None:
        """Wait up to ``within`` seconds for the process to end; its exit code."""
        deadline = time.monotonic() + within
        while self.popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.popen.poll()

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        self.popen.send_signal(signal.SIGKILL)
        assert await self.exited(SAFETY) is not None, f"{self.pid} survived SIGKILL"

    async def running(self) -> None:
        """Wait until the runner runs its jobs (its signal handlers are installed)."""

        async def started() -> bool:
            return self.log.exists() and "runner started" in self.log.read_text()

        await eventually(started, within=SAFETY, what=f"runner {self.pid} starting")

    def terminate(self) -> None:
        """SIGTERM: the runner stops gracefully (see `exited_cleanly`)."""
        self.popen.send_signal(signal.SIGTERM)

    async def exited_cleanly(self) -> None:
        """Assert the process ends, with exit code 0."""
        code = await self.exited(SAFETY)
        assert code is not None, f"runner {self.pid} did not exit:\n{self.log_tail()}"
        assert code == 0, f"runner exited with {code}:\n{self.log_tail()}"

    async def stop(self) -> None:
        """SIGTERM once it runs, then assert a clean exit (code 0).

        The shutdown timeout is not measured here: on the real clock it would
        depend on the machine. `test_stop` checks it on the shared clock.
        """
        await self.running()
        self.terminate()
        await self.exited_cleanly()


class Runners:
    """Starts runner processes on the test's store; all share one deliveries file."""

    def __init__(
        self, backend: Backend, directory: Path, clock: FileClock | None = None
    ) -> None:
        self._backend = backend
        self._directory = directory
        self._clock = clock
        self.deliveries_file = directory / "deliveries.txt"
        self.started: list[RunnerProcess] = []

    def spawn(self, **options: float) -> RunnerProcess:
        """Start a runner; ``options`` are the child's flags (``late_grace=5``).

        The late grace is 10 minutes unless given: a runner that starts late on
        a busy machine still delivers the reminders that fell due meanwhile.

        On the shared clock a lease lasts 10 minutes unless ``lease_ttl`` says
        otherwise: a test steps the clock while a runner works, and only a test
        about leases should see one run out under it.
        """
        number = len(self.started) + 1
        log = self._directory / f"runner-{number}.log"
        flags = [
            "--deliveries",
            str(self.deliveries_file),
            "--worker",
            f"e2e-runner-{number}",
        ]
        if self._clock is not None:
            flags += ["--clock-file", str(self._clock.path)]
            options = {"lease_ttl": 600, **options}
        for name, value in options.items():
            flags += [f"--{name.replace('_', '-')}", str(value)]
        with log.open("wb") as output:
            popen = subprocess.Popen(
                [sys.executable, str(CHILD), *self._backend.child_args(), *flags],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        runner = RunnerProcess(popen, log)
        self.started.append(runner)
        return runner

    def deliveries(self) -> list[Delivered]:
        """Every handler call recorded so far, oldest first (not a torn last line)."""
        if not self.deliveries_file.exists():
            return []
        recorded = []
        for line in self.deliveries_file.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            delivery_id, pid, at = line.split()
            recorded.append(
                Delivered(delivery_id, int(pid), datetime.fromisoformat(at))
            )
        return recorded

    def delivered_ids(self) -> Counter[str]:
        """How many times each notification id reached the handler."""
        return Counter(delivered.id for delivered in self.deliveries())

    def cleanup(self) -> None:
        for runner in self.started:
            if runner.alive:
                runner.popen.kill()
                runner.popen.wait(5)
        for runner in self.started:
            print(f"--- runner {runner.pid} log (tail) ---\n{runner.log_tail()}")


@pytest.fixture
def runners(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Runners]:
    started = Runners(backend, tmp_path, _clock_of(request))
    try:
        yield started
    finally:
        started.cleanup()


# -- waiting -----------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[_T]], *, within: float = SAFETY, what: str
) -> _T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` s.

    ``within`` is a safety timeout, never a measurement: it is at least `SAFETY`,
    so that a slow machine cannot fail a test that would have passed.
    """
    within = max(within, SAFETY)
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(0.05)


async def synced_since(engine: Engine, calendar_id: str, since: datetime) -> Calendar:
    """Wait until a runner attempted a sync of the calendar after ``since``."""

    async def attempted() -> Calendar | None:
        calendar = await engine.get_calendar(calendar_id)
        last = calendar.state.last_attempt_at
        return calendar if last is not None and last > since else None

    return await eventually(attempted, within=SAFETY, what=f"a sync of {calendar_id}")


async def step_until(
    clock: FileClock,
    check: Callable[[], Awaitable[_T]],
    *,
    what: str,
    step: timedelta = timedelta(seconds=1),
) -> _T:
    """Move the shared clock a tick at a time until ``check`` returns something.

    The runners' jobs trigger every second, so each tick lets a runner that is
    free do its next cycle. The clock moves at most one tick per 50 ms of real
    time, and the test fails only if ``check`` stays false for `SAFETY` seconds.
    """
    deadline = time.monotonic() + SAFETY
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never, in {SAFETY:g} s and up to {clock()}: {what}")
        clock.advance(step)
        await asyncio.sleep(0.05)


async def attempted_at_or_after(
    engine: Engine, calendar_id: str, since: datetime
) -> Calendar | None:
    """The calendar if a sync of it was attempted at ``since`` or later, else None."""
    calendar = await engine.get_calendar(calendar_id)
    last = calendar.state.last_attempt_at
    return calendar if last is not None and last >= since else None
