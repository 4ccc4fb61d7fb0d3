"""Properties of parse_ics on generated feeds: wall times kept, only ParseError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calsync import ParsedCalendar, ParseError, Window, parse_ics
from conftest import CORPUS, ics

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
    "UTC",
]
# Naive on purpose: wall times, placed in a zone by the feed's TZID.
FIRST_WALL = datetime(2026, 1, 2)  # noqa: DTZ001
LAST_WALL = datetime(2026, 12, 1)  # noqa: DTZ001
YEAR = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


@settings(max_examples=150, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    first=st.datetimes(min_value=FIRST_WALL, max_value=LAST_WALL),
    minutes=st.integers(min_value=0, max_value=26 * 60),
    freq=st.sampled_from(["DAILY", "WEEKLY"]),
    count=st.integers(min_value=1, max_value=40),
)
def test_series_keeps_its_wall_time_and_exact_length(
    zone_name: str, first: datetime, minutes: int, freq: str, count: int
) -> None:
    zone = ZoneInfo(zone_name)
    first = first.replace(second=0, microsecond=0)
    last = first + timedelta(minutes=minutes)
    feed = ics(f"""
        UID:prop
        DTSTART;TZID={zone_name}:{first:%Y%m%dT%H%M%S}
        DTEND;TZID={zone_name}:{last:%Y%m%dT%H%M%S}
        RRULE:FREQ={freq};COUNT={count}
    """)
    parsed = parse_ics(feed, YEAR)
    length = last.replace(tzinfo=zone) - first.replace(tzinfo=zone).astimezone(UTC)
    assert parsed.problems == ()
    assert len(parsed.occurrences) <= count
    for occurrence in parsed.occurrences:
        local = occurrence.start.astimezone(zone)
        wall = local.replace(tzinfo=None)
        expected = wall.replace(hour=first.hour, minute=first.minute, fold=0)
        # The wall time is kept where it exists; in a gap it is read with fold=0.
        assert occurrence.start == expected.replace(tzinfo=zone).astimezone(UTC)
        assert occurrence.end - occurrence.start == length
        assert occurrence.key.recurrence_id == f"{occurrence.start:%Y%m%dT%H%M%SZ}"
    starts = [o.start for o in parsed.occurrences]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)


SMALL_FEEDS = sorted(
    path
    for path in CORPUS.rglob("*.ics")
    if path.stat().st_size < 20_000
    and path.read_bytes().lstrip()[:15] == b"BEGIN:VCALENDAR"
)


@st.composite
def mangled_feeds(draw: st.DrawFn) -> bytes:
    """A corpus feed with random lines dropped, doubled or cut short."""
    lines = draw(st.sampled_from(SMALL_FEEDS)).read_bytes().splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        if not lines:
            break
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = draw(st.sampled_from(["drop", "double", "cut"]))
        if action == "drop":
            del lines[index]
        elif action == "double":
            lines.insert(index, lines[index])
        else:
            line = lines[index]
            lines[index] = line[: draw(st.integers(min_value=0, max_value=len(line)))]
    return b"\r\n".join(lines)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mangled_feeds())
def test_mangled_feed_parses_or_raises_parse_error(body: bytes) -> None:
    try:
        parsed = parse_ics(body, YEAR, default_tz="Europe/Berlin")
    except ParseError:
        return
    assert isinstance(parsed, ParsedCalendar)
    assert len({o.key for o in parsed.occurrences}) == len(parsed.occurrences)
    for occurrence in parsed.occurrences:
        assert YEAR.overlaps(occurrence.start, occurrence.end)
