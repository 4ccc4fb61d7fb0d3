"""parse_ics contains a feed (DESIGN §6): unreadable events stay known, bounded work."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from calsync import ParseCache, Window, parse_ics
from conftest import ics

YEAR_2026 = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def thirty_events(broken: set[int]) -> str:
    """Thirty events, those numbered in ``broken`` with an unreadable DTSTART."""
    events = []
    for number in range(30):
        start = (
            "garbage" if number in broken else f"202607{number % 28 + 1:02d}T100000Z"
        )
        events.append(f"UID:event-{number}\nDTSTART:{start}\nSUMMARY:Event {number}")
    return ics(*events)


BROKEN = set(range(0, 30, 3))


@pytest.mark.parametrize("cached", [False, True], ids=["whole", "cached"])
def test_unparsable_events_are_named_as_unreadable_not_dropped(cached: bool) -> None:
    cache = ParseCache() if cached else None
    parse_ics(thirty_events(set()), YEAR_2026, cache=cache)
    parsed = parse_ics(thirty_events(BROKEN), YEAR_2026, cache=cache)
    assert parsed.unreadable_uids == {f"event-{n}" for n in BROKEN}
    assert len(parsed.occurrences) == 20
    skipped = [p for p in parsed.problems if p.what == "event skipped"]
    assert {p.uid for p in skipped} == parsed.unreadable_uids


def test_cached_reparse_names_the_same_unreadable_events() -> None:
    cache = ParseCache()
    first = parse_ics(thirty_events(BROKEN), YEAR_2026, cache=cache)
    again = parse_ics(thirty_events(BROKEN), YEAR_2026, cache=cache)
    assert cache.stats.groups_reused == 30
    assert again == first == parse_ics(thirty_events(BROKEN), YEAR_2026)


def test_readable_feed_has_no_unreadable_events() -> None:
    assert parse_ics(thirty_events(set()), YEAR_2026).unreadable_uids == frozenset()


def test_failed_override_makes_its_whole_uid_unreadable() -> None:
    feed = ics(
        "UID:series\nDTSTART:20260701T090000Z\nRRULE:FREQ=DAILY;COUNT=3",
        "UID:series\nRECURRENCE-ID:20260702T090000Z\nDTSTART:garbage",
    )
    parsed = parse_ics(feed, YEAR_2026)
    assert parsed.unreadable_uids == {"series"}


def test_unreadable_rdate_keeps_the_events_stored_instances() -> None:
    feed = ics("UID:extra\nDTSTART:20260701T090000Z\nRDATE:garbage")
    parsed = parse_ics(feed, YEAR_2026)
    assert parsed.unreadable_uids == {"extra"}
    assert len(parsed.occurrences) == 1


def test_event_block_icalendar_refuses_is_unreadable_by_its_uid() -> None:
    body = thirty_events(set()).replace(
        "SUMMARY:Event 4\r\n", "SUMMARY:Event 4\r\nBEGIN:VALARM\r\n"
    )
    parsed = parse_ics(body, YEAR_2026)
    assert parsed.unreadable_uids == {"event-4"}
    assert len(parsed.occurrences) == 29


def test_event_without_a_readable_uid_says_it_will_be_removed() -> None:
    parsed = parse_ics("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID;x\n", YEAR_2026)
    assert parsed.unreadable_uids == frozenset()
    (skipped,) = [p for p in parsed.problems if p.what == "event skipped"]
    assert "UID is unreadable" in skipped.why
