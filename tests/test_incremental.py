"""ParseCache as a specification: same result as a whole parse, less reading."""

from __future__ import annotations

import gc
import random
import re
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from calsync import ParseCache, ValidationError, Window, parse_ics
from conftest import CORPUS, ics

YEAR_2026 = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
GOOGLE_EXPORT = CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"

SERIES = """
    UID:series
    DTSTART;TZID=Europe/Berlin:20260701T090000
    DTEND;TZID=Europe/Berlin:20260701T100000
    SUMMARY:Standup
    RRULE:FREQ=WEEKLY;COUNT=4
"""
OVERRIDE = """
    UID:series
    RECURRENCE-ID;TZID=Europe/Berlin:20260708T090000
    DTSTART;TZID=Europe/Berlin:20260708T140000
    DTEND;TZID=Europe/Berlin:20260708T150000
    SUMMARY:Standup (moved)
"""
LUNCH = "UID:lunch\nDTSTART:20260702T120000Z\nDURATION:PT1H\nSUMMARY:Lunch"
DINNER = "UID:dinner\nDTSTART:20260702T190000Z\nDURATION:PT2H\nSUMMARY:Dinner"
CUSTOM_ZONE = """
BEGIN:VTIMEZONE
TZID:Calsync Test Zone {offset}
BEGIN:STANDARD
DTSTART:19700101T000000
TZOFFSETFROM:{offset}
TZOFFSETTO:{offset}
END:STANDARD
END:VTIMEZONE
"""


def parse_both(
    body: str | bytes, window: Window = YEAR_2026, cache: ParseCache | None = None
) -> tuple[object, object]:
    """Parse through the cache and whole; return both results."""
    cached = parse_ics(body, window, cache=cache if cache is not None else ParseCache())
    return cached, parse_ics(body, window)


def warm(body: str, window: Window = YEAR_2026) -> ParseCache:
    cache = ParseCache()
    parse_ics(body, window, cache=cache)
    return cache


# --- reading less -----------------------------------------------------------


def test_unchanged_body_reads_no_event_again() -> None:
    body = ics(SERIES, OVERRIDE, LUNCH)
    cache = warm(body)
    parse_ics(body, YEAR_2026, cache=cache)
    assert cache.stats.events_read == 0
    assert cache.stats.groups_reused == 2


def test_edited_event_is_the_only_one_read_again() -> None:
    cache = warm(ics(SERIES, OVERRIDE, LUNCH, DINNER))
    brunch = LUNCH.replace("Lunch", "Brunch")
    parse_ics(ics(SERIES, OVERRIDE, brunch, DINNER), YEAR_2026, cache=cache)
    assert (cache.stats.events_read, cache.stats.groups_expanded) == (1, 1)


def test_edited_override_expands_its_whole_uid_group_again() -> None:
    cache = warm(ics(SERIES, OVERRIDE, LUNCH))
    edited = OVERRIDE.replace("(moved)", "(moved again)")
    parsed = parse_ics(ics(SERIES, edited, LUNCH), YEAR_2026, cache=cache)
    assert cache.stats.groups_expanded == 1
    assert "Standup (moved again)" in {o.summary for o in parsed.occurrences}


def test_reordered_uid_groups_are_not_read_again() -> None:
    cache = warm(ics(SERIES, OVERRIDE, LUNCH, DINNER))
    parse_ics(ics(DINNER, LUNCH, SERIES, OVERRIDE), YEAR_2026, cache=cache)
    assert (cache.stats.events_read, cache.stats.groups_expanded) == (0, 0)


def test_override_moved_before_its_master_reads_the_group_again() -> None:
    cache = warm(ics(SERIES, OVERRIDE, LUNCH))
    cached, whole = parse_both(ics(OVERRIDE, LUNCH, SERIES), cache=cache)
    assert (cache.stats.events_read, cache.stats.groups_expanded) == (2, 1)
    assert cached == whole


def test_cache_remembers_only_the_latest_body() -> None:
    cache = warm(ics(SERIES, OVERRIDE, LUNCH, DINNER))
    parse_ics(ics(LUNCH), YEAR_2026, cache=cache)
    assert len(cache) == 1


def test_cleared_cache_reads_every_event_again() -> None:
    body = ics(SERIES, OVERRIDE, LUNCH)
    cache = warm(body)
    cache.clear()
    parse_ics(body, YEAR_2026, cache=cache)
    assert cache.stats.events_read == 3


def test_cache_must_be_a_parse_cache() -> None:
    with pytest.raises(ValidationError, match="ParseCache"):
        parse_ics(ics(LUNCH), YEAR_2026, cache={})  # type: ignore[arg-type]


# --- what invalidates what --------------------------------------------------


