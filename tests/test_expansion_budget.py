"""Every expansion a feed causes is charged to one budget and ends in a problem.

The feeds in tests/slow_inputs once took seconds to minutes to parse (found by
``nox -s fuzz``, or the smallest feeds showing the same hole): instances that
start centuries before the window and last into it, a DTEND long before its
DTSTART (in the year 1, before UTC can be reached from Berlin), a
RANGE=THISANDFUTURE override moved to the year 9999, an override with rules of
its own (recurring-ical-events runs the master's rules up to its
RECURRENCE-ID, whatever the window), dense rules in the window. The tests
assert the problem that names the limit, not a time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from calsync import ParseCache, ParsedCalendar, Window, parse_ics

SLOW_INPUTS = Path(__file__).resolve().parent / "slow_inputs"
WINDOW = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 7, 1, tzinfo=UTC))
SERIES_LIMIT = "over the parser's budget of 400,000 a series"
CALENDAR_LIMIT = "left of the parser's budget of 1,000,000 a calendar"


def parsed_both_ways(body: bytes) -> ParsedCalendar:
    """Parse whole and through a warmed cache; both must agree."""
    cache = ParseCache()
    parse_ics(body.replace(b"UID:", b"UID:warm-"), WINDOW, cache=cache)
    whole = parse_ics(body, WINDOW)
    assert parse_ics(body, WINDOW, cache=cache) == whole
    return whole


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    ("name", "dense_uid", "occurrences"),
    [
        ("year-0023-weekly-lasting-into-the-window.ics", "ancient", 0),
        ("thisandfuture-override-from-9999.ics", "moved", 0),
        ("override-checked-against-a-secondly-rule.ics", "checked", 0),
        ("fuzz-22190-override-checked-against-a-secondly-rule.ics", "111", 0),
        ("dtend-in-year-1-before-utc-begins.ics", "year-1", 0),
        ("fuzz-62427-dtend-in-year-1.ics", "fuzz-2", 44),
        ("fuzz-81562-dtend-in-year-1-nested.ics", "fuzz-0", 0),
        ("fuzz-10004-dtend-in-1601.ics", "test1", 5),
        ("fuzz-1841-secondly-rule-in-a-zone.ics", "fuzz-rule", 20_000),
        ("fuzz-24250-secondly-until-9999.ics", "fuzz-rule", 20_000),
    ],
)
def test_slow_input_is_cut_at_the_series_budget(
    name: str, dense_uid: str, occurrences: int
) -> None:
    parsed = parsed_both_ways((SLOW_INPUTS / name).read_bytes())
    (dense,) = [p for p in parsed.problems if p.what == "recurrence too dense"]
    assert dense.uid == dense_uid
    assert SERIES_LIMIT in dense.why
    assert len(parsed.occurrences) == occurrences
    if occurrences == 20_000:
        assert parsed.problems[-1].what == "too many occurrences"


def test_instances_lasting_into_the_window_are_charged_to_the_calendar() -> None:
    body = (SLOW_INPUTS / "eight-weekly-series-lasting-centuries.ics").read_bytes()
    parsed = parsed_both_ways(body)
    dense = [p for p in parsed.problems if p.what == "recurrence too dense"]
    # Each series builds ~15,000 instances from 1700 on, and may: the first
    # ones use up the calendar's budget, so the later ones are cut.
    assert [p.uid for p in dense] == [f"long-{n}" for n in range(4, 8)]
    assert all(CALENDAR_LIMIT in p.why for p in dense)
    assert len(parsed.occurrences) == 20_000


def _event(uid: str, *lines: str) -> str:
    return "\n".join(["BEGIN:VEVENT", f"UID:{uid}", *lines, "END:VEVENT", ""])


def test_rdate_list_past_the_budget_skips_its_event_and_keeps_what_was_stored() -> None:
    # Three series cut before the window spend the calendar's budget.
    spenders = [
        _event(f"dense-{n}", f"DTSTART:0{n}230301T090000Z", "RRULE:FREQ=DAILY")
        for n in range(3)
    ]
    dates = ",".join(f"201903{day:02d}T090000Z" for day in range(1, 29))
    listed = _event("listed", "DTSTART:20190301T090000Z", f"RDATE:{dates}")
    single = _event("single", "DTSTART:20190301T100000Z")
    body = f"BEGIN:VCALENDAR\n{''.join(spenders)}{listed}{single}END:VCALENDAR\n"
    parsed = parsed_both_ways(body.encode())
    (problem,) = [p for p in parsed.problems if p.what == "too many dates"]
    assert problem.uid == "listed"
    assert problem.why.startswith("28 RDATE and 0 EXDATE values would need about")
    assert CALENDAR_LIMIT in problem.why
    assert parsed.unreadable_uids == {"listed"}
    assert [o.key.uid for o in parsed.occurrences] == ["single"]


def test_rdate_list_within_the_budget_is_expanded() -> None:
    dates = ",".join(f"201903{day:02d}T090000Z" for day in range(1, 29))
    event = _event("listed", "DTSTART:20190301T090000Z", f"RDATE:{dates}")
    parsed = parsed_both_ways(f"BEGIN:VCALENDAR\n{event}END:VCALENDAR\n".encode())
    assert parsed.problems == ()
    assert len(parsed.occurrences) == 28
