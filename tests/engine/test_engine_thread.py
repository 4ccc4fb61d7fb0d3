"""EngineThread: an Engine on a loop thread of its own, called from plain threads."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import pytest

from calsync import Engine, FileFetcher, Job, StoreError
from calsync.engine import EngineThread, SyncResult
from calsync.testing import ManualClock, MemoryStore

from .conftest import T0, event, ics

SAFETY = 60.0  # seconds; only reached when the awaited event never comes


class Factory:
    """Makes Engines on a file feed folder, and remembers each one it made."""

    def __init__(self, folder: Path, *, failures: int = 0) -> None:
        self.folder = folder
        self.failures = failures
        self.made: list[Engine] = []

    def __call__(self) -> Engine:
        if len(self.made) < self.failures:
            self.made.append(Engine(MemoryStore()))
            raise StoreError("the database is not up yet")
        fetcher = FileFetcher(root=self.folder)
        engine = Engine(MemoryStore(), fetcher, clock=ManualClock(T0))
        self.made.append(engine)
        return engine


@pytest.fixture
def factory(tmp_path: Path) -> Factory:
    (tmp_path / "team.ics").write_text(ics(event("standup", T0)))
    return Factory(tmp_path)


@pytest.fixture
def engines(factory: Factory) -> Iterator[EngineThread]:
    engines = EngineThread(factory)
    yield engines
    engines.stop()


async def _loop_of(engine: Engine) -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_jobs_from_many_threads_run_on_one_engine_on_one_loop(
    engines: EngineThread, factory: Factory
) -> None:
    engines.start()  # a worker's start-up hook: opening begins, nothing waits
    url = (factory.folder / "team.ics").as_uri()
    calendar = engines.call(lambda engine: engine.add_calendar(url))
    with ThreadPoolExecutor(4) as pool:
        loops = set(pool.map(lambda _: engines.call(_loop_of), range(8)))
        synced = pool.submit(
            engines.run_job, Job.SYNC_CALENDAR, calendar_id=calendar.id
        ).result()
    assert isinstance(synced, SyncResult)
    assert synced.added == 1
    assert len(loops) == 1
    assert len(factory.made) == 1
    assert engines.now() == T0


def test_an_engine_that_failed_to_open_opens_anew_on_the_next_call(
    tmp_path: Path,
) -> None:
    factory = Factory(tmp_path, failures=1)
    engines = EngineThread(factory)
    try:
        with pytest.raises(StoreError, match="not up yet"):
            engines.call(_loop_of)
        engines.call(_loop_of)
        assert len(factory.made) == 2
    finally:
        engines.stop()


def test_stop_closes_the_engine_and_a_later_call_opens_a_new_one(
    engines: EngineThread, factory: Factory
) -> None:
    first_loop = engines.call(_loop_of)
    engines.stop()
    assert first_loop.is_closed()
    with pytest.raises(StoreError, match="closed"):  # its store was closed
        asyncio.run(factory.made[0].list_calendars())
    assert engines.call(_loop_of) is not first_loop
    assert len(factory.made) == 2
    engines.stop()
    engines.stop()  # stopping twice is harmless


class Interrupted(Exception):
    """What the test's signal handler raises into the waiting thread."""


def test_an_interrupted_wait_cancels_the_work_on_the_loop(
    engines: EngineThread,
) -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def wait_forever(engine: Engine) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    def send_when_started() -> None:
        if started.wait(SAFETY):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    sender = threading.Thread(target=send_when_started)
    sender.start()
    try:
        with pytest.raises(Interrupted):
            engines.call(wait_forever)
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert cancelled.wait(SAFETY), "the waited-for work was not cancelled"
