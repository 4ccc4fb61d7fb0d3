"""Events the text places far from the window are not read; the result is the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from icalendar.parser.content_line import UFOLD, Contentlines

from _fuzzing import mutated, sources
from calsync import CalsyncError, ParseCache, ParsedCalendar, Window, parse_ics
from calsync.core.split import (
    _all_lines,
    _plain_lines,
    _reading,
    blank_far_events,
    split_calendar,
)
from calsync.core.vtimezone import plain_parts
from conftest import CORPUS, ics

GOOGLE = CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"
FEEDS = sorted(
    path
    for path in CORPUS.rglob("*.ics")
    if path != GOOGLE and path.read_bytes().lstrip()[:15] == b"BEGIN:VCALENDAR"
)
YEAR_2019 = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC))
YEAR_2026 = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def windows() -> list[Window]:
    """Windows from 1997 to 2026: a year, and a few days in March."""
    found = []
    for year in (1997, 2005, 2011, 2019, 2026):
        for month, days in ((1, 365), (3, 3)):
            start = datetime(year, month, 1, tzinfo=UTC)
            found.append(Window(start, start + timedelta(days=days)))
    return found


def outcome(
    body: bytes, window: Window, zone: str | tzinfo, cache: ParseCache | None = None
) -> ParsedCalendar | tuple[type, str]:
    try:
        return parse_ics(body, window, default_tz=zone, cache=cache)
    except CalsyncError as error:
        return (type(error), str(error))


def same_as_read_in_full(
    body: bytes | str, window: Window, zone: str | tzinfo = "UTC"
) -> None:
    """A whole parse equals a parse through a new cache, which reads every event."""
    data = body.encode() if isinstance(body, str) else body
    expected = outcome(data, window, zone, ParseCache())
    assert outcome(data, window, zone) == expected


# --- the same result --------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("feed", FEEDS, ids=lambda path: path.name)
def test_corpus_feed_parses_the_same_in_every_window(feed: object) -> None:
    body = feed.read_bytes()  # type: ignore[attr-defined]
    for window in windows():
        for zone in ("UTC", "Europe/Berlin"):
            same_as_read_in_full(body, window, zone)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("year", [2011, 2019, 2021])
def test_google_export_parses_the_same(year: int) -> None:
    start = datetime(year, 1, 1, tzinfo=UTC)
    same_as_read_in_full(
        GOOGLE.read_bytes(), Window(start, start.replace(year=year + 1))
    )


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("first", range(0, 200, 50))
def test_mutated_feeds_parse_the_same(first: int) -> None:
    pool = sources()
    for number in range(first, first + 50):
        body = mutated(number, pool).body
        for window in (YEAR_2019, YEAR_2026):
            same_as_read_in_full(body, window)


def test_google_export_reads_a_tenth_of_its_events_for_a_year() -> None:
    text = GOOGLE.read_bytes().decode()
    layout = split_calendar(text)
    assert layout is not None
    blanked = blank_far_events(text, layout, YEAR_2019.start, YEAR_2019.end)
    assert blanked is not None
    assert blanked.count("\n") == text.count("\n")  # line numbers stay
    kept = split_calendar(blanked)
    assert kept is not None
    assert len(layout.events) == 4_778
    assert len(kept.events) == 409


# --- what is never blanked --------------------------------------------------

FAR = "DTSTART:20100104T090000Z\nDTEND:20100104T100000Z"


def kept_events(body: str, window: Window = YEAR_2019) -> int:
    """How many events are left to read after blanking the far ones."""
    layout = split_calendar(body)
    assert layout is not None
    blanked = blank_far_events(body, layout, window.start, window.end)
    if blanked is None:
        return len(layout.events)
    kept = split_calendar(blanked)
    assert kept is not None
    return len(kept.events)


def test_far_single_event_is_blanked() -> None:
    body = ics(f"UID:far\n{FAR}", "UID:near\nDTSTART:20190601T090000Z")
    assert kept_events(body) == 1
    same_as_read_in_full(body, YEAR_2019)


@pytest.mark.parametrize(
    "line",
    [
        "RRULE:FREQ=WEEKLY",
        "rrule:FREQ=WEEKLY",
        "R RULE:FREQ=WEEKLY",
        "RDATE:20190601T090000Z",
        "RECURRENCE-ID:20190601T090000Z",
        "DURATION:PT1H",
    ],
)
def test_far_start_of_a_series_is_kept(line: str) -> None:
    body = ics(f"UID:series\n{FAR}\n{line}")
    assert kept_events(body) == 1
    same_as_read_in_full(body, YEAR_2019)


def test_folded_rule_name_is_kept() -> None:
    body = ics("UID:series\n" + FAR).replace(
        "UID:series", "UID:series\r\nRRU\r\n LE:FREQ=DAILY"
    )
    assert kept_events(body) == 1
    same_as_read_in_full(body, YEAR_2019)


def test_far_event_sharing_a_uid_with_a_near_one_is_kept() -> None:
    body = ics(
        f"UID:shared\n{FAR}",
        "UID:shared\nRECURRENCE-ID:20190601T090000Z\nDTSTART:20190601T100000Z",
    )
    assert kept_events(body) == 2
    same_as_read_in_full(body, YEAR_2019)


def test_override_far_from_its_series_is_kept() -> None:
    body = ics(
        "UID:weekly\nDTSTART:20190107T090000Z\nRRULE:FREQ=WEEKLY;COUNT=3",
        f"UID:weekly\nRECURRENCE-ID:20190114T090000Z\n{FAR}",
    )
    assert kept_events(body) == 2
    same_as_read_in_full(body, YEAR_2019)


def test_an_unplain_uid_anywhere_keeps_every_event() -> None:
    body = ics(f"UID:far\n{FAR}", "UID;X-P=1:odd\nDTSTART:20190601T090000Z")
    assert kept_events(body) == 2
    same_as_read_in_full(body, YEAR_2019)


@pytest.mark.parametrize(
    "start",
    [
        "DTSTART;TZID=Europe/lisbon:20100104T090000",  # not tzdata's spelling
        "DTSTART;TZID=Europe:20100104T090000",  # a folder of tzdata
        "DTSTART;VALUE=DATE:20100104T090000",
        "DTSTART:20100104T090000 ",
        "DTSTART:20100230T090000",
        "DTSTART:00010104T090000",
        "DTSTART;VALUE=DATE-TIME:20100104T090000",
    ],
)
def test_start_not_plainly_placed_is_kept(start: str) -> None:
    body = ics("UID:odd\nDTSTART:X").replace("DTSTART:X", start)
    assert kept_events(body) == 1
    same_as_read_in_full(body, YEAR_2019)


def test_floating_and_dated_far_events_are_blanked() -> None:
    body = ics(
        "UID:floating\nDTSTART;TZID=Europe/Lisbon:20100104T090000",
        "UID:dated\nDTSTART;VALUE=DATE:20100104\nDTEND;VALUE=DATE:20100105",
        "UID:near\nDTSTART:20190601T090000",
    )
    assert kept_events(body) == 1
    for zone in ("UTC", "Pacific/Kiritimati", "Etc/GMT+12"):
        same_as_read_in_full(body, YEAR_2019, zone)


def test_events_just_outside_the_window_are_read() -> None:
    # Within a few days of the window an event's zone may put it inside.
    body = ics(
        "UID:before\nDTSTART:20181230T200000\nDTEND:20181231T230000",
        "UID:after\nDTSTART;VALUE=DATE:20200101",
    )
    assert kept_events(body) == 2
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        same_as_read_in_full(body, YEAR_2019, zone)


def test_custom_zone_reads_every_event() -> None:
    class Odd(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=23)

        def dst(self, dt: datetime | None) -> timedelta:
            return timedelta(0)

    body = ics(f"UID:far\n{FAR}", "UID:floating\nDTSTART:20100104T090000")
    same_as_read_in_full(body, YEAR_2019, Odd())
    same_as_read_in_full(body, YEAR_2019, timezone(timedelta(hours=-5)))


def test_far_event_with_an_unreadable_alarm_is_kept() -> None:
    alarm = "BEGIN:VALARM\nACTION:DISPLAY\nTRIGGER:not a duration\nEND:VALARM"
    body = ics(f"UID:far\n{FAR}\n{alarm}", "UID:near\nDTSTART:20190601T090000Z")
    assert kept_events(body) == 2
    same_as_read_in_full(body, YEAR_2019)


def test_far_event_with_a_readable_alarm_is_blanked() -> None:
    alarm = "BEGIN:VALARM\nACTION:DISPLAY\nTRIGGER:-PT15M\nEND:VALARM"
    body = ics(f"UID:far\n{FAR}\n{alarm}", "UID:near\nDTSTART:20190601T090000Z")
    assert kept_events(body) == 1
    same_as_read_in_full(body, YEAR_2019)


def test_problems_keep_their_line_numbers() -> None:
    body = ics(
        f"UID:far\n{FAR}\nSUMMARY:folded",
        "UID:near\nDTSTART:20190601T090000Z\nRRULE:FREQ=SOMETIMES",
    ).replace("SUMMARY:folded", "SUMMARY:a\r\n long\r\n  folded summary")
    assert kept_events(body) == 1
    parsed = parse_ics(body, YEAR_2019)
    line = body.split("\n").index("UID:near\r") + 1
    assert [problem.line for problem in parsed.problems] == [line]
    same_as_read_in_full(body, YEAR_2019)


def test_alarm_uid_numbering_a_near_event_keeps_the_far_one() -> None:
    alarm = "BEGIN:VALARM\nUID:near\nACTION:DISPLAY\nTRIGGER:-PT15M\nEND:VALARM"
    body = ics(
        f"UID:far\n{FAR}\n{alarm}",
        "UID:near\nDTSTART:20190601T090000Z\nRRULE:FREQ=SOMETIMES",
    )
    assert kept_events(body) == 2
    same_as_read_in_full(body, YEAR_2019)


# --- the two ways of reading a block ------------------------------------------


@pytest.mark.filterwarnings("ignore")
def test_plain_blocks_read_the_same_line_by_line() -> None:
    pool = sources()
    bodies = [path.read_bytes() for path in FEEDS]
    bodies += [mutated(number, pool).body for number in range(400)]
    compared = 0
    for body in bodies:
        layout = split_calendar(body.decode("utf-8", "replace"))
        for block in layout.events if layout else []:
            lines = _plain_lines(block)
            if lines is None:
                continue
            unfolded = UFOLD.sub("", block)
            slowly = _reading(unfolded, _all_lines(unfolded), {})
            assert _reading(block, lines, {}) == slowly
            compared += 1
    assert compared > 1_000


# --- plain content lines ------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
def test_plain_lines_split_as_icalendar_splits_them() -> None:
    pool = sources()
    bodies = [path.read_bytes() for path in [*FEEDS, GOOGLE]]
    bodies += [mutated(number, pool).body for number in range(400)]
    bodies.append(b'A:\\\\n\\,\r\nX-Y:"q";x\r\nN1:a\rb\r\nDTSTART:x:y\r\nA-:\r\n')
    split = 0
    for body in bodies:
        for line in Contentlines.from_ical(body.decode("utf-8", "replace")):
            parts = plain_parts(line) if line else None
            if parts is None:
                continue
            name, params, value = line.parts()
            assert parts == (name, params, value)
            assert type(parts[1]) is type(params)
            assert dict(parts[1]) == dict(params) == {}
            split += 1
    assert split > 100_000