def test_changed_vtimezone_rereads_every_event() -> None:
    # A zone name no other test uses: icalendar learns VTIMEZONEs process-wide.
    zone = CUSTOM_ZONE.format(offset="+0300")
    event = "UID:z\nDTSTART;TZID=Calsync Test Zone +0300:20260701T090000\nDURATION:PT1H"
    cache = warm(ics(event, LUNCH, header=zone))
    added = zone + CUSTOM_ZONE.format(offset="+0400")
    cached, whole = parse_both(ics(event, LUNCH, header=added), cache=cache)
    assert cache.stats.events_read == 2
    assert cached == whole


def test_changed_x_wr_timezone_expands_every_group_again() -> None:
    floating = "UID:f\nDTSTART:20260701T090000\nDURATION:PT1H"
    cache = warm(ics(floating, LUNCH, header="X-WR-TIMEZONE:Europe/Berlin"))
    body = ics(floating, LUNCH, header="X-WR-TIMEZONE:Asia/Tokyo")
    cached, whole = parse_both(body, cache=cache)
    assert cache.stats.groups_reused == 0
    assert cached == whole
    assert cached.occurrences[0].start == datetime(2026, 7, 1, 0, tzinfo=UTC)


def test_changed_default_zone_expands_every_group_again() -> None:
    body = ics("UID:f\nDTSTART:20260701T090000\nDURATION:PT1H", LUNCH)
    cache = warm(body)
    cached = parse_ics(body, YEAR_2026, default_tz="America/New_York", cache=cache)
    assert cache.stats.groups_reused == 0
    assert cached == parse_ics(body, YEAR_2026, default_tz="America/New_York")


def test_another_feeds_vtimezone_never_reaches_a_cached_feed() -> None:
    # icalendar learns VTIMEZONEs process-wide; calsync reads each feed's own.
    event = "UID:late\nDTSTART;TZID=Calsync Late Zone +0500:20260701T090000"
    body = ics(event, LUNCH)
    cache = warm(body)
    zone = CUSTOM_ZONE.format(offset="+0500").replace("Test", "Late")
    parse_ics(ics(LUNCH, header=zone), YEAR_2026)
    cached, whole = parse_both(body, cache=cache)
    assert cached == whole
    assert cached.occurrences[0].start == datetime(2026, 7, 1, 9, tzinfo=UTC)
    assert [p.what for p in cached.problems] == ["unknown TZID"]


# --- window slides ----------------------------------------------------------


def test_window_slide_adds_and_expires_occurrences_like_a_whole_parse() -> None:
    daily = "UID:daily\nDTSTART:20260101T090000Z\nDURATION:PT1H\nRRULE:FREQ=DAILY"
    body = ics(daily, LUNCH)
    week = Window(datetime(2026, 6, 28, tzinfo=UTC), datetime(2026, 7, 5, tzinfo=UTC))
    cache = warm(body, week)
    later = Window(week.start + timedelta(days=3), week.end + timedelta(days=3))
    cached, whole = parse_both(body, later, cache=cache)
    assert cached == whole
    assert cached.occurrences[-1].start == datetime(2026, 7, 7, 9, tzinfo=UTC)


def test_window_slide_reads_an_event_entering_the_window_again() -> None:
    august = "UID:aug\nDTSTART:20260810T090000Z\nDURATION:PT1H\nSUMMARY:August"
    body = ics(august, LUNCH)
    july = Window(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 31, tzinfo=UTC))
    cache = warm(body, july)
    later = Window(july.start + timedelta(days=30), july.end + timedelta(days=30))
    cached, whole = parse_both(body, later, cache=cache)
    assert cache.stats.events_read == 1
    assert [o.summary for o in cached.occurrences] == ["August"]
    assert cached == whole


def test_window_sliding_15_minutes_reads_nothing_again() -> None:
    # Expansions are kept for a week past the window's end, filtered to it.
    daily = "UID:daily\nDTSTART:20260101T090000Z\nDURATION:PT1H\nRRULE:FREQ=DAILY"
    body = ics(daily, SERIES, OVERRIDE, LUNCH)
    week = Window(datetime(2026, 6, 28, tzinfo=UTC), datetime(2026, 7, 5, tzinfo=UTC))
    cache = warm(body, week)
    for step in range(1, 8):
        later = Window(
            week.start + step * timedelta(minutes=15),
            week.end + step * timedelta(minutes=15),
        )
        cached, whole = parse_both(body, later, cache=cache)
        assert cached == whole
        assert (cache.stats.events_read, cache.stats.groups_expanded) == (0, 0)


