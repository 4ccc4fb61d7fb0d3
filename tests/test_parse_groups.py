"""The group-by-group parse: the same result as one icalendar tree, in less memory."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fuzzing import mutated, sources
from calsync import CalsyncError, ParseCache, ParsedCalendar, Window, parse_ics
from calsync.core.ics import decode_body, parse_whole, require_icalendar
from calsync.core.limits import Limits
from calsync.core.model import Problem
from calsync.core.split import split_calendar
from calsync.core.zones import resolve_zone
from conftest import CORPUS, ics

YEAR_2026 = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
FUZZ_WINDOW = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 7, 1, tzinfo=UTC))
FEEDS = sorted(
    path
    for path in CORPUS.rglob("*.ics")
    if path.stat().st_size < 200_000
    and path.read_bytes().lstrip()[:15] == b"BEGIN:VCALENDAR"
)
POOL = sources()


def one_tree(
    body: bytes | str, window: Window, default_tz: str = "UTC", limit: int = 20_000
) -> ParsedCalendar:
    """Parse as calsync did before: the whole body as one icalendar tree."""
    problems: list[Problem] = []
    limits = Limits()
    if isinstance(body, bytes | str):
        limits.check_size(len(body))
    text = decode_body(body, problems)
    require_icalendar(text)
    text = limits.check_lines(text, problems)
    limits.check_components(*limits.count(text))
    return parse_whole(text, window, resolve_zone(default_tz), limit, problems)


def outcome(parse: object, *args: object, **options: object) -> object:
    try:
        return parse(*args, **options)  # type: ignore[operator]
    except CalsyncError as error:
        return (type(error), str(error))


# --- the same result --------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("feed", FEEDS, ids=lambda path: path.name)
def test_corpus_feed_parses_as_one_tree_does(feed: object) -> None:
    body = feed.read_bytes()  # type: ignore[attr-defined]
    for window in (YEAR_2026, FUZZ_WINDOW):
        expected = outcome(one_tree, body, window, "Europe/Berlin")
        assert outcome(parse_ics, body, window, default_tz="Europe/Berlin") == expected


def test_most_corpus_feeds_are_parsed_group_by_group() -> None:
    split = [
        split_calendar(path.read_bytes().decode("utf-8", "replace")) is not None
        for path in FEEDS
    ]
    assert sum(split) > 0.8 * len(split)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("first", range(0, 200, 50))
def test_mutated_feeds_parse_as_one_tree_does(first: int) -> None:
    for number in range(first, first + 50):
        fuzz = mutated(number, POOL)
        expected = outcome(one_tree, fuzz.body, FUZZ_WINDOW)
        assert outcome(parse_ics, fuzz.body, FUZZ_WINDOW) == expected, (
            number,
            fuzz.how,
        )


UID_LINES = [
    "UID:plain",
    "UID: padded \t",
    "UID;X-PARAM=1:with-parameter",
    "uid:lower-case",
    "U ID:blank-in-name",
    "UID:escaped\\, comma\\;semicolon\\\\",
    "UID:fol\r\n ded",
    "UID:folded-after-blank-lines\r\n\r\n x",
    "UID:",
    "UID:first\r\nUID:second",
    "SUMMARY:no uid at all",
    "UID:\u00e9v\u00e9nement \u2603",
    'UID:quoted "value" : colon',
]


@pytest.mark.parametrize("line", UID_LINES)
def test_any_uid_line_groups_as_one_tree_does(line: str) -> None:
    alarm = "BEGIN:VALARM\r\nUID:alarm\r\nTRIGGER:-PT5M\r\nACTION:DISPLAY\r\nEND:VALARM"
    events = [
        f"{line}\r\nDTSTART:20260301T090000Z\r\nSUMMARY:a",
        "UID:plain\r\nDTSTART:20260302T090000Z\r\nRRULE:FREQ=DAILY;COUNT=3",
        f"{alarm}\r\n{line}\r\nDTSTART:20260303T090000Z",
        f"DTSTART:20260304T090000Z\r\n{alarm}",
        "UID:plain\r\nRECURRENCE-ID:20260303T090000Z\r\nDTSTART:20260303T120000Z",
    ]
    body = ics(*events)
    expected = one_tree(body, YEAR_2026)
    assert parse_ics(body, YEAR_2026) == expected
    assert parse_ics(body, YEAR_2026, cache=ParseCache()) == expected


def test_vtimezone_nested_in_an_event_is_read_as_one_tree_does() -> None:
    zone = (
        "BEGIN:VTIMEZONE\r\nTZID:Nested\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000"
        "\r\nTZOFFSETFROM:+0500\r\nTZOFFSETTO:+0500\r\nEND:STANDARD\r\nEND:VTIMEZONE"
    )
    body = ics(f"UID:n\r\nDTSTART;TZID=Nested:20260301T090000\r\n{zone}", "UID:m")
    expected = one_tree(body, YEAR_2026)
    assert expected.occurrences[0].start == datetime(2026, 3, 1, 4, tzinfo=UTC)
    assert parse_ics(body, YEAR_2026) == expected
    assert parse_ics(body, YEAR_2026, cache=ParseCache()) == expected


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    uids=st.lists(st.sampled_from(["a", "b", "c", "d", ""]), min_size=1, max_size=12),
    days=st.lists(st.integers(min_value=-400, max_value=400), min_size=12, max_size=12),
    limit=st.sampled_from([20_000, 5, 1]),
)
def test_uid_groups_in_any_order_parse_as_one_tree_does(
    uids: list[str], days: list[int], limit: int
) -> None:
    events = []
    for uid, day in zip(uids, days, strict=False):
        start = datetime(2026, 6, 1, 9, tzinfo=UTC) + timedelta(days=day)
        line = f"UID:{uid}\r\n" if uid else ""
        rule = "RRULE:FREQ=WEEKLY;COUNT=5\r\n" if day % 3 == 0 else ""
        events.append(f"{line}{rule}DTSTART:{start:%Y%m%dT%H%M%SZ}\r\nSUMMARY:{day}")
    body = ics(*events)
    expected = one_tree(body, YEAR_2026, limit=limit)
    assert parse_ics(body, YEAR_2026, max_occurrences=limit) == expected


# --- less memory ------------------------------------------------------------


def many_events(count: int) -> str:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        f"UID:event-{n}@example.com\nDTSTAMP:20260101T000000Z\n"
        f"DTSTART:{start + timedelta(hours=7 * n):%Y%m%dT%H%M%SZ}\nDURATION:PT30M\n"
        f"SUMMARY:Event {n}\nDESCRIPTION:Some words about event {n}"
        for n in range(count)
    ]
    return ics(*events)


def traced(function: object) -> tuple[int, int]:
    """Return (bytes still held after ``function()``, peak bytes while it ran)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = function()  # type: ignore[operator]
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return held - before, peak - before


@pytest.mark.filterwarnings("ignore")
def test_a_parse_holds_a_few_groups_components_at_a_time() -> None:
    body = many_events(3_000)  # 550 KB: as one tree, icalendar takes 20x that
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    _, peak = traced(lambda: parse_ics(body, window))
    _, tree_peak = traced(lambda: one_tree(body, window))
    assert peak * 3 < tree_peak


@pytest.mark.filterwarnings("ignore")
def test_a_parse_cache_holds_about_the_size_of_the_feed() -> None:
    body = many_events(3_000)
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    cache = ParseCache()
    held, _ = traced(lambda: parse_ics(body, window, cache=cache) and None)
    assert held < 3 * len(body)
    assert parse_ics(body, window, cache=cache) == parse_ics(body, window)
    assert cache.stats.events_read == 0
