"""`calsync demo`: its generated feeds, and a short run through the real runner."""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

import calsync.cli.demo
from calsync import Engine, ParseError, Window, parse_ics
from calsync.cli.demo import CALENDARS, HORIZON, DemoCalendar, run_demo
from calsync.testing import ManualClock

# One start in Berlin winter time, one just before the clocks go forward, one
# just before they go back, one at Tokyo's midnight.
STARTS = [
    datetime(2026, 1, 14, 9, 41, 7, tzinfo=UTC),
    datetime(2026, 3, 29, 0, 59, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 0, 58, 0, tzinfo=UTC),
    datetime(2026, 5, 31, 14, 59, 50, tzinfo=UTC),
]
MINUTE = timedelta(minutes=1)
HALF = timedelta(seconds=30)
SECOND = timedelta(seconds=1)
TOKYO = ZoneInfo("Asia/Tokyo")
BY_NAME = {calendar.name: calendar for calendar in CALENDARS}


def parsed(calendar: DemoCalendar, start: datetime, now: datetime | None = None):
    now = start if now is None else now
    window = Window.around(now, past=timedelta(days=1), horizon=HORIZON)
    return parse_ics(calendar.body(start, now), window)


def summaries_and_starts(start: datetime, now: datetime) -> dict[str, datetime]:
    result = parsed(BY_NAME["Moving meetings"], start, now)
    return {o.summary: o.start for o in result.occurrences}


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize(
    "calendar", [c for c in CALENDARS if not c.broken], ids=lambda c: c.name
)
def test_every_good_feed_parses_without_problems(
    calendar: DemoCalendar, start: datetime
) -> None:
    for minutes in range(6):
        result = parsed(calendar, start, start + minutes * MINUTE)
        assert result.problems == ()
        assert result.occurrences
        assert result.name == calendar.name


@pytest.mark.parametrize("start", STARTS)
def test_the_broken_feed_is_a_login_page(start: datetime) -> None:
    (broken,) = [c for c in CALENDARS if c.broken]
    assert broken.content_type == "text/html"
    with pytest.raises(ParseError):
        parsed(broken, start)


def test_there_is_one_broken_calendar_and_its_url_carries_a_secret() -> None:
    broken = [c for c in CALENDARS if c.broken]
    assert len(broken) == 1
    assert "token=" in broken[0].path


@pytest.mark.parametrize("start", STARTS)
def test_first_standup_reminder_is_due_within_seconds(start: datetime) -> None:
    calendar = BY_NAME["Team standups"]
    occurrences = parsed(calendar, start).occurrences
    first = occurrences[0]
    (lead,) = calendar.leads
    assert start + timedelta(seconds=5) <= first.start - lead <= start + MINUTE / 4
    assert first.tzid == "Europe/Berlin"
    assert first.key.recurrence_id  # it is an instance of a recurring rule
    assert len(occurrences) == 30


# Not over the autumn change: a wall-clock rule skips the repeated hour's times.
@pytest.mark.parametrize("start", [STARTS[0], STARTS[1], STARTS[3]])
def test_standups_recur_every_two_minutes(start: datetime) -> None:
    occurrences = parsed(BY_NAME["Team standups"], start).occurrences[:5]
    gaps = {b.start - a.start for a, b in itertools.pairwise(occurrences)}
    assert gaps == {2 * MINUTE}


@pytest.mark.parametrize("start", STARTS)
def test_holidays_are_all_day_dates_in_tokyo(start: datetime) -> None:
    calendar = BY_NAME["Tokyo office holidays"]
    occurrences = parsed(calendar, start).occurrences
    tokyo_today = start.astimezone(TOKYO).date()
    assert [o.start_date for o in occurrences] == [
        tokyo_today + timedelta(days=1),
        tokyo_today + timedelta(days=3),
    ]
    assert all(o.all_day for o in occurrences)
    tomorrow = occurrences[0]
    assert tomorrow.start.utcoffset() == timedelta(0)
    assert tomorrow.start.astimezone(TOKYO).time() == time(0)
    # announced a day ahead: its reminder is already due when the demo starts
    (lead,) = calendar.leads
    assert tomorrow.start - lead <= start < tomorrow.start


@pytest.mark.parametrize("start", STARTS)
def test_the_moving_feed_changes_every_minute_half_way_between_syncs(
    start: datetime,
) -> None:
    calendar = BY_NAME["Moving meetings"]
    bodies = [calendar.body(start, start + HALF + m * MINUTE) for m in range(6)]
    assert len(set(bodies)) == 6
    assert calendar.body(start, start) == calendar.body(start, start + HALF - SECOND)
    assert calendar.body(start, start) != bodies[0]


@pytest.mark.parametrize("start", STARTS)
def test_meetings_move_later_and_one_vanishes(start: datetime) -> None:
    first = summaries_and_starts(start, start)
    version_1 = summaries_and_starts(start, start + HALF)
    version_2 = summaries_and_starts(start, start + HALF + MINUTE)
    settled = summaries_and_starts(start, start + 10 * MINUTE)

    assert version_1["Design review"] == first["Design review"] + 2 * MINUTE
    assert version_1["1:1 with Sam"] == first["1:1 with Sam"] + 2 * MINUTE
    assert version_2["1:1 with Sam"] == first["1:1 with Sam"] + 4 * MINUTE
    assert settled["1:1 with Sam"] == first["1:1 with Sam"] + 6 * MINUTE
    assert "Budget sync" in version_1
    assert "Budget sync" not in version_2
    assert first["Project kickoff"] == settled["Project kickoff"]