# Events at the window's edges as it slides an hour at a time over two days
# around the spring DST change in Berlin (29 March 2026, 02:00 -> 03:00).
EDGES = [
    # Hourly in Berlin: instances start and end at every step of the slide.
    "UID:hourly\nDTSTART;TZID=Europe/Berlin:20260327T000000\n"
    "DTEND;TZID=Europe/Berlin:20260327T003000\nRRULE:FREQ=HOURLY;COUNT=200\n"
    "EXDATE;TZID=Europe/Berlin:20260329T040000,20260329T050000\nSUMMARY:Hourly",
    # An override moved from inside the window's start to past its end.
    "UID:hourly\nRECURRENCE-ID;TZID=Europe/Berlin:20260328T100000\n"
    "DTSTART;TZID=Europe/Berlin:20260402T100000\n"
    "DTEND;TZID=Europe/Berlin:20260402T110000\nSUMMARY:Hourly (moved)",
    # Daily over the DST change, a long instance crossing the window's start.
    "UID:daily-long\nDTSTART;TZID=Europe/Berlin:20260320T013000\n"
    "DTEND;TZID=Europe/Berlin:20260320T073000\nRRULE:FREQ=DAILY;UNTIL=20260410T000000Z"
    "\nEXDATE;TZID=Europe/Berlin:20260329T013000\nSUMMARY:Night shift",
    # All-day (read in the calendar's zone) and floating times.
    "UID:all-day\nDTSTART;VALUE=DATE:20260327\nRRULE:FREQ=DAILY;COUNT=10\n"
    "SUMMARY:All day",
    "UID:floating\nDTSTART:20260328T230000\nDTEND:20260329T030000\nSUMMARY:Night",
    # Zero-length, on the hour the window's edges pass over.
    "UID:instant\nDTSTART:20260328T120000Z\nSUMMARY:Instant",
    "UID:instants\nDTSTART:20260328T000000Z\nRRULE:FREQ=HOURLY;COUNT=80\nSUMMARY:Tick",
    # A single event spanning the whole slide, and one with a problem (an
    # unknown zone) that is kept for its exact window only.
    "UID:long\nDTSTART:20260301T000000Z\nDTEND:20260501T000000Z\nSUMMARY:Long",
    "UID:unknown-zone\nDTSTART;TZID=Nowhere/Else:20260328T120000\n"
    "DURATION:PT1H\nRRULE:FREQ=HOURLY;COUNT=48\nSUMMARY:Elsewhere",
]


