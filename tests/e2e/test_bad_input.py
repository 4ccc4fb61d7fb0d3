"""Bad feeds through a real runner: clear errors per calendar, others undisturbed."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from calsync import Calendar, Engine, ValidationError

from .conftest import (
    Runners,
    TimedFeedServer,
    Timeline,
    event,
    eventually,
    expected_id,
    ics,
    sqlite_only,
    synced_since,
)

LEAD = timedelta(seconds=1)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@sqlite_only
async def test_failing_feeds_are_reported_per_calendar_and_others_still_fire(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    time = Timeline()
    start = time.at(3)
    feeds.set("/good.ics", ics(event("standup", start)))
    feeds.set("/error.ics", ics(event("other", start)))
    feeds.fail("/error.ics", 500)
    feeds.set(
        "/login.ics", "<html><body>Sign in</body></html>", content_type="text/html"
    )
    good = await engine.add_calendar(feeds.url("/good.ics"), name="good", leads=[LEAD])
    bad = {
        "server error": "HTTP 500",
        "dead host": "could not connect",
        "login page": "not an iCalendar feed",
    }
    urls = {
        "server error": feeds.url("/error.ics"),
        "dead host": f"http://127.0.0.1:{closed_port()}/team.ics",
        "login page": feeds.url("/login.ics"),
    }
    calendars = [
        await engine.add_calendar(urls[name], name=name, leads=[LEAD]) for name in bad
    ]
    runner = runners.spawn()
    for calendar in calendars:
        await synced_since(engine, calendar.id, time.origin)
    wanted = expected_id(good, "standup", start, LEAD)

    async def delivered() -> bool:
        return wanted in runners.delivered_ids()

    await eventually(delivered, within=time.until(start) + 3, what="the good reminder")
    await runner.stop()

    assert runners.delivered_ids() == {wanted: 1}
    status = await engine.status()
    by_name = {entry.calendar.name: entry.calendar for entry in status.calendars}
    assert by_name["good"].state.last_error is None
    assert (status.pending, status.failed, status.missed) == (0, 0, 0)
    for name, reason in bad.items():
        calendar = by_name[name]
        assert calendar.state.consecutive_failures >= 1
        assert calendar.state.last_error is not None
        assert reason in calendar.state.last_error
    for name in bad:
        _names(by_name[name])


def _names(calendar: Calendar) -> None:
    """The stored error says which calendar it is about (its label: name and id)."""
    error = calendar.state.last_error
    assert error is not None
    assert calendar.label in error, f"{error!r} does not name {calendar.label!r}"


@sqlite_only
async def test_truncated_feed_loses_nothing_stored_and_says_so(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    time = Timeline()
    later = time.at(3600)
    events = [event(f"review-{n}", later + timedelta(hours=n)) for n in range(10)]
    whole = ics(*events)
    feeds.set("/team.ics", whole)
    calendar = await engine.add_calendar(feeds.url("/team.ics"), name="team")
    runner = runners.spawn()
    await synced_since(engine, calendar.id, time.origin)
    assert len(await engine.store.list_occurrences(calendar.id)) == 10

    # The connection dropped inside the 8th event; the server still said 200.
    feeds.set("/team.ics", whole[: whole.index("UID:review-7") + 8])
    requested = engine.now()
    await engine.request_sync(calendar.id)
    synced = await synced_since(engine, calendar.id, requested)
    await runner.stop()

    stored = await engine.store.list_occurrences(calendar.id)
    assert len(stored) == 10, "a truncated feed removed stored events"
    assert synced.state.last_error is not None, "status does not show the problem"
    _names(synced)


@sqlite_only
async def test_out_of_range_spans_are_refused_at_the_api_and_the_others_still_fire(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    """A lead of 10,000 years once made check_notifications overflow for everyone."""
    time = Timeline()
    start = time.at(3)
    feeds.set("/good.ics", ics(event("standup", start)))
    url = feeds.url("/good.ics")
    for wrong in ({"leads": ["3650000d"]}, {"horizon": "36500d"}, {"leads": ["400d"]}):
        with pytest.raises(ValidationError, match=r"must be at most|too long"):
            await engine.add_calendar(url, name="wrong", **wrong)  # type: ignore[arg-type]
    good = await engine.add_calendar(url, name="good", leads=[LEAD])
    with pytest.raises(ValidationError, match="a lead must be at most 366d"):
        await engine.update_calendar(good.id, leads=[timedelta(days=3650000)])
    assert [calendar.id for calendar in await engine.list_calendars()] == [good.id]
    assert (await engine.get_calendar(good.id)).leads == (LEAD,)

    runner = runners.spawn()
    wanted = expected_id(good, "standup", start, LEAD)

    async def delivered() -> bool:
        return wanted in runners.delivered_ids()

    await eventually(delivered, within=time.until(start) + 3, what="the good reminder")
    await runner.stop()
    assert runners.delivered_ids() == {wanted: 1}
