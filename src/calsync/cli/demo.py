"""`calsync demo`: the whole engine at work on this machine, with nothing to set up.

A local `FeedServer` serves generated calendars whose events sit minutes after
the demo starts; an SQLite store in a temporary directory, the bundled runner
and a handler that prints each reminder do the rest. Time is squeezed: the
"daily" standup recurs every two minutes and feeds are synced every minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import attrs
from rich.console import Console
from rich.markup import escape

from calsync.core.durations import format_duration
from calsync.core.model import Occurrence
from calsync.core.settings import Settings
from calsync.engine.results import SyncDueResult, SyncOutcome, SyncResult
from calsync.engine.runner import Runner, Triggers
from calsync.engine.service import Engine, utc_now
from calsync.fetch.http import HttpFetcher
from calsync.handlers.delivery import Delivery
from calsync.stores.sqlite import SQLiteStore
from calsync.testing.feedserver import FeedServer

__all__ = ["CALENDARS", "HORIZON", "DemoCalendar", "DemoClock", "run_demo"]

FeedBody = Callable[[datetime, datetime], str]
"""Build a feed's text from the demo's start and the current instant (both UTC)."""

_PRODID = "-//calsync//demo//EN"
_MINUTE = timedelta(minutes=1)
_SYNC_EVERY = "every 1m"
HORIZON = timedelta(days=7)
"""How far ahead the demo's calendars look (the default is 90 days)."""
_POLL_SECONDS = 1.0
LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
    "<h1>Sign in to Partner Portal</h1><form method=post>"
    "<input name=user><input name=password type=password></form></body></html>"
)