@pytest.mark.parametrize("default_tz", ["UTC", "Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("width", [timedelta(hours=5), timedelta(days=2)])
def test_sliding_window_equals_a_whole_parse_at_every_step(
    default_tz: str, width: timedelta
) -> None:
    body = ics(*EDGES)
    start = datetime(2026, 3, 27, 18, 7, tzinfo=UTC)
    cache = ParseCache()
    for step in range(60):
        moment = start + step * timedelta(hours=1)
        window = Window(moment, moment + width)
        cached = parse_ics(body, window, default_tz=default_tz, cache=cache)
        assert cached == parse_ics(body, window, default_tz=default_tz), step
    assert cache.stats.groups_reused > 0


def test_window_moved_back_or_widened_equals_a_whole_parse() -> None:
    body = ics(*EDGES)
    base = Window(datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC))
    cache = warm(body, base)
    for window in (
        Window(base.start - timedelta(hours=3), base.end),
        Window(base.start, base.end + timedelta(days=30)),
        Window(base.start + timedelta(hours=1), base.end + timedelta(days=6)),
        base,
    ):
        cached, whole = parse_both(body, window, cache=cache)
        assert cached == whole


def test_dense_rules_over_the_calendar_budget_equal_a_whole_parse_as_it_slides() -> (
    None
):
    # Wider expansions spend more of the calendar's budget: a parse that would
    # find it short gives up and parses whole, never differs.
    dense = [
        f"UID:dense-{n}\nDTSTART:2000010{n % 9 + 1}T000000Z\nRRULE:FREQ=MINUTELY"
        for n in range(12)
    ]
    body = ics(*dense, LUNCH)
    cache = warm(body)
    for days in (0, 1, 2):
        window = Window(
            YEAR_2026.start + timedelta(days=days),
            YEAR_2026.end + timedelta(days=days),
        )
        cached, whole = parse_both(body, window, cache=cache)
        assert cached == whole


@pytest.mark.filterwarnings("ignore")
def test_google_export_re_synced_every_15_minutes_equals_a_whole_parse() -> None:
    text = GOOGLE_EXPORT.read_text(encoding="utf-8")
    now = datetime(2011, 1, 1, tzinfo=UTC)
    past, horizon = timedelta(days=366), timedelta(days=3650)
    cache = warm(text, Window(now - past, now + horizon))
    for step, share in enumerate((0.01, 0.0, 0.0), start=1):
        later = now + step * timedelta(minutes=15)
        if share:
            text = _edit_summaries(text, share=share, seed=step)
        cached, whole = parse_both(text, Window(later - past, later + horizon), cache)
        assert cached == whole
        # Only the edited events' groups are read and expanded again.
        assert cache.stats.events_read <= (50 if share else 0)
        assert cache.stats.groups_expanded <= (48 if share else 0)


# --- the same result as a whole parse ---------------------------------------


def test_moved_broken_event_is_reported_at_its_new_line() -> None:
    bad = "UID:bad-rule\nDTSTART:20260701T090000Z\nRRULE:FREQ=WEEKLY;UNTL=20261023"
    cache = warm(ics(bad, LUNCH, DINNER))
    body = ics(LUNCH, DINNER, bad)
    cached, whole = parse_both(body, cache=cache)
    assert cache.stats.events_read == 0
    assert cached == whole
    (problem,) = cached.problems
    assert problem.line == body.splitlines().index("UID:bad-rule") + 1


def test_structurally_broken_body_is_parsed_whole() -> None:
    unclosed = "SUMMARY:Lunch\r\nBEGIN:VALARM\r\nX"
    body = ics(LUNCH, DINNER).replace("SUMMARY:Lunch", unclosed)
    cache = warm(ics(LUNCH, DINNER))
    cached, whole = parse_both(body, cache=cache)
    assert cache.stats.whole
    assert cached == whole


def test_body_that_is_not_utf8_gives_the_same_problem_with_a_cache() -> None:
    latin = "UID:latin\nDTSTART:20260701T090000Z\nSUMMARY:Caf\u00e9"
    body = ics(latin).encode("cp1252")
    cached, whole = parse_both(body)
    assert cached == whole
    assert cached.problems[0].what == "body is not UTF-8"


def test_max_occurrences_keeps_the_earliest_across_cached_groups() -> None:
    first = "UID:a\nDTSTART:20260101T090000Z\nRRULE:FREQ=DAILY;COUNT=10"
    second = "UID:b\nDTSTART:20260101T100000Z\nRRULE:FREQ=DAILY;COUNT=10"
    cache = ParseCache()
    parse_ics(ics(first, second), YEAR_2026, max_occurrences=4, cache=cache)
    body = ics(second, first, LUNCH)
    cached = parse_ics(body, YEAR_2026, max_occurrences=4, cache=cache)
    assert cached == parse_ics(body, YEAR_2026, max_occurrences=4)
    assert cached.problems[-1].what == "too many occurrences"


def test_calendar_wide_budget_for_dense_rules_follows_the_new_order() -> None:
    # Each series may spend 40 % of the calendar's budget; later ones get less,
    # and most get none.
    dense = [
        f"UID:dense-{n}\nDTSTART:2000010{n % 9 + 1}T000000Z\nRRULE:FREQ=MINUTELY"
        for n in range(12)
    ]
    cache = warm(ics(*dense))
    reordered = [dense[11], *dense[:11]]
    cached, whole = parse_both(ics(*reordered), cache=cache)
    # An expansion is kept only when its series had all it could need left, so
    # the series cut short by the calendar's budget are read and expanded again.
    assert cache.stats.groups_reused == 1
    assert cache.stats.groups_expanded == 11
    assert cached == whole
    assert len({p.why for p in cached.problems}) > 2


@pytest.mark.filterwarnings("ignore")
def test_google_export_after_editing_one_percent_equals_a_whole_parse() -> None:
    text = GOOGLE_EXPORT.read_text(encoding="utf-8")
    year = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC))
    cache = warm(text, year)
    edited = _edit_summaries(text, share=0.01, seed=42)
    slid = Window(year.start + timedelta(days=1), year.end + timedelta(days=1))
    cached, whole = parse_both(edited, year, cache=cache)
    assert cached == whole
    assert 40 <= cache.stats.events_read <= 50
    # A slide expands again (and reads again) only the groups near the window
    # and the recurring ones: a tenth of them.
    cached, whole = parse_both(edited, slid, cache=cache)
    assert cached == whole
    assert cache.stats.events_read < 500
    assert cache.stats.groups_reused > 4_000


def _edit_summaries(text: str, *, share: float, seed: int) -> str:
    summaries = [m.start() for m in re.finditer(r"(?m)^SUMMARY:", text)]
    chosen = sorted(random.Random(seed).sample(summaries, int(len(summaries) * share)))
    for start in reversed(chosen):
        text = text[: start + 8] + "edited " + text[start + 8 :]
    return text


def test_a_caches_estimated_bytes_are_near_what_it_holds() -> None:
    """nbytes is what a memory budget counts: within a third of the truth."""
    body = (CORPUS / "recurring-ical-events/Germany_Holidays.ics").read_bytes()
    window = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    cache = ParseCache()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parse_ics(body, window, cache=cache)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held * 2 / 3 <= cache.nbytes <= held * 4 / 3
    cache.clear()
    assert cache.nbytes == 0
