"""The parser's own limits are Engine settings, and a feed past one fails its sync."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from calsync import Engine, HttpFetcher, SQLiteStore, ValidationError
from calsync.engine import SyncOutcome
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, event, ics, settings


def make_engine(tmp_path: Path, clock: ManualClock, **changes: object) -> Engine:
    store = SQLiteStore(tmp_path / "calsync.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    return Engine(store, fetcher, settings=settings(**changes), clock=clock)


def feed(events: int) -> str:
    return ics(*(event(f"e{i}", T0 + (i + 1) * MINUTE) for i in range(events)))


@pytest.mark.parametrize("isolation", [True, False], ids=["isolated", "in-process"])
@pytest.mark.parametrize(
    ("limit", "value", "named"),
    [
        ("parse_max_bytes", 2_048, "parse_max_bytes"),
        ("parse_max_components", 5, "parse_max_components"),
    ],
)
async def test_a_feed_past_a_parse_limit_fails_naming_the_setting(
    tmp_path: Path,
    feeds: FeedServer,
    clock: ManualClock,
    isolation: bool,
    limit: str,
    value: int,
    named: str,
) -> None:
    changes = {limit: value, "parse_isolation": isolation}
    async with make_engine(tmp_path, clock, **changes) as engine:
        feeds.set("/small.ics", feed(3))
        feeds.set("/big.ics", feed(20))
        small = await engine.add_calendar(feeds.url("/small.ics"))
        big = await engine.add_calendar(feeds.url("/big.ics"))
        assert (await engine.sync_calendar(small.id)).added == 3
        result = await engine.sync_calendar(big.id)
        assert result.outcome is SyncOutcome.FAILED
        assert result.error is not None
        assert named in result.error


async def test_a_line_past_parse_max_line_is_dropped_and_reported(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    long = event("long", T0 + MINUTE).replace(
        "END:VEVENT", "DESCRIPTION:" + "x" * 500 + "\r\nEND:VEVENT"
    )
    async with make_engine(tmp_path, clock, parse_max_line=200) as engine:
        feeds.set("/long.ics", ics(long, event("short", T0 + timedelta(hours=1))))
        calendar = await engine.add_calendar(feeds.url("/long.ics"))
        result = await engine.sync_calendar(calendar.id)
        assert result.ok
        assert result.added == 2
        assert any("parse_max_line" in problem.why for problem in result.problems)


def test_parse_limits_out_of_range_are_refused() -> None:
    with pytest.raises(ValidationError, match="parse_max_bytes"):
        settings(parse_max_bytes=10)
    with pytest.raises(ValidationError, match="parse_max_components"):
        settings(parse_max_components=0)
