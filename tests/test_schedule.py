"""Schedule grammar and `next_after`, with DST instants computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calsync import Schedule, ValidationError
from calsync.core import ScheduleError, TimezoneError


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- each form --------------------------------------------------------------


def test_every_minutes_fires_one_interval_after_t() -> None:
    schedule = Schedule.parse("every 15m")
    assert schedule.next_after(utc(2026, 1, 15, 10, 7, 30)) == utc(
        2026, 1, 15, 10, 22, 30
    )


@pytest.mark.parametrize(
    ("text", "elapsed"),
    [
        ("every 30s", timedelta(seconds=30)),
        ("every 15m", timedelta(minutes=15)),
        ("every 2h", timedelta(hours=2)),
        ("every 1d", timedelta(days=1)),
    ],
)
def test_every_unit_sets_the_interval(text: str, elapsed: timedelta) -> None:
    t = utc(2026, 1, 15, 10, 0)
    assert Schedule.parse(text, "Europe/Berlin").next_after(t) == t + elapsed


def test_cron_step_fires_on_next_matching_minute() -> None:
    schedule = Schedule.parse("cron */5 * * * *")
    assert schedule.next_after(utc(2026, 1, 15, 10, 2)) == utc(2026, 1, 15, 10, 5)


def test_cron_is_evaluated_in_the_schedule_zone() -> None:
    schedule = Schedule.parse("cron 0 9 * * mon-fri", "Europe/Berlin")
    # Friday 2026-01-16 09:00 CET has passed; Monday 2026-01-19 09:00 CET.
    assert schedule.next_after(utc(2026, 1, 16, 8, 0)) == utc(2026, 1, 19, 8, 0)


def test_daily_fires_at_local_wall_time() -> None:
    schedule = Schedule.parse("daily 07:30", "Europe/Berlin")
    assert schedule.next_after(utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 15, 6, 30)


def test_daily_at_exactly_t_fires_the_next_day() -> None:
    schedule = Schedule.parse("daily 07:30", "Europe/Berlin")
    assert schedule.next_after(utc(2026, 1, 15, 6, 30)) == utc(2026, 1, 16, 6, 30)


def test_weekdays_skip_the_weekend() -> None:
    schedule = Schedule.parse("weekdays 08:00", "Europe/Berlin")
    # Friday 2026-01-16 after 08:00 CET -> Monday 2026-01-19 08:00 CET.
    assert schedule.next_after(utc(2026, 1, 16, 7, 30)) == utc(2026, 1, 19, 7, 0)


def test_weekdays_crossing_spring_forward_use_the_new_offset() -> None:
    schedule = Schedule.parse("weekdays 08:00", "Europe/Berlin")
    # Friday 2026-03-27 09:00 CET -> Monday 2026-03-30 08:00 CEST.
    assert schedule.next_after(utc(2026, 3, 27, 8, 0)) == utc(2026, 3, 30, 6, 0)


def test_weekly_fires_on_the_next_listed_weekday() -> None:
    schedule = Schedule.parse("weekly mon,thu 18:00", "Europe/Berlin")
    # Thursday 2026-01-15 18:00 CET is t itself, so Monday 2026-01-19.
    assert schedule.next_after(utc(2026, 1, 15, 17, 0)) == utc(2026, 1, 19, 17, 0)


def test_weekly_single_day_waits_a_full_week() -> None:
    schedule = Schedule.parse("weekly sun 09:00", "UTC")
    # Sunday 2026-01-18 09:00 has just passed.
    assert schedule.next_after(utc(2026, 1, 18, 9, 1)) == utc(2026, 1, 25, 9, 0)


def test_weekly_accepts_full_names_any_case_and_duplicates() -> None:
    schedule = Schedule.parse("  WEEKLY  Thursday, mon,thu   18:00 ", "UTC")
    assert schedule.text == "weekly mon,thu 18:00"


def test_half_hour_zone_offsets_the_wall_time() -> None:
    schedule = Schedule.parse("daily 07:30", "Asia/Kolkata")
    assert schedule.next_after(utc(2026, 6, 1, 0, 0)) == utc(2026, 6, 1, 2, 0)


def test_cron_in_half_hour_zone_offsets_the_wall_time() -> None:
    schedule = Schedule.parse("cron 0 9 * * *", "Asia/Kolkata")
    assert schedule.next_after(utc(2026, 6, 1, 0, 0)) == utc(2026, 6, 1, 3, 30)


# --- text, zone, equality ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("every 15m", "every 15m"),
        ("  EVERY   15 M ", "every 15m"),
        ("cron */5 * * * *", "cron */5 * * * *"),
        ("Cron  0 9 * *   MON-FRI", "cron 0 9 * * mon-fri"),
        ("daily 7:30", "daily 07:30"),
        ("Weekdays 08:00", "weekdays 08:00"),
        ("weekly thu,mon 18:00", "weekly mon,thu 18:00"),
    ],
)
def test_text_is_normalized(text: str, normalized: str) -> None:
    schedule = Schedule.parse(text)
    assert schedule.text == normalized
    assert str(schedule) == normalized


def test_zone_name_is_kept() -> None:
    assert Schedule.parse("daily 07:30", "Europe/Berlin").zone == "Europe/Berlin"


def test_zone_defaults_to_utc() -> None:
    assert Schedule.parse("daily 07:30").zone == "UTC"


def test_zone_may_be_a_tzinfo() -> None:
    by_object = Schedule.parse("daily 07:30", ZoneInfo("Europe/Berlin"))
    assert by_object == Schedule.parse("daily 07:30", "Europe/Berlin")


def test_fixed_offset_tzinfo_is_accepted() -> None:
    schedule = Schedule.parse("daily 07:30", timezone(timedelta(hours=5, minutes=30)))
    assert schedule.next_after(utc(2026, 6, 1, 0, 0)) == utc(2026, 6, 1, 2, 0)


def test_result_is_aware_utc_for_non_utc_input() -> None:
    berlin_t = datetime(2026, 1, 15, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    result = Schedule.parse("daily 07:30", "Europe/Berlin").next_after(berlin_t)
    assert result.tzinfo is UTC
    assert result == utc(2026, 1, 16, 6, 30)


# --- DST: Europe/Berlin (2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) ---

DAILY_0230 = ["daily 02:30", "cron 30 2 * * *"]


@pytest.mark.parametrize("text", DAILY_0230)
def test_berlin_nonexistent_time_uses_offset_before_gap(text: str) -> None:
    schedule = Schedule.parse(text, "Europe/Berlin")
    # 02:30 read as CET (+01:00) = 01:30 UTC = 03:30 CEST.
    assert schedule.next_after(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 30)


@pytest.mark.parametrize("text", DAILY_0230)
def test_berlin_nonexistent_time_fires_once_that_day(text: str) -> None:
    schedule = Schedule.parse(text, "Europe/Berlin")
    # Next is 2026-03-30 02:30 CEST.
    assert schedule.next_after(utc(2026, 3, 29, 1, 30)) == utc(2026, 3, 30, 0, 30)


@pytest.mark.parametrize("text", DAILY_0230)
def test_berlin_gap_time_is_found_from_a_wall_time_past_it(text: str) -> None:
    schedule = Schedule.parse(text, "Europe/Berlin")
    # t = 03:10 CEST, later on the wall than 02:30 but before its 01:30 UTC.
    assert schedule.next_after(utc(2026, 3, 29, 1, 10)) == utc(2026, 3, 29, 1, 30)


@pytest.mark.parametrize("text", DAILY_0230)
def test_berlin_repeated_time_fires_at_the_first(text: str) -> None:
    schedule = Schedule.parse(text, "Europe/Berlin")
    # First 02:30 is CEST (+02:00) = 00:30 UTC.
    assert schedule.next_after(utc(2026, 10, 24, 12, 0)) == utc(2026, 10, 25, 0, 30)


@pytest.mark.parametrize("text", DAILY_0230)
def test_berlin_repeated_time_does_not_fire_again(text: str) -> None:
    schedule = Schedule.parse(text, "Europe/Berlin")
    # Not 01:30 UTC (02:30 CET, the repeat) but 2026-10-26 02:30 CET.
    assert schedule.next_after(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize("text", DAILY_0230)
def test_berlin_inside_the_repeated_hour_waits_for_the_next_day(text: str) -> None:
    schedule = Schedule.parse(text, "Europe/Berlin")
    # t = 02:10 CET (the second pass); today's 02:30 already fired as CEST.
    assert schedule.next_after(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_every_hour_across_spring_forward_is_3600_seconds() -> None:
    schedule = Schedule.parse("every 1h", "Europe/Berlin")
    t = utc(2026, 3, 29, 0, 30)  # 01:30 CET
    result = schedule.next_after(t)
    assert (result - t).total_seconds() == 3600
    assert result == utc(2026, 3, 29, 1, 30)  # 03:30 CEST


def test_every_hour_across_fall_back_is_3600_seconds() -> None:
    schedule = Schedule.parse("every 1h", "Europe/Berlin")
    t = utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    result = schedule.next_after(t)
    assert (result - t).total_seconds() == 3600
    assert result == utc(2026, 10, 25, 1, 30)  # 02:30 CET


def test_every_day_across_spring_forward_is_24_elapsed_hours() -> None:
    schedule = Schedule.parse("every 1d", "Europe/Berlin")
    # 12:00 CET -> 13:00 CEST on the wall, 24 h elapsed.
    assert schedule.next_after(utc(2026, 3, 28, 11, 0)) == utc(2026, 3, 29, 11, 0)


def test_cron_every_minute_skips_the_gap_without_duplicates() -> None:
    schedule = Schedule.parse("cron */20 * * * *", "Europe/Berlin")
    t = utc(2026, 3, 29, 0, 30)
    runs = []
    for _ in range(5):
        t = schedule.next_after(t)
        runs.append(t)
    assert runs == [
        utc(2026, 3, 29, 0, 40),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 20),
        utc(2026, 3, 29, 1, 40),
        utc(2026, 3, 29, 2, 0),
    ]


def test_cron_every_minute_skips_the_second_pass_of_repeated_hour() -> None:
    schedule = Schedule.parse("cron */20 * * * *", "Europe/Berlin")
    # 02:40 CEST fired at 00:40 UTC; 02:00..02:40 CET repeat; next 03:00 CET.
    assert schedule.next_after(utc(2026, 10, 25, 0, 40)) == utc(2026, 10, 25, 2, 0)


# --- DST: America/New_York (2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00) ---


def test_new_york_nonexistent_time_uses_offset_before_gap() -> None:
    schedule = Schedule.parse("daily 02:30", "America/New_York")
    # 02:30 read as EST (-05:00) = 07:30 UTC = 03:30 EDT.
    assert schedule.next_after(utc(2026, 3, 7, 12, 0)) == utc(2026, 3, 8, 7, 30)
    assert schedule.next_after(utc(2026, 3, 8, 7, 30)) == utc(2026, 3, 9, 6, 30)


def test_new_york_repeated_time_fires_once_at_the_first() -> None:
    schedule = Schedule.parse("cron 30 1 * * *", "America/New_York")
    # First 01:30 is EDT (-04:00) = 05:30 UTC; next is 2026-11-02 01:30 EST.
    assert schedule.next_after(utc(2026, 10, 31, 12, 0)) == utc(2026, 11, 1, 5, 30)
    assert schedule.next_after(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 2, 6, 30)


# --- DST: Australia/Sydney (2026-04-05 03:00 -> 02:00, 2026-10-04 02:00 -> 03:00) ---


@pytest.mark.parametrize("text", DAILY_0230)
def test_sydney_repeated_time_fires_once_at_the_first(text: str) -> None:
    schedule = Schedule.parse(text, "Australia/Sydney")
    # First 02:30 is AEDT (+11:00) = 2026-04-04 15:30 UTC; then 04-06 02:30 AEST.
    assert schedule.next_after(utc(2026, 4, 4, 0, 0)) == utc(2026, 4, 4, 15, 30)
    assert schedule.next_after(utc(2026, 4, 4, 15, 30)) == utc(2026, 4, 5, 16, 30)


@pytest.mark.parametrize("text", DAILY_0230)
def test_sydney_nonexistent_time_uses_offset_before_gap(text: str) -> None:
    schedule = Schedule.parse(text, "Australia/Sydney")
    # 02:30 read as AEST (+10:00) = 2026-10-03 16:30 UTC = 03:30 AEDT.
    assert schedule.next_after(utc(2026, 10, 3, 0, 0)) == utc(2026, 10, 3, 16, 30)
    assert schedule.next_after(utc(2026, 10, 3, 16, 30)) == utc(2026, 10, 4, 15, 30)


# --- DST: Australia/Lord_Howe, a 30-minute shift ---------------------------
# +11:00 -> +10:30 at 2026-04-05 02:00 (back to 01:30),
# +10:30 -> +11:00 at 2026-10-04 02:00 (forward to 02:30).


def test_lord_howe_transitions_are_where_the_tests_assume() -> None:
    zone = ZoneInfo("Australia/Lord_Howe")
    assert utc(2026, 4, 4, 14, 59).astimezone(zone).utcoffset() == timedelta(hours=11)
    assert utc(2026, 4, 4, 15, 0).astimezone(zone).strftime("%H:%M%z") == "01:30+1030"
    assert utc(2026, 10, 3, 15, 29).astimezone(zone).strftime("%H:%M") == "01:59"
    assert utc(2026, 10, 3, 15, 30).astimezone(zone).strftime("%H:%M%z") == "02:30+1100"


@pytest.mark.parametrize("text", ["daily 01:45", "cron 45 1 * * *"])
def test_lord_howe_repeated_half_hour_fires_once_at_the_first(text: str) -> None:
    schedule = Schedule.parse(text, "Australia/Lord_Howe")
    # First 01:45 is +11:00 = 2026-04-04 14:45 UTC; then 04-06 01:45 +10:30.
    assert schedule.next_after(utc(2026, 4, 4, 0, 0)) == utc(2026, 4, 4, 14, 45)
    assert schedule.next_after(utc(2026, 4, 4, 14, 45)) == utc(2026, 4, 5, 15, 15)


@pytest.mark.parametrize("text", ["daily 02:15", "cron 15 2 * * *"])
def test_lord_howe_nonexistent_time_uses_offset_before_gap(text: str) -> None:
    schedule = Schedule.parse(text, "Australia/Lord_Howe")
    # 02:15 read as +10:30 = 2026-10-03 15:45 UTC = 02:45 +11:00.
    assert schedule.next_after(utc(2026, 10, 3, 0, 0)) == utc(2026, 10, 3, 15, 45)
    assert schedule.next_after(utc(2026, 10, 3, 15, 45)) == utc(2026, 10, 4, 15, 15)


def test_lord_howe_cron_fires_in_instant_order_around_the_gap() -> None:
    schedule = Schedule.parse("cron 20,40 2 * * *", "Australia/Lord_Howe")
    # 02:40 (+11:00) = 15:40 UTC comes before 02:20 in the gap (+10:30) = 15:50.
    t = utc(2026, 10, 3, 15, 0)
    runs = []
    for _ in range(3):
        t = schedule.next_after(t)
        runs.append(t)
    assert runs == [
        utc(2026, 10, 3, 15, 40),
        utc(2026, 10, 3, 15, 50),
        utc(2026, 10, 4, 15, 20),
    ]


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty schedule"),
        ("   ", "empty schedule"),
        ("hourly", "unknown keyword 'hourly'"),
        ("at 07:30", "expected one of"),
        ("every", "bad interval ''"),
        ("every 0m", "interval must be positive"),
        ("every -5m", "interval must be positive"),
        ("every m", "missing number"),
        ("every 15", "missing unit"),
        ("every 15x", "unknown interval unit 'x'"),
        ("every 1.5h", "bad interval '1.5h'"),
        ("every 15m 30s", "bad interval"),
        ("cron", "exactly 5 fields"),
        ("cron * * * *", "exactly 5 fields"),
        ("cron 0 * * * * *", "exactly 5 fields"),
        ("cron 61 * * * *", "Bad minute"),
        ("cron * 24 * * *", "Bad hour"),
        ("cron 0 0 32 * *", "Bad day-of-month"),
        ("cron 0 0 * 13 *", "Bad month"),
        ("cron 0 0 * * 8", "Bad day-of-week"),
        ("cron 0 0 * * funday", "Bad day-of-week"),
        ("cron * * */20 * 1L", "never matches"),
        ("daily", "needs exactly one time"),
        ("daily 07:30 08:00", "needs exactly one time"),
        ("daily 24:00", "hour 24"),
        ("daily 7:60", "minute 60"),
        ("daily 7.30", "bad time '7.30'"),
        ("daily 0730", "bad time '0730'"),
        ("daily 7:5", "bad time '7:5'"),
        ("weekdays 25:00", "hour 25"),
        ("weekdays", "needs exactly one time"),
        ("weekly 18:00", "needs weekdays and a time"),
        ("weekly mon,thu", "needs weekdays and a time"),
        ("weekly mon,funday 18:00", "unknown weekday 'funday'"),
        ("weekly mo 18:00", "unknown weekday 'mo'"),
        ("weekly mon 18h", "bad time '18h'"),
    ],
)
def test_bad_text_raises_schedule_error_naming_the_problem(
    text: str, problem: str
) -> None:
    with pytest.raises(ScheduleError, match=problem) as raised:
        Schedule.parse(text, "UTC")
    assert isinstance(raised.value, ValueError)


def test_unknown_keyword_lists_the_accepted_forms() -> None:
    with pytest.raises(ScheduleError) as raised:
        Schedule.parse("hourly")
    message = str(raised.value)
    for form in ("every 15m", "cron", "daily 07:30", "weekdays", "weekly mon,thu"):
        assert form in message


def test_cron_error_chains_cronsim_error() -> None:
    with pytest.raises(ScheduleError) as raised:
        Schedule.parse("cron 61 * * * *")
    assert type(raised.value.__cause__).__name__ == "CronSimError"


def test_non_text_schedule_raises_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="must be text"):
        Schedule.parse(None)  # type: ignore[arg-type]


def test_unknown_zone_raises_timezone_error() -> None:
    with pytest.raises(TimezoneError, match="Mars/Olympus_Mons"):
        Schedule.parse("daily 07:30", "Mars/Olympus_Mons")


def test_naive_datetime_raises_validation_error() -> None:
    schedule = Schedule.parse("daily 07:30", "Europe/Berlin")
    with pytest.raises(ValidationError, match="naive"):
        schedule.next_after(datetime(2026, 1, 15, 7, 0))  # noqa: DTZ001


# --- properties ---------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
]
WEEKDAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TRANSITIONS = [
    utc(2026, 3, 29, 1, 0),
    utc(2026, 10, 25, 1, 0),
    utc(2026, 3, 8, 7, 0),
    utc(2026, 11, 1, 6, 0),
    utc(2026, 4, 4, 16, 0),
    utc(2026, 10, 3, 16, 0),
    utc(2026, 4, 4, 15, 0),
    utc(2026, 10, 3, 15, 30),
]

# Starts anywhere in 2020-2035, or within a day of a 2026 DST change.
starts = st.one_of(
    st.datetimes(
        min_value=datetime(2020, 1, 1),  # noqa: DTZ001
        max_value=datetime(2035, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.builds(
        lambda transition, seconds: transition + timedelta(seconds=seconds),
        st.sampled_from(TRANSITIONS),
        st.integers(min_value=-86_400, max_value=86_400),
    ),
)
# Wall times bunched around the hours DST changes touch.
wall_times = st.builds(
    time,
    st.one_of(st.sampled_from([0, 1, 2, 3, 23]), st.integers(0, 23)),
    st.one_of(st.sampled_from([0, 15, 30, 45]), st.integers(0, 59)),
)
weekday_sets = st.frozensets(st.integers(0, 6), min_size=1)


@st.composite
def fixed_time_schedules(draw: st.DrawFn) -> tuple[str, time, frozenset[int]]:
    """A daily/weekdays/weekly/cron text at one wall time, with its weekdays."""
    at = draw(wall_times)
    days = draw(weekday_sets)
    cron_days = ",".join(str((day + 1) % 7) for day in sorted(days))
    day_names = ",".join(WEEKDAY_NAMES[day] for day in sorted(days))
    return draw(
        st.sampled_from(
            [
                (f"daily {at:%H:%M}", at, frozenset(range(7))),
                (f"weekdays {at:%H:%M}", at, frozenset(range(5))),
                (f"weekly {day_names} {at:%H:%M}", at, days),
                (f"cron {at.minute} {at.hour} * * *", at, frozenset(range(7))),
                (f"cron {at.minute} {at.hour} * * {cron_days}", at, days),
            ]
        )
    )


calendar_schedule_text = st.one_of(
    fixed_time_schedules().map(lambda parsed: parsed[0]),
    st.sampled_from(
        [
            "cron */5 * * * *",
            "cron */20 * * * *",
            "cron 20,40 2 * * *",
            "cron 10,50 1,2 * * *",
            "cron 0,30 1-3 * * *",
            "cron 15 */2 * * sat,sun",
            "cron 0 0 1 * *",
        ]
    ),
)
any_schedule_text = st.one_of(
    calendar_schedule_text,
    st.builds(
        "every {}{}".format,
        st.integers(1, 500),
        st.sampled_from(["s", "m", "h", "d"]),
    ),
)


@settings(deadline=None, max_examples=200)
@given(text=any_schedule_text, zone=st.sampled_from(ZONES), start=starts)
def test_next_after_is_strictly_increasing(
    text: str, zone: str, start: datetime
) -> None:
    schedule = Schedule.parse(text, zone)
    previous = start
    for _ in range(12):
        result = schedule.next_after(previous)
        assert result.tzinfo is UTC
        assert result > previous
        previous = result


def wall_time_exists(day: date, at: time, zone: ZoneInfo) -> bool:
    wall = datetime.combine(day, at, tzinfo=zone)
    return wall.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == (
        wall.replace(tzinfo=None)
    )


@settings(deadline=None, max_examples=300)
@given(
    parsed=fixed_time_schedules(),
    zone_name=st.sampled_from(ZONES),
    start=starts,
)
def test_fixed_time_lands_on_requested_wall_time_and_weekday(
    parsed: tuple[str, time, frozenset[int]], zone_name: str, start: datetime
) -> None:
    text, at, weekdays = parsed
    zone = ZoneInfo(zone_name)
    result = Schedule.parse(text, zone_name).next_after(start)
    local = result.astimezone(zone)
    assert local.weekday() in weekdays
    # The fold=0 reading of the requested wall time on the day it fired.
    assert result == datetime.combine(local.date(), at, tzinfo=zone).astimezone(UTC)
    if wall_time_exists(local.date(), at, zone):
        assert local.time() == at
        assert local.fold == 0


@settings(deadline=None, max_examples=300)
@given(
    at=wall_times,
    days=weekday_sets,
    zone=st.sampled_from(ZONES),
    start=starts,
)
def test_cron_at_fixed_time_agrees_with_weekly(
    at: time, days: frozenset[int], zone: str, start: datetime
) -> None:
    names = ",".join(WEEKDAY_NAMES[day] for day in sorted(days))
    cron_days = ",".join(str((day + 1) % 7) for day in sorted(days))
    weekly = Schedule.parse(f"weekly {names} {at:%H:%M}", zone)
    cron = Schedule.parse(f"cron {at.minute} {at.hour} * * {cron_days}", zone)
    assert cron.next_after(start) == weekly.next_after(start)


@settings(deadline=None, max_examples=200)
@given(text=calendar_schedule_text, zone=st.sampled_from(ZONES), start=starts)
def test_no_calendar_run_is_skipped_between_t_and_next(
    text: str, zone: str, start: datetime
) -> None:
    schedule = Schedule.parse(text, zone)
    result = schedule.next_after(start)
    # Asking from any instant in between gives the same run.
    midpoint = start + (result - start) / 2
    assert schedule.next_after(midpoint) == result
    assert schedule.next_after(result - timedelta(microseconds=1)) == result
