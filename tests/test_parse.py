"""parse_ics as a specification: times, zones, recurrence, tolerance, limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from _hang import finishes
from calsync import Occurrence, ParseError, ValidationError, Window, parse_ics
from calsync.core import OccurrenceKey, TimezoneError
from conftest import ics

YEAR_2026 = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def starts(text: str, window: Window = YEAR_2026, **options: object) -> list[datetime]:
    return [o.start for o in parse_ics(text, window, **options).occurrences]  # type: ignore[arg-type]


def only(text: str, window: Window = YEAR_2026, **options: object) -> Occurrence:
    parsed = parse_ics(text, window, **options)  # type: ignore[arg-type]
    assert len(parsed.occurrences) == 1, parsed
    return parsed.occurrences[0]


# --- time zones and DST -----------------------------------------------------


def test_weekly_event_keeps_berlin_wall_time_across_spring_forward() -> None:
    feed = ics("""
        UID:berlin
        DTSTART;TZID=Europe/Berlin:20260322T093000
        DURATION:PT1H
        RRULE:FREQ=WEEKLY;COUNT=3
    """)
    parsed = parse_ics(feed, YEAR_2026)
    assert [o.start for o in parsed.occurrences] == [
        utc(2026, 3, 22, 8, 30),  # CET, +01:00
        utc(2026, 3, 29, 7, 30),  # CEST, +02:00, the day clocks jump
        utc(2026, 4, 5, 7, 30),
    ]
    assert [o.key.recurrence_id for o in parsed.occurrences] == [
        "20260322T083000Z",
        "20260329T073000Z",
        "20260405T073000Z",
    ]
    assert {o.tzid for o in parsed.occurrences} == {"Europe/Berlin"}


def test_weekly_event_keeps_new_york_wall_time_across_fall_back() -> None:
    feed = ics("""
        UID:nyc
        DTSTART;TZID=America/New_York:20261025T090000
        DTEND;TZID=America/New_York:20261025T100000
        RRULE:FREQ=WEEKLY;COUNT=3
    """)
    assert starts(feed) == [
        utc(2026, 10, 25, 13),  # EDT, -04:00
        utc(2026, 11, 1, 14),  # EST, -05:00, the day clocks fall back
        utc(2026, 11, 8, 14),
    ]


def test_sydney_southern_dst_ends_in_april() -> None:
    feed = ics("""
        UID:sydney
        DTSTART;TZID=Australia/Sydney:20260329T100000
        DURATION:PT30M
        RRULE:FREQ=WEEKLY;COUNT=2
    """)
    assert starts(feed) == [
        utc(2026, 3, 28, 23),  # AEDT, +11:00
        utc(2026, 4, 5, 0),  # AEST, +10:00 from 2026-04-05 03:00 local
    ]


def test_kolkata_half_hour_offset() -> None:
    feed = ics("""
        UID:kolkata
        DTSTART;TZID=Asia/Kolkata:20260101T093000
        DURATION:PT1H
    """)
    assert starts(feed) == [utc(2026, 1, 1, 4, 0)]


def test_lord_howe_half_hour_dst_shift() -> None:
    feed = ics("""
        UID:lordhowe
        DTSTART;TZID=Australia/Lord_Howe:20260404T090000
        DURATION:PT1H
        RRULE:FREQ=DAILY;COUNT=2
    """)
    assert starts(feed) == [
        utc(2026, 4, 3, 22, 0),  # +11:00
        utc(2026, 4, 4, 22, 30),  # +10:30 after 2026-04-05 02:00 -> 01:30
    ]


def test_instance_in_spring_forward_gap_uses_offset_before_the_gap() -> None:
    feed = ics("""
        UID:gap
        DTSTART;TZID=Europe/Berlin:20260322T023000
        DURATION:PT15M
        RRULE:FREQ=WEEKLY;COUNT=2
    """)
    # 02:30 does not exist on 2026-03-29; read with +01:00 it is 01:30 UTC.
    assert starts(feed) == [utc(2026, 3, 22, 1, 30), utc(2026, 3, 29, 1, 30)]


def test_floating_time_is_read_in_x_wr_timezone() -> None:
    feed = ics(
        "UID:f\nDTSTART:20260701T090000\nDURATION:PT1H",
        header="X-WR-TIMEZONE:Europe/Berlin",
    )
    parsed = parse_ics(feed, YEAR_2026, default_tz="America/New_York")
    assert parsed.timezone == "Europe/Berlin"
    assert [o.start for o in parsed.occurrences] == [utc(2026, 7, 1, 7)]


def test_floating_time_is_read_in_default_zone_without_x_wr_timezone() -> None:
    feed = ics("UID:f\nDTSTART:20260701T090000\nDURATION:PT1H")
    assert starts(feed, default_tz="America/New_York") == [utc(2026, 7, 1, 13)]
    assert starts(feed) == [utc(2026, 7, 1, 9)]


def test_explicit_tzid_wins_over_x_wr_timezone_and_default() -> None:
    feed = ics(
        "UID:t\nDTSTART;TZID=Asia/Tokyo:20260701T090000\nDURATION:PT1H",
        header="X-WR-TIMEZONE:Europe/Berlin",
    )
    assert starts(feed, default_tz="America/New_York") == [utc(2026, 7, 1, 0)]


def test_google_utc_series_follows_x_wr_timezone_wall_time() -> None:
    event = """
        UID:google
        DTSTART:20260322T083000Z
        DURATION:PT1H
        RRULE:FREQ=WEEKLY;COUNT=2
    """
    with_zone = ics(event, header="X-WR-TIMEZONE:Europe/Berlin")
    assert starts(with_zone) == [utc(2026, 3, 22, 8, 30), utc(2026, 3, 29, 7, 30)]
    assert starts(ics(event)) == [utc(2026, 3, 22, 8, 30), utc(2026, 3, 29, 8, 30)]


def test_floating_daily_series_keeps_local_wall_time_across_dst() -> None:
    feed = ics(
        "UID:d\nDTSTART:20260328T080000\nDURATION:PT1H\nRRULE:FREQ=DAILY;COUNT=2"
    )
    assert starts(feed, default_tz="Europe/Berlin") == [
        utc(2026, 3, 28, 7),
        utc(2026, 3, 29, 6),
    ]


def test_hour_duration_is_elapsed_time_across_spring_forward() -> None:
    feed = ics("UID:d\nDTSTART;TZID=Europe/Berlin:20260329T013000\nDURATION:PT2H")
    occurrence = only(feed)
    assert (occurrence.start, occurrence.end) == (
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 2, 30),
    )


def test_minute_duration_is_elapsed_time_across_fall_back() -> None:
    feed = ics("UID:d\nDTSTART;TZID=America/New_York:20261101T013000\nDURATION:PT30M")
    occurrence = only(feed)
    assert (occurrence.start, occurrence.end) == (
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6),
    )


def test_day_duration_is_nominal_across_spring_forward() -> None:
    feed = ics("UID:d\nDTSTART;TZID=Europe/Berlin:20260328T120000\nDURATION:P1D")
    occurrence = only(feed)
    assert occurrence.end - occurrence.start == timedelta(hours=23)
    assert occurrence.end == utc(2026, 3, 29, 10)


def test_dtend_series_keeps_exact_length_on_the_day_clocks_fall_back() -> None:
    feed = ics("""
        UID:late
        DTSTART;TZID=America/New_York:20261025T003000
        DTEND;TZID=America/New_York:20261025T023000
        RRULE:FREQ=WEEKLY;COUNT=2
    """)
    parsed = parse_ics(feed, YEAR_2026)
    assert [(o.start, o.end) for o in parsed.occurrences] == [
        (utc(2026, 10, 25, 4, 30), utc(2026, 10, 25, 6, 30)),
        (utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 6, 30)),
    ]


def test_floating_end_of_an_aware_start_is_read_in_the_calendar_zone() -> None:
    feed = ics("UID:mixed\nDTSTART:20260701T090000Z\nDTEND:20260701T120000")
    occurrence = only(feed, default_tz="Europe/Berlin")
    assert (occurrence.start, occurrence.end) == (
        utc(2026, 7, 1, 9),
        utc(2026, 7, 1, 10),
    )


def test_end_in_another_zone_than_the_start_is_exact() -> None:
    feed = ics("""
        UID:flight
        DTSTART;TZID=Europe/Berlin:20260329T010000
        DTEND;TZID=America/New_York:20260329T050000
        RRULE:FREQ=DAILY;COUNT=2
    """)
    parsed = parse_ics(feed, YEAR_2026)
    # 01:00 CET is 00:00 UTC; 05:00 EDT is 09:00 UTC: nine hours, every day.
    assert [(o.start, o.end) for o in parsed.occurrences] == [
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 9)),
        (utc(2026, 3, 29, 23), utc(2026, 3, 30, 8)),
    ]


def test_floating_times_name_the_zone_they_are_read_in() -> None:
    feed = ics("UID:f\nDTSTART:20260701T090000\nDURATION:PT1H")
    assert only(feed, default_tz="Europe/Berlin").tzid == "Europe/Berlin"
    assert only(feed).tzid is None


def test_windows_zone_name_is_mapped_to_iana() -> None:
    feed = ics(
        "UID:w\nDTSTART;TZID=W. Europe Standard Time:20260701T090000\nDURATION:PT1H"
    )
    occurrence = only(feed)
    assert occurrence.start == utc(2026, 7, 1, 7)
    assert occurrence.tzid == "Europe/Berlin"


def test_all_day_event_spans_local_midnights_of_the_calendar_zone() -> None:
    feed = ics("UID:a\nDTSTART;VALUE=DATE:20260701\nDTEND;VALUE=DATE:20260702")
    occurrence = only(feed, default_tz="Europe/Berlin")
    assert occurrence.all_day
    assert (occurrence.start, occurrence.end) == (
        utc(2026, 6, 30, 22),
        utc(2026, 7, 1, 22),
    )
    assert (occurrence.start_date, occurrence.end_date) == (
        date(2026, 7, 1),
        date(2026, 7, 2),
    )
    assert occurrence.key == OccurrenceKey("a", "")
    assert occurrence.tzid is None


def test_recurring_all_day_event_uses_date_recurrence_ids() -> None:
    feed = ics("UID:bday\nDTSTART;VALUE=DATE:20200315\nRRULE:FREQ=YEARLY")
    occurrence = only(feed)
    assert occurrence.key == OccurrenceKey("bday", "20260315")
    assert occurrence.start == utc(2026, 3, 15)
    assert occurrence.end == utc(2026, 3, 16)


def test_unknown_tzid_is_read_as_local_time_and_reported() -> None:
    feed = ics("UID:u\nDTSTART;TZID=Mars/Olympus:20260701T090000\nDURATION:PT1H")
    parsed = parse_ics(feed, YEAR_2026, default_tz="Europe/Berlin")
    assert [o.start for o in parsed.occurrences] == [utc(2026, 7, 1, 7)]
    assert [p.what for p in parsed.problems] == ["unknown TZID"]
    assert "Mars/Olympus" in parsed.problems[0].why


def test_unknown_x_wr_timezone_falls_back_to_default_zone_with_a_problem() -> None:
    feed = ics("UID:x\nDTSTART:20260701T090000", header="X-WR-TIMEZONE:Nowhere/Land")
    parsed = parse_ics(feed, YEAR_2026, default_tz="Europe/Berlin")
    assert [o.start for o in parsed.occurrences] == [utc(2026, 7, 1, 7)]
    assert parsed.problems[0].what == "unknown X-WR-TIMEZONE"


def test_unknown_x_wr_timezone_leaves_utc_series_anchored_in_utc() -> None:
    event = "UID:g\nDTSTART:20260322T083000Z\nDURATION:PT1H\nRRULE:FREQ=WEEKLY;COUNT=2"
    feed = ics(event, header="X-WR-TIMEZONE:Nowhere/Land")
    assert starts(feed, default_tz="Europe/Berlin") == [
        utc(2026, 3, 22, 8, 30),
        utc(2026, 3, 29, 8, 30),
    ]


def test_unusable_refresh_interval_is_reported() -> None:
    feed = ics("UID:c\nDTSTART:20260701T090000Z", header="X-PUBLISHED-TTL:soon")
    parsed = parse_ics(feed, YEAR_2026)
    assert parsed.refresh_interval is None
    assert [p.what for p in parsed.problems] == ["unreadable X-PUBLISHED-TTL"]


@pytest.mark.parametrize("name", ["Europe", "Europe/", "../etc/passwd", "zone1970.tab"])
def test_zone_names_that_are_not_zones_are_clear_errors(name: str) -> None:
    with pytest.raises(TimezoneError, match="unknown time zone"):
        parse_ics(ics(GOOD), YEAR_2026, default_tz=name)
    parsed = parse_ics(ics(GOOD, header=f"X-WR-TIMEZONE:{name}"), YEAR_2026)
    assert [p.what for p in parsed.problems] == ["unknown X-WR-TIMEZONE"]


def test_unknown_default_zone_is_a_clear_error() -> None:
    with pytest.raises(TimezoneError, match="Europe/Atlantis"):
        parse_ics(
            ics("UID:x\nDTSTART:20260701T090000"),
            YEAR_2026,
            default_tz="Europe/Atlantis",
        )


# --- recurrence -------------------------------------------------------------

SERIES = """
    UID:series
    DTSTART;TZID=Europe/Berlin:20260701T090000
    DTEND;TZID=Europe/Berlin:20260701T100000
    SUMMARY:Standup
    RRULE:FREQ=WEEKLY;COUNT=4