@pytest.mark.parametrize("start", STARTS)
def test_the_budget_sync_vanishes_before_its_reminder_is_due(start: datetime) -> None:
    budget = summaries_and_starts(start, start)["Budget sync"]
    (lead,) = BY_NAME["Moving meetings"].leads
    # gone from the feed at 1m30s; syncs a minute apart see that in time
    assert budget - lead > start + HALF + MINUTE + 2 * MINUTE


@pytest.mark.parametrize("start", STARTS)
def test_the_design_review_moves_before_its_first_reminder(start: datetime) -> None:
    review = summaries_and_starts(start, start)["Design review"]
    (lead,) = BY_NAME["Moving meetings"].leads
    # the move lands at 30 s; the sync after it (a minute after the first, give
    # or take a sync_due tick) sees it well before the old reminder was due
    assert review - lead >= start + HALF + MINUTE + MINUTE / 2


# --- a short run through the real runner -----------------------------------------


# Long enough for any machine; reached only when what is awaited never happens.
SAFETY = 120.0
DEMO_START = datetime(2026, 1, 14, 9, 41, 7, tzinfo=UTC)
SETTLE_POLL = 0.005
T = TypeVar("T")


class Observed(Engine):
    """The real Engine, counting its jobs in flight: a job does not sleep on the clock.

    The runner's jobs are the demo's only work between two sleeps; the test moves
    the clock only while none is running, so virtual time never races a fetch.
    """

    busy = 0

    async def _job(self, job: Awaitable[T]) -> T:
        Observed.busy += 1
        try:
            return await job
        finally:
            Observed.busy -= 1

    async def sync_due(self, *args: Any, **options: Any) -> Any:
        return await self._job(super().sync_due(*args, **options))

    async def check_notifications(self, *args: Any, **options: Any) -> Any:
        return await self._job(super().check_notifications(*args, **options))

    async def dispatch_notifications(self, *args: Any, **options: Any) -> Any:
        return await self._job(super().dispatch_notifications(*args, **options))

    async def cleanup(self, *args: Any, **options: Any) -> Any:
        return await self._job(super().cleanup(*args, **options))


async def _settled(clock: ManualClock) -> None:
    """Wait until no job runs and every sleeper on ``clock`` sleeps again, none due.

    Checked twice in a row: a loop woken by the clock starts its job a few event
    loop turns later. Should a turn be missed on a loaded machine, a job runs one
    step (a second or two of virtual time) late; the assertions allow minutes.
    """
    last: tuple[datetime, ...] = ()
    while True:
        sleepers = clock.sleepers
        resting = bool(sleepers) and sleepers[0] > clock.now and not Observed.busy
        if resting and sleepers == last:
            return
        last = sleepers if resting else ()
        await asyncio.sleep(SETTLE_POLL)


async def _drive(
    clock: ManualClock, demo: asyncio.Task[None], done: Callable[[], bool]
) -> None:
    """Move ``clock`` from one sleeper's end to the next until ``done()`` holds."""
    while not done():
        if demo.done():
            demo.result()  # raises what ended it
            pytest.fail("the demo ended before it showed what it should")
        await _settled(clock)
        clock.set(clock.sleepers[0])


async def test_a_short_demo_prints_a_reminder_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The demo on virtual time: reminders, moving feeds, the broken feed, cleanup."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(calsync.cli.demo, "Engine", Observed)
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    clock = ManualClock(DEMO_START)
    hour = 3600.0

    def shown() -> bool:
        text = out.getvalue()
        return all(
            re.search(pattern, text)
            for pattern in (
                r"reminder\s+Team standups\s+Team standup",
                r"reminder\s+Tokyo office holidays",
                r"Partner calendar failed",
                r"moved: Design review",
                r"gone: Budget sync",
            )
        )

    demo = asyncio.create_task(run_demo(duration=hour, console=console, clock=clock))
    await asyncio.wait_for(_drive(clock, demo, shown), SAFETY)
    clock.set(DEMO_START + timedelta(seconds=hour))  # the demo's end
    await asyncio.wait_for(demo, SAFETY)

    text = out.getvalue()
    assert "calsync demo" in text
    # The first standup, 75 s after the (virtual) start, in Berlin time.
    standup = re.search(
        r"(\S+)\s+reminder\s+Team standups\s+Team standup\s+"
        r"starts 10:42:22 Europe/Berlin",
        text,
    )
    assert standup, text
    # Printed on the virtual clock, and not before its fire time (a minute ahead).
    fires = (DEMO_START + timedelta(seconds=15)).astimezone()
    assert standup[1] >= f"{fires:%H:%M:%S}", text
    # Cancelled at 1m30s, long before its reminder (at 7 min) was due.
    assert not re.search(r"reminder\s+Moving meetings\s+Budget sync", text), text
    assert "demo-s3cret" not in text
    assert re.search(r"Demo over: [1-9]\d* reminder\(s\) delivered", text), text
    assert list(tmp_path.iterdir()) == []
