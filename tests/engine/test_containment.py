"""A parse past its limit is stopped and its memory returned (DESIGN §6, issue 13).

Parses run in worker processes; these tests watch the processes themselves:
a worker that ran past a limit is gone, never more are alive than
``parse_concurrency``, and the next sync works. Slow feeds are slow for any
parser (tens of thousands of events for a one-second limit), so nothing here
depends on the parser's own budget or on the machine's speed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from calsync import Engine, HttpFetcher, SQLiteStore, Window
from calsync.core.parse import parse_ics
from calsync.engine import SyncOutcome
from calsync.engine.parsepool import _ZYGOTE, ParsePool
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, event, ics, settings

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)

# A VTIMEZONE whose standard time recurs every second since 1970: resolving a
# time in it walks billions of transitions (it hangs for minutes unless stopped).
VTIMEZONE_BOMB = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\n"
    "BEGIN:VTIMEZONE\r\nTZID:Bomb\r\n"
    "BEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=SECONDLY\r\n"
    "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n"
    "BEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\n"
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
    "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"
    "BEGIN:VEVENT\r\nUID:bomb\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART;TZID=Bomb:20260302T100000\r\nDTEND;TZID=Bomb:20260302T110000\r\n"
    "SUMMARY:bomb\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def slow_feed(events: int = 60_000) -> str:
    """A feed of many small events: seconds of parsing on any machine."""
    return ics(*(event(f"e{i}", T0 + i * MINUTE) for i in range(events)))


def greedy_feed(attendees: int = 400_000) -> str:
    """One event with a huge number of attendees: hundreds of MB to hold, parsed."""
    lines = "\r\n".join(
        f"ATTENDEE:mailto:person{i}@example.org" for i in range(attendees)
    )
    return ics(
        event("greedy", T0 + MINUTE).replace("END:VEVENT", lines + "\r\nEND:VEVENT")
    )


def small_feed(uid: str = "fine") -> str:
    return ics(event(uid, T0 + timedelta(hours=1)))


def gone(pid: int) -> bool:
    """Whether no process has this pid any more (the worker was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def parse_processes() -> set[int]:
    """The running parse workers of this test process (the zygote's children)."""
    zygote = _ZYGOTE.pid
    if zygote is None:
        return set()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == zygote:
            found.add(int(entry.name))
    return found


@contextmanager
def most_parse_processes() -> Iterator[list[int]]:
    """Watch the number of live parse processes; yields [the most seen at once]."""
    most = [len(parse_processes())]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            most[0] = max(most[0], len(parse_processes()))
            stop.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield most
    finally:
        stop.set()
        watcher.join()


def pool_of(engine: Engine) -> ParsePool:
    pool = engine._syncer.parse_pool
    assert pool is not None
    return pool


@pytest.fixture
async def feeds() -> AsyncIterator[FeedServer]:
    async with FeedServer() as server:
        yield server


def make_engine(tmp_path: Path, clock: ManualClock, **changes: object) -> Engine:
    store = SQLiteStore(tmp_path / "calsync.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    return Engine(store, fetcher, settings=settings(**changes), clock=clock)


async def test_a_parse_past_its_time_limit_ends_its_worker_and_the_next_sync_works(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    engine = make_engine(tmp_path, clock, parse_timeout=SECOND, parse_concurrency=1)
    async with engine:
        feeds.set("/slow.ics", small_feed())
        feeds.set("/fine.ics", small_feed())
        slow = await engine.add_calendar(feeds.url("/slow.ics"))
        fine = await engine.add_calendar(feeds.url("/fine.ics"))
        assert (await engine.sync_calendar(slow.id)).ok
        [worker] = pool_of(engine).pids()
        feeds.set("/slow.ics", slow_feed())
        result = await engine.sync_calendar(slow.id)
        assert result.outcome is SyncOutcome.FAILED
        assert gone(worker)
        assert pool_of(engine).pids() == []
        assert pool_of(engine).stats.stopped == 1
        feeds.set("/fine.ics", small_feed("changed"))
        after = await engine.sync_calendar(fine.id)
        assert after.ok
        assert after.added == 1
        assert worker not in pool_of(engine).pids()


async def test_a_timed_out_parse_names_the_setting_to_raise(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    async with make_engine(tmp_path, clock, parse_timeout=SECOND) as engine:
        feeds.set("/slow.ics", slow_feed())
        slow = await engine.add_calendar(feeds.url("/slow.ics"))
        result = await engine.sync_calendar(slow.id)
        assert result.error is not None
        assert "[engine] parse_timeout" in result.error
        assert "CALSYNC_ENGINE_PARSE_TIMEOUT" in result.error
        assert "\n" not in result.error


async def test_the_vtimezone_bomb_leaves_no_parse_running_after_its_sync(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    engine = make_engine(tmp_path, clock, parse_timeout=SECOND, parse_concurrency=1)
    async with engine:
        feeds.set("/bomb.ics", small_feed())
        bomb = await engine.add_calendar(feeds.url("/bomb.ics"))
        assert (await engine.sync_calendar(bomb.id)).ok
        [worker] = pool_of(engine).pids()
        answered = pool_of(engine).stats.parses
        feeds.set("/bomb.ics", VTIMEZONE_BOMB)
        await engine.sync_calendar(bomb.id)
        # Either the worker was ended, or it answered: nothing parses on.
        assert gone(worker) or pool_of(engine).stats.parses == answered + 1
        assert parse_processes() <= set(pool_of(engine).pids())


async def test_never_more_parse_processes_alive_than_parse_concurrency(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    engine = make_engine(tmp_path, clock, parse_timeout=SECOND, parse_concurrency=2)
    async with engine:
        body = slow_feed()
        calendars = []
        for name in "abcde":
            feeds.set(f"/{name}.ics", body)
            calendars.append(await engine.add_calendar(feeds.url(f"/{name}.ics")))
        with most_parse_processes() as most:
            first = await engine.sync_due()
            for calendar in calendars:
                await engine.request_sync(calendar.id)
            second = await engine.sync_due()
        outcomes = {r.outcome for r in (*first.results, *second.results)}
        assert outcomes == {SyncOutcome.FAILED}
        assert len(first.results) == len(second.results) == 5
        assert most[0] <= 2
        assert pool_of(engine).stats.stopped == 10
        assert parse_processes() == set()


async def test_a_worker_killed_mid_parse_fails_its_calendar_and_the_pool_recovers(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    engine = make_engine(
        tmp_path, clock, parse_timeout=timedelta(minutes=2), parse_concurrency=1
    )
    async with engine:
        feeds.set("/slow.ics", slow_feed())
        feeds.set("/fine.ics", small_feed())
        slow = await engine.add_calendar(feeds.url("/slow.ics"))
        fine = await engine.add_calendar(feeds.url("/fine.ics"))
        syncing = asyncio.create_task(engine.sync_calendar(slow.id))
        while not (pids := pool_of(engine).pids()):
            await asyncio.sleep(0.01)
        os.kill(pids[0], signal.SIGKILL)
        result = await syncing
        assert result.outcome is SyncOutcome.FAILED
        assert result.error is not None
        assert "died mid-parse" in result.error
        assert gone(pids[0])
        assert (await engine.sync_calendar(fine.id)).ok


async def test_a_parse_over_the_memory_limit_fails_naming_the_setting(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    engine = make_engine(
        tmp_path,
        clock,
        parse_timeout=timedelta(minutes=4),
        parse_memory_limit=64 * 2**20,
        parse_concurrency=1,
    )
    async with engine:
        feeds.set("/greedy.ics", greedy_feed())
        feeds.set("/fine.ics", small_feed())
        greedy = await engine.add_calendar(feeds.url("/greedy.ics"))
        fine = await engine.add_calendar(feeds.url("/fine.ics"))
        result = await engine.sync_calendar(greedy.id)
        assert result.outcome is SyncOutcome.FAILED
        assert result.error is not None
        assert "[engine] parse_memory_limit" in result.error
        assert "CALSYNC_ENGINE_PARSE_MEMORY_LIMIT" in result.error
        assert pool_of(engine).stats.stopped == 1
        assert (await engine.sync_calendar(fine.id)).ok


async def test_a_calendar_synced_again_reuses_its_workers_parse_cache(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    async with make_engine(tmp_path, clock, parse_concurrency=2) as engine:
        feeds.set("/a.ics", ics(event("one", T0 + MINUTE)))
        calendar = await engine.add_calendar(feeds.url("/a.ics"))
        await engine.sync_calendar(calendar.id)
        assert pool_of(engine).stats.warm == 0
        feeds.set("/a.ics", ics(event("one", T0 + MINUTE), event("two", T0 + MINUTE)))
        result = await engine.sync_calendar(calendar.id)
        assert result.added == 1
        assert pool_of(engine).stats.warm == 1
        assert pool_of(engine).stats.started == 1


async def test_closing_the_engine_ends_its_parse_workers(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    async with make_engine(tmp_path, clock) as engine:
        feeds.set("/a.ics", small_feed())
        calendar = await engine.add_calendar(feeds.url("/a.ics"))
        await engine.sync_calendar(calendar.id)
        workers = pool_of(engine).pids()
        assert workers
    assert all(gone(pid) for pid in workers)


async def test_without_isolation_feeds_are_parsed_in_this_process(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    async with make_engine(tmp_path, clock, parse_isolation=False) as engine:
        feeds.set("/a.ics", small_feed())
        calendar = await engine.add_calendar(feeds.url("/a.ics"))
        assert (await engine.sync_calendar(calendar.id)).added == 1
        assert engine._syncer.parse_pool is None


def team(*, edited: bool) -> str:
    """Three events; edited: one moved, one gone, one new, the series as it was."""
    series = event("daily", T0 + 3 * MINUTE, rrule="FREQ=DAILY;COUNT=5")
    if not edited:
        return ics(event("one", T0 + MINUTE), event("two", T0 + 2 * MINUTE), series)
    moved = event("one", T0 + 4 * MINUTE, summary="moved")
    return ics(moved, series, event("three", T0 + 5 * MINUTE))


async def stored(engine: Engine) -> set[tuple[str, str, str]]:
    """What the store holds ahead: key, start and summary of each occurrence."""
    upcoming = await engine.upcoming(days=30)
    return {
        (str(u.occurrence.key), u.occurrence.start.isoformat(), u.occurrence.summary)
        for u in upcoming
    }


@pytest.mark.parametrize("killed", [False, True], ids=["same-worker", "killed"])
async def test_a_resync_stores_what_a_whole_parse_gives_whatever_the_worker_kept(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock, killed: bool
) -> None:
    engine = make_engine(tmp_path, clock, parse_concurrency=1)
    async with engine:
        feeds.set("/a.ics", team(edited=False))
        calendar = await engine.add_calendar(feeds.url("/a.ics"))
        assert (await engine.sync_calendar(calendar.id)).added == 7
        if killed:  # between syncs: the new worker knows nothing of the calendar
            [worker] = pool_of(engine).pids()
            os.kill(worker, signal.SIGKILL)
            while not gone(worker):
                await asyncio.sleep(0.01)
        feeds.set("/a.ics", team(edited=True))
        result = await engine.sync_calendar(calendar.id)
        assert (result.added, result.updated, result.removed) == (1, 1, 1)
        assert pool_of(engine).stats.partial == (0 if killed else 1)
        assert await stored(engine) == {
            (str(o.key), o.start.isoformat(), o.summary)
            for o in parse_ics(team(edited=True), Window(T0, T0 + 30 * DAY)).occurrences
        }


@pytest.mark.parametrize("isolation", [True, False], ids=["isolated", "in-process"])
async def test_status_reports_the_parse_caches_within_their_byte_budget(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock, isolation: bool
) -> None:
    names = ("a", "b", "c")
    for name in names:
        feeds.set(f"/{name}.ics", small_feed())
    async with make_engine(tmp_path, clock, parse_isolation=isolation) as engine:
        ids = [(await engine.add_calendar(feeds.url(f"/{n}.ics"))).id for n in names]
        status = await engine.status()
        assert (status.parse_cache_bytes, status.parse_cached) == (0, 0)
        assert await engine.sync_calendar(ids[0])
        one = (await engine.status()).parse_cache_bytes
        assert one > 0
    # Room for about two calendars' caches: the oldest goes first.
    budget = one * 5 // 2
    changes = {"parse_isolation": isolation, "parse_cache_memory": budget}
    async with make_engine(tmp_path, clock, **changes) as engine:
        for calendar_id in ids:
            assert (await engine.sync_calendar(calendar_id, force=True)).ok
        status = await engine.status()
        assert status.parse_cache_budget == budget
        assert 0 < status.parse_cache_bytes <= budget
        assert status.parse_cached < len(ids)
        assert status.to_dict()["parse_cache"] == {
            "bytes": status.parse_cache_bytes,
            "budget": budget,
            "calendars": status.parse_cached,
        }