"""


def test_exdate_removes_an_instance() -> None:
    feed = ics(SERIES + "EXDATE;TZID=Europe/Berlin:20260708T090000")
    assert starts(feed) == [
        utc(2026, 7, 1, 7),
        utc(2026, 7, 15, 7),
        utc(2026, 7, 22, 7),
    ]


def test_rdate_period_adds_an_instance_with_its_own_length() -> None:
    feed = ics("""
        UID:p
        DTSTART;TZID=Europe/Berlin:20260701T090000
        DTEND;TZID=Europe/Berlin:20260701T100000
        RDATE;VALUE=PERIOD;TZID=Europe/Berlin:20260705T140000/PT3H
    """)
    parsed = parse_ics(feed, YEAR_2026)
    assert [(o.start, o.end) for o in parsed.occurrences] == [
        (utc(2026, 7, 1, 7), utc(2026, 7, 1, 8)),
        (utc(2026, 7, 5, 12), utc(2026, 7, 5, 15)),
    ]
    assert [o.key.recurrence_id for o in parsed.occurrences] == [
        "20260701T070000Z",
        "20260705T120000Z",
    ]


def test_moved_instance_keeps_its_original_recurrence_id() -> None:
    override = """
        UID:series
        RECURRENCE-ID;TZID=Europe/Berlin:20260708T090000
        DTSTART;TZID=Europe/Berlin:20260708T140000
        DTEND;TZID=Europe/Berlin:20260708T150000
        SUMMARY:Standup (moved)
        SEQUENCE:1
    """
    parsed = parse_ics(ics(SERIES, override), YEAR_2026)
    moved = [o for o in parsed.occurrences if o.key.recurrence_id == "20260708T070000Z"]
    assert len(moved) == 1
    assert moved[0].start == utc(2026, 7, 8, 12)
    assert moved[0].summary == "Standup (moved)"
    assert moved[0].sequence == 1
    assert len(parsed.occurrences) == 4


def test_cancelled_instance_is_dropped() -> None:
    cancelled = """
        UID:series
        RECURRENCE-ID;TZID=Europe/Berlin:20260708T090000
        DTSTART;TZID=Europe/Berlin:20260708T090000
        DTEND;TZID=Europe/Berlin:20260708T100000
        STATUS:CANCELLED
    """
    assert utc(2026, 7, 8, 7) not in starts(ics(SERIES, cancelled))
    assert len(starts(ics(SERIES, cancelled))) == 3


def test_cancelled_event_is_dropped() -> None:
    assert starts(ics(SERIES + "STATUS:CANCELLED")) == []


def test_this_and_future_override_moves_later_instances() -> None:
    override = """
        UID:series
        RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Berlin:20260715T090000
        DTSTART;TZID=Europe/Berlin:20260715T110000
        DTEND;TZID=Europe/Berlin:20260715T120000
        SUMMARY:Standup (later)
    """
    parsed = parse_ics(ics(SERIES, override), YEAR_2026)
    assert [(o.start, o.summary) for o in parsed.occurrences] == [
        (utc(2026, 7, 1, 7), "Standup"),
        (utc(2026, 7, 8, 7), "Standup"),
        (utc(2026, 7, 15, 9), "Standup (later)"),
        (utc(2026, 7, 22, 9), "Standup (later)"),
    ]
    assert [o.key.recurrence_id for o in parsed.occurrences] == [
        "20260701T070000Z",
        "20260708T070000Z",
        "20260715T070000Z",
        "20260722T070000Z",
    ]


def test_only_occurrences_overlapping_the_window_are_returned() -> None:
    window = Window(utc(2026, 7, 8, 8), utc(2026, 7, 22, 7))
    # 07-08 07:00-08:00 ends at the window start; 07-22 07:00 starts at its end.
    assert starts(ics(SERIES), window) == [utc(2026, 7, 15, 7)]


def test_window_edges_are_exact_for_floating_times_in_extreme_zones() -> None:
    feed = ics("UID:k\nDTSTART:20260702T010000\nDURATION:PT30M")
    window = Window(utc(2026, 7, 1, 11), utc(2026, 7, 1, 12))
    # 01:00 on 07-02 in Kiritimati (+14:00) is 11:00 UTC on 07-01.
    assert starts(feed, window, default_tz="Pacific/Kiritimati") == [
        utc(2026, 7, 1, 11)
    ]
    assert starts(feed, window, default_tz="UTC") == []


def test_event_alarms_become_leads() -> None:
    feed = ics("""
        UID:alarm
        DTSTART:20260701T090000Z
        DURATION:PT1H
        BEGIN:VALARM
        ACTION:DISPLAY
        TRIGGER:-PT15M
        END:VALARM
        BEGIN:VALARM
        ACTION:DISPLAY
        TRIGGER;RELATED=END:-PT90M
        END:VALARM
    """)
    assert set(only(feed).alarms) == {timedelta(minutes=15), timedelta(minutes=30)}


def test_absolute_alarm_of_a_single_event_becomes_a_lead() -> None:
    feed = ics("""
        UID:absolute
        DTSTART:20260701T090000Z
        DURATION:PT1H
        BEGIN:VALARM
        ACTION:DISPLAY
        TRIGGER;VALUE=DATE-TIME:20260630T090000Z
        END:VALARM
    """)
    assert only(feed).alarms == (timedelta(days=1),)


def test_absolute_alarm_of_a_series_is_not_repeated() -> None:
    feed = ics("""
        UID:absolute-series
        DTSTART:20260701T090000Z
        DURATION:PT1H
        RRULE:FREQ=DAILY;COUNT=2
        BEGIN:VALARM
        ACTION:DISPLAY
        TRIGGER;VALUE=DATE-TIME:20260630T090000Z
        END:VALARM
    """)
    assert {o.alarms for o in parse_ics(feed, YEAR_2026).occurrences} == {()}


# --- change detection inputs ------------------------------------------------


def test_content_hash_ignores_dtstamp_but_not_summary() -> None:
    base = "UID:h\nDTSTART:20260701T090000Z\nDURATION:PT1H\nSUMMARY:Lunch\n"
    first = only(ics(base + "DTSTAMP:20260101T000000Z"))
    restamped = only(ics(base + "DTSTAMP:20260601T120000Z"))
    renamed = only(ics(base.replace("Lunch", "Dinner") + "DTSTAMP:20260101T000000Z"))
    assert first.content_hash == restamped.content_hash
    assert first.content_hash != renamed.content_hash


def test_event_without_uid_gets_a_stable_stand_in_uid() -> None:
    feed = ics("DTSTART:20260701T090000Z\nSUMMARY:No UID")
    first, second = parse_ics(feed, YEAR_2026), parse_ics(feed, YEAR_2026)
    assert first.occurrences[0].key == second.occurrences[0].key
    assert first.occurrences[0].key.uid.startswith("calsync-no-uid-")
    assert first.problems[0].what == "event without UID"


def test_event_without_uid_and_with_unreadable_start_is_reported() -> None:
    parsed = parse_ics(ics(GOOD, "DTSTART:201308\nSUMMARY:Broken"), YEAR_2026)
    assert [o.key.uid for o in parsed.occurrences] == ["good"]
    assert {p.what for p in parsed.problems} == {"event without UID", "event skipped"}


def test_calendar_properties_are_read() -> None:
    feed = ics(
        "UID:c\nDTSTART:20260701T090000Z",
        header="X-WR-CALNAME:Team\nREFRESH-INTERVAL;VALUE=DURATION:PT1H",
    )
    parsed = parse_ics(feed, YEAR_2026)
    assert parsed.name == "Team"
    assert parsed.refresh_interval == timedelta(hours=1)
    assert parsed.timezone is None


def test_published_ttl_is_a_refresh_interval() -> None:
    feed = ics("UID:c\nDTSTART:20260701T090000Z", header="X-PUBLISHED-TTL:PT30M")
    assert parse_ics(feed, YEAR_2026).refresh_interval == timedelta(minutes=30)
    assert (
        parse_ics(ics("UID:c\nDTSTART:20260701T090000Z"), YEAR_2026).refresh_interval
        is None
    )


# --- tolerance --------------------------------------------------------------

GOOD = "UID:good\nDTSTART:20260701T090000Z\nDURATION:PT1H\nSUMMARY:Good"


def test_bad_rrule_sinks_only_its_own_event() -> None:
    bad = "UID:bad-rule\nDTSTART:20260701T090000Z\nRRULE:FREQ=WEEKLY;UNTL=20261023"
    feed = ics(GOOD, bad)
    parsed = parse_ics(feed, YEAR_2026)
    assert [o.key.uid for o in parsed.occurrences] == ["good"]
    (problem,) = parsed.problems
    assert problem.uid == "bad-rule"
    assert problem.line == feed.splitlines().index("UID:bad-rule") + 1
    assert "UNTL" in problem.why


def test_event_without_start_is_a_problem_naming_its_uid() -> None:
    parsed = parse_ics(ics(GOOD, "UID:no-start\nSUMMARY:When?"), YEAR_2026)
    assert [o.key.uid for o in parsed.occurrences] == ["good"]
    assert [(p.uid, p.what) for p in parsed.problems] == [("no-start", "event skipped")]
    assert "DTSTART" in parsed.problems[0].why


def test_broken_optional_property_keeps_the_event_and_is_reported() -> None:
    feed = ics(SERIES + "EXDATE:")
    parsed = parse_ics(feed, YEAR_2026)
    assert len(parsed.occurrences) == 4
    assert [(p.what, p.uid) for p in parsed.problems] == [
        ("unreadable EXDATE", "series")
    ]


def test_unparseable_start_is_a_problem_naming_its_uid() -> None:
    parsed = parse_ics(ics(GOOD, "UID:odd\nDTSTART:tomorrow-ish"), YEAR_2026)
    assert [o.key.uid for o in parsed.occurrences] == ["good"]
    assert [p.uid for p in parsed.problems] == ["odd"]


def test_structurally_broken_feed_keeps_its_good_events() -> None:
    feed = ics(GOOD, "UID:second\nDTSTART:20260702T090000Z\nSUMMARY:Second").replace(
        "SUMMARY:Good", "SUMMARY:Good\r\nBEGIN:VALARM\r\nX"
    )
    parsed = parse_ics(feed, YEAR_2026)
    assert [o.key.uid for o in parsed.occurrences] == ["second"]
    assert parsed.problems[0].what == "calendar structure is broken"
    assert any(p.uid == "good" and p.line is not None for p in parsed.problems)


def test_body_that_is_not_utf8_is_read_and_reported() -> None:
    feed = ics("UID:latin\nDTSTART:20260701T090000Z\nSUMMARY:Caf\u00e9").encode(
        "cp1252"
    )
    parsed = parse_ics(feed, YEAR_2026)
    assert parsed.occurrences[0].summary == "Caf\u00e9"
    assert parsed.problems[0].what == "body is not UTF-8"


def test_utf8_byte_order_mark_is_accepted() -> None:
    feed = "\ufeff" + ics(GOOD)
    assert len(parse_ics(feed.encode("utf-8"), YEAR_2026).occurrences) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"   \r\n", "empty"),
        (b"<!DOCTYPE html><html><body>Login</body></html>", "HTML"),
        (b'{"error": "not found"}', "JSON"),
        (b"Service Unavailable", "Service Unavailable"),
        (b"BEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n", "BEGIN:VEVENT"),
    ],
)
def test_body_that_is_not_icalendar_raises_parse_error(body: bytes, says: str) -> None:
    with pytest.raises(ParseError, match=says):
        parse_ics(body, YEAR_2026)


def test_window_must_be_a_window() -> None:
    with pytest.raises(ValidationError, match="Window"):
        parse_ics(ics(GOOD), (utc(2026, 1, 1), utc(2027, 1, 1)))  # type: ignore[arg-type]


# --- limits -----------------------------------------------------------------


def test_expansion_is_capped_at_max_occurrences_keeping_the_earliest() -> None:
    feed = ics("UID:daily\nDTSTART:20260101T090000Z\nDURATION:PT1H\nRRULE:FREQ=DAILY")
    parsed = parse_ics(feed, YEAR_2026, max_occurrences=5)
    assert [o.start for o in parsed.occurrences] == [
        utc(2026, 1, d, 9) for d in range(1, 6)
    ]
    assert [p.what for p in parsed.problems] == ["too many occurrences"]


def test_cap_counts_all_series_of_the_calendar() -> None:
    first = "UID:a\nDTSTART:20260101T090000Z\nRRULE:FREQ=DAILY;COUNT=10"
    second = "UID:b\nDTSTART:20260101T100000Z\nRRULE:FREQ=DAILY;COUNT=10"
    parsed = parse_ics(ics(first, second), YEAR_2026, max_occurrences=4)
    assert [(o.key.uid, o.start) for o in parsed.occurrences] == [
        ("a", utc(2026, 1, 1, 9)),
        ("b", utc(2026, 1, 1, 10)),
        ("a", utc(2026, 1, 2, 9)),
        ("b", utc(2026, 1, 2, 10)),
    ]


def test_secondly_rule_over_a_year_is_bounded_and_reported() -> None:
    feed = ics(GOOD, "UID:storm\nDTSTART:20260702T000000Z\nRRULE:FREQ=SECONDLY")
    parsed = finishes(lambda: parse_ics(feed, YEAR_2026))
    assert len(parsed.occurrences) <= 20_000
    assert "good" in {o.key.uid for o in parsed.occurrences}
    assert any(
        p.uid == "storm" and p.what == "recurrence too dense" for p in parsed.problems
    )
    assert "too many occurrences" in {p.what for p in parsed.problems}


def test_dense_rule_that_started_long_ago_is_skipped_not_hung() -> None:
    feed = ics("UID:old\nDTSTART:20000101T000000Z\nRRULE:FREQ=MINUTELY")
    parsed = finishes(lambda: parse_ics(feed, YEAR_2026))
    assert parsed.occurrences == ()
    assert [p.what for p in parsed.problems] == ["recurrence too dense"]


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL=0"),
        ("FREQ=SECONDLY;INTERVAL=-1;COUNT=10", "INTERVAL=-1"),
        ("FREQ=DAILY;BYWEEKNO=3", "BYWEEKNO must not be used with FREQ=DAILY"),
        ("FREQ=MONTHLY;BYYEARDAY=100", "BYYEARDAY must not be used"),
        ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "exclude every day"),
        ("FREQ=HOURLY;BYMONTH=6;BYYEARDAY=185", "exclude every day"),
        ("FREQ=HOURLY;BYMINUTE=25,25,40;BYSETPOS=3", "BYSETPOS=3"),
    ],
)
def test_rule_that_would_search_forever_is_refused(rule: str, says: str) -> None:
    feed = ics(GOOD, f"UID:forever\nDTSTART:20200101T000000Z\nRRULE:{rule}")
    parsed = finishes(lambda: parse_ics(feed, YEAR_2026))
    assert [o.key.uid for o in parsed.occurrences] == ["good"]
    (problem,) = parsed.problems
    assert problem.uid == "forever"
    assert problem.why.startswith("unusable RRULE")
    assert says in problem.why


def test_max_occurrences_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="max_occurrences"):
        parse_ics(ics(GOOD), YEAR_2026, max_occurrences=0)


@pytest.mark.parametrize(
    "rule",
    ["FREQ=MINUTELY;INTERVAL=2;COUNT=30", "FREQ=MINUTELY;UNTIL=20260302T100000Z"],
)
def test_a_short_dense_series_is_not_reported_as_capped(rule: str) -> None:
    body = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\n"
        "UID:dense\r\nDTSTART:20260302T090100Z\r\nDURATION:PT1M\r\n"
        f"RRULE:{rule}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    window = Window(now - timedelta(days=1), now + timedelta(days=90))
    parsed = parse_ics(body, window, max_occurrences=50 if "COUNT" in rule else 100)
    assert parsed.problems == ()
    assert len(parsed.occurrences) == (30 if "COUNT" in rule else 60)