def _stamp(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _local(instant: datetime, zone: str) -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime("%Y%m%dT%H%M%S")


def _calendar(
    name: str, events: list[list[str]], *, header: tuple[str, ...] = ()
) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{_PRODID}"]
    lines += [f"X-WR-CALNAME:{name}", *header]
    for event in events:
        lines += ["BEGIN:VEVENT", *event, "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def _event(
    uid: str,
    start: datetime,
    minutes: int,
    summary: str,
    stamp: datetime,
    *,
    sequence: int = 0,
) -> list[str]:
    return [
        f"UID:{uid}",
        f"DTSTAMP:{_stamp(stamp)}",
        f"DTSTART:{_stamp(start)}",
        f"DURATION:PT{minutes}M",
        f"SUMMARY:{summary}",
        f"SEQUENCE:{sequence}",
    ]


def standups_feed(start: datetime, now: datetime) -> str:
    """Return a Berlin standup every two minutes, whose first reminder fires at once.

    The first standup begins 75 seconds after *start*: with a one-minute lead,
    its reminder is due 15 seconds into the demo.
    """
    first = start + timedelta(seconds=75)
    event = [
        "UID:standup@demo.calsync",
        f"DTSTAMP:{_stamp(start)}",
        f"DTSTART;TZID=Europe/Berlin:{_local(first, 'Europe/Berlin')}",
        "DURATION:PT1M",
        "RRULE:FREQ=MINUTELY;INTERVAL=2;COUNT=30",
        "SUMMARY:Team standup",
        "LOCATION:Berlin office / video",
    ]
    return _calendar("Team standups", [event])


def moving_feed_version(start: datetime, now: datetime) -> int:
    """Return the moving feed's version: 0 at the start, +1 every minute from 30 s.

    Calendars sync about once a minute from the start; changing the feed half
    way between two syncs lets every sync see each change well before it matters.
    """
    return max(0, (now - start + _MINUTE / 2) // _MINUTE)


def moving_feed(start: datetime, now: datetime) -> str:
    """Return meetings that move later, and one that is cancelled, as minutes pass.

    The body changes every minute (its DTSTAMP does, at least). In version 1 the
    design review moves two minutes later; the 1:1 moves two minutes later in
    each of versions 1 to 3; the budget sync vanishes in version 2, long before
    its reminder was due.
    """
    minute = moving_feed_version(start, now)
    stamp = start + minute * _MINUTE
    moved = min(minute, 3)
    review = start + (timedelta(minutes=5) if minute >= 1 else timedelta(minutes=3))
    events = [
        _event(
            "kickoff@demo.calsync",
            start + timedelta(seconds=100),
            10,
            "Project kickoff",
            stamp,
        ),
        _event(
            "review@demo.calsync",
            review,
            15,
            "Design review",
            stamp,
            sequence=1 if minute >= 1 else 0,
        ),
        _event(
            "one-on-one@demo.calsync",
            start + (6 + 2 * moved) * _MINUTE,
            30,
            "1:1 with Sam",
            stamp,
            sequence=moved,
        ),
    ]
    if minute < 2:
        events.append(
            _event("budget@demo.calsync", start + 8 * _MINUTE, 30, "Budget sync", stamp)
        )
    return _calendar("Moving meetings", events)


def holidays_feed(start: datetime, now: datetime) -> str:
    """Return all-day office holidays in Tokyo; tomorrow's is announced a day ahead."""
    today = start.astimezone(ZoneInfo("Asia/Tokyo")).date()
    holidays = [(1, "Office closed: Foundation Day"), (3, "Office closed: Sports Day")]
    events = []
    for offset, summary in holidays:
        day = today + timedelta(days=offset)
        events.append(
            [
                f"UID:holiday-{offset}@demo.calsync",
                f"DTSTAMP:{_stamp(start)}",
                f"DTSTART;VALUE=DATE:{day:%Y%m%d}",
                f"DTEND;VALUE=DATE:{day + timedelta(days=1):%Y%m%d}",
                f"SUMMARY:{summary}",
                "TRANSP:TRANSPARENT",
            ]
        )
    return _calendar(
        "Tokyo office holidays", events, header=("X-WR-TIMEZONE:Asia/Tokyo",)
    )


def login_page(start: datetime, now: datetime) -> str:
    """Return what a feed URL with an expired session serves: a login page."""
    return LOGIN_PAGE


@attrs.frozen
class DemoCalendar:
    """One sample calendar: where it is served, how it is subscribed, what it shows."""

    path: str
    name: str
    leads: tuple[timedelta, ...]
    about: str
    body: FeedBody
    content_type: str = "text/calendar"
    broken: bool = False


CALENDARS: tuple[DemoCalendar, ...] = (
    DemoCalendar(
        "/team-standups.ics",
        "Team standups",
        (_MINUTE,),
        "Europe/Berlin times, a recurring rule; the first reminder comes in seconds",
        standups_feed,
    ),
    DemoCalendar(
        "/moving-meetings.ics",
        "Moving meetings",
        (_MINUTE,),
        "changes every minute: meetings move later, one is cancelled",
        moving_feed,
    ),
    DemoCalendar(
        "/tokyo-holidays.ics",
        "Tokyo office holidays",
        (timedelta(days=1),),
        "all-day dates in Asia/Tokyo, announced a day ahead",
        holidays_feed,
    ),
    DemoCalendar(
        "/partner.ics?token=demo-s3cret",
        "Partner calendar",
        (_MINUTE,),
        "broken on purpose: serves a login page (see its error)",
        login_page,
        content_type="text/html",
        broken=True,
    ),
)


class DemoClock(Protocol):
    """The demo's time: calling it gives now (UTC); ``sleep`` and ``monotonic`` wait.

    `calsync.testing.ManualClock` is one, so a test runs the demo on virtual time.
    """

    def __call__(self) -> datetime:
        """Return the current instant, aware."""
        ...

    def sleep(self, seconds: float) -> Awaitable[object]:
        """Wait *seconds*: `asyncio.sleep` or its stand-in."""
        ...

    def monotonic(self) -> float:
        """Return seconds from a fixed point: `time.monotonic` or its stand-in."""
        ...


class _RealClock:
    """The machine's clock: what ``calsync demo`` runs on."""

    def __call__(self) -> datetime:
        return utc_now()

    def sleep(self, seconds: float) -> Awaitable[object]:
        return asyncio.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


def _publish(server: FeedServer, start: datetime, now: datetime) -> None:
    for calendar in CALENDARS:
        server.set(
            calendar.path, calendar.body(start, now), content_type=calendar.content_type
        )


# -- what the demo prints --------------------------------------------------------

_Snapshot = dict[str, tuple[datetime, str]]


def _clock(instant: datetime, zone: tzinfo | None = None) -> str:
    return instant.astimezone(zone).strftime("%H:%M:%S")


def _now(clock: DemoClock) -> str:
    return f"[bold]{_clock(clock())}[/]"


def _starts(occurrence: Occurrence | None, start: datetime) -> str:
    if occurrence is not None and occurrence.all_day and occurrence.start_date:
        return f"all day {occurrence.start_date:%a %d %b}"
    if occurrence is not None and occurrence.tzid:
        return f"{_clock(start, ZoneInfo(occurrence.tzid))} {occurrence.tzid}"
    return f"{_clock(start)} local time"


def _changes(previous: _Snapshot, current: _Snapshot) -> list[str]:
    notes = []
    for key, (start, summary) in current.items():
        if key not in previous:
            notes.append(f"new: {escape(summary)}")
        elif previous[key][0] != start:
            notes.append(f"[magenta]moved:[/] {escape(summary)} to {_clock(start)}")
    for key, (_, summary) in previous.items():
        if key not in current:
            notes.append(f"[magenta]gone:[/] {escape(summary)}")
    return notes


class _Printer:
    """Prints each reminder as it is delivered, and what each sync cycle did."""

    def __init__(
        self, console: Console, names: Mapping[str, str], clock: DemoClock
    ) -> None:
        self.console = console
        self.clock = clock
        self.names = names
        self.delivered = 0
        self._cycles: asyncio.Queue[SyncDueResult] = asyncio.Queue()
        self._errors: dict[str, str] = {}
        self._snapshots: dict[str, _Snapshot] = {}

    async def __call__(self, delivery: Delivery) -> None:
        """Print one line per reminder: the demo's handler."""
        self.delivered += 1
        notification = delivery.notification
        occurrence = delivery.occurrence
        summary = occurrence.summary if occurrence is not None else notification.key.uid
        starts = _starts(occurrence, notification.start)
        lead = format_duration(notification.lead)
        self.console.print(
            f"{_now(self.clock)}  [yellow]reminder[/]  "
            f"[cyan]{escape(delivery.calendar.name or '')}[/]  "
            f"[bold]{escape(summary)}[/]  starts {starts}  lead {lead}  "
            f"[dim]id {delivery.id[:12]}[/]",
            highlight=False,
        )

    def on_result(self, job: str, result: object) -> None:
        """Queue each sync cycle's result for `watch` (runner listener, no I/O)."""
        if isinstance(result, SyncDueResult) and result.results:
            self._cycles.put_nowait(result)

    async def watch(self, engine: Engine) -> None:
        """Print one line per sync cycle, with what changed in each calendar."""
        while True:
            await self.report(await self._cycles.get(), engine)

    async def drain(self, engine: Engine) -> None:
        """Print the cycles not printed yet."""
        while not self._cycles.empty():
            await self.report(self._cycles.get_nowait(), engine)

    async def report(self, cycle: SyncDueResult, engine: Engine) -> None:
        """Print what one sync cycle did."""
        parts = [await self._describe(result, engine) for result in cycle.results]
        self.console.print(
            f"{_now(self.clock)}  [green]synced[/]    " + "; ".join(parts),
            highlight=False,
        )

    async def _describe(self, result: SyncResult, engine: Engine) -> str:
        name = f"[cyan]{escape(self.names.get(result.calendar_id, result.label))}[/]"
        if result.outcome is SyncOutcome.FAILED:
            error = (result.error or "failed").removeprefix(f"{result.label}: ")
            repeated = self._errors.get(result.calendar_id) == error
            self._errors[result.calendar_id] = error
            if repeated:
                return f"{name} [red]still failing[/]"
            return f"{name} [red]failed:[/] {escape(error)}"
        self._errors.pop(result.calendar_id, None)
        if result.outcome is not SyncOutcome.CHANGED:
            answer = " (304)" if result.not_modified else ""
            return f"{name} {result.outcome}{answer}"
        occurrences = await engine.occurrences(result.calendar_id)
        current = {str(o.key): (o.start, o.summary) for o in occurrences}
        previous = self._snapshots.get(result.calendar_id)
        self._snapshots[result.calendar_id] = current
        if previous is None:
            return f"{name} {len(current)} events"
        notes = _changes(previous, current) or [f"{result.updated} updated"]
        if result.notifications_cancelled:
            notes.append(f"{result.notifications_cancelled} reminder(s) cancelled")
        return f"{name} " + ", ".join(notes)


def _intro(console: Console, server: FeedServer, database: Path) -> None:
    console.print(
        "[bold]calsync demo[/]: nothing to set up, nothing leaves this machine."
    )
    console.print(f"  feed server  {server.url('/')} serving {len(CALENDARS)} feeds:")
    for calendar in CALENDARS:
        leads = ", ".join(format_duration(lead) for lead in calendar.leads)
        console.print(
            f"    [cyan]{calendar.name}[/] (lead {leads}): {calendar.about}",
            highlight=False,
        )
    console.print(f"  store        SQLite at {database}", highlight=False)
    console.print(
        "  runner       syncs each calendar every minute, checks reminders every "
        "5 s and delivers them every 2 s"
    )
    console.print(
        "Time is squeezed: the daily standup recurs every 2 minutes. "
        "Press Ctrl-C to stop.\n"
    )


class _ConsoleErrors(logging.Handler):
    """Shows calsync's errors on the demo's console; warnings the demo shows itself."""

    def __init__(self, console: Console, clock: DemoClock) -> None:
        super().__init__(logging.ERROR)
        self.console = console
        self.clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        """Print one error line."""
        message = escape(record.getMessage())
        line = f"{_now(self.clock)}  [red]error[/]     {message}"
        self.console.print(line, highlight=False)


@contextlib.contextmanager
def _demo_logging(console: Console, clock: DemoClock) -> Iterator[None]:
    """Unless the host configured logging, keep calsync's log lines off the display.

    Sync failures are shown in the cycle lines already; only errors are printed.
    """
    logger = logging.getLogger("calsync")
    if logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = _ConsoleErrors(console, clock)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


# -- the demo --------------------------------------------------------------------

_TRIGGERS = Triggers(
    sync_due="every 10s",
    check_notifications="every 5s",
    dispatch_notifications="every 2s",
)


async def run_demo(
    *,
    duration: float | None = None,
    console: Console | None = None,
    clock: DemoClock | None = None,
) -> None:
    """Run the demo until Ctrl-C, or for *duration* seconds; removes its files after.

    Nothing is fetched from outside 127.0.0.1. Everything that reads or waits on
    time (feeds, engine, runner, the stop) uses *clock*, the machine's by default.
    """
    console = console or Console()
    clock = clock or _RealClock()
    start = clock().astimezone(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(
        prefix="calsync-demo-", ignore_cleanup_errors=True
    ) as directory:
        database = Path(directory) / "calsync.sqlite3"
        async with FeedServer(clock=clock) as server:
            _publish(server, start, start)
            _intro(console, server, database)
            with _demo_logging(console, clock):
                delivered = await _run_engine(
                    server, database, start, duration, console, clock
                )
    console.print(
        f"\nDemo over: {delivered} reminder(s) delivered; temporary files removed."
    )


async def _run_engine(
    server: FeedServer,
    database: Path,
    start: datetime,
    duration: float | None,
    console: Console,
    clock: DemoClock,
) -> int:
    """Subscribe to the demo feeds and run the runner; return the reminders sent."""
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    settings = Settings(per_host_rate=None)
    store = SQLiteStore(database)
    async with Engine(store, fetcher, settings=settings, clock=clock) as engine:
        names = {}
        for calendar in CALENDARS:
            added = await engine.add_calendar(
                server.url(calendar.path),
                name=calendar.name,
                every=_SYNC_EVERY,
                leads=calendar.leads,
                horizon=HORIZON,
            )
            names[added.id] = calendar.name
        printer = _Printer(console, names, clock)
        runner = Runner(
            engine,
            printer,
            triggers=_TRIGGERS,
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
        runner.on_result(printer.on_result)
        helpers = [
            asyncio.create_task(_keep_feeds_current(server, start, clock)),
            asyncio.create_task(printer.watch(engine)),
        ]
        if duration is not None:
            helpers.append(asyncio.create_task(_stop_after(runner, duration, clock)))
        try:
            await runner.run(install_signal_handlers=duration is None)
        finally:
            await _cancel(helpers)
        await printer.drain(engine)
        return printer.delivered


async def _keep_feeds_current(
    server: FeedServer, start: datetime, clock: DemoClock
) -> None:
    while True:
        await clock.sleep(_POLL_SECONDS)
        _publish(server, start, clock().astimezone(UTC))


async def _stop_after(runner: Runner, seconds: float, clock: DemoClock) -> None:
    await clock.sleep(seconds)
    runner.request_stop()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
