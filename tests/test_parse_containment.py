"""parse_ics contains a feed (DESIGN §6): unreadable events stay known, bounded work."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from _hang import finishes
from calsync import ParseCache, ParseError, ValidationError, Window, parse_ics
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


# --- VTIMEZONEs: bounded, and each feed's own -------------------------------


def zone_block(tzid: str, *parts: str) -> str:
    return "\n".join(["BEGIN:VTIMEZONE", f"TZID:{tzid}", *parts, "END:VTIMEZONE"])


def zone_part(
    kind: str, offset: str, rule: str = "", start: str = "19700101T000000"
) -> str:
    lines = [f"BEGIN:{kind}", f"DTSTART:{start}", f"TZOFFSETFROM:{offset}"]
    lines += [f"TZOFFSETTO:{offset}"] + ([f"RRULE:{rule}"] if rule else [])
    return "\n".join([*lines, f"END:{kind}"])


def fixed_zone(tzid: str, offset: str) -> str:
    return zone_block(tzid, zone_part("STANDARD", offset))


def meeting(tzid: str) -> str:
    return f"UID:meeting\nDTSTART;TZID={tzid}:20260701T090000\nDURATION:PT1H"


HOSTILE_RULES = [
    "FREQ=SECONDLY",
    "FREQ=MINUTELY;INTERVAL=0",
    "FREQ=YEARLY;BYSECOND=60",
    "FREQ=HOURLY",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
]


@pytest.mark.parametrize("rule", HOSTILE_RULES)
@pytest.mark.parametrize("cached", [False, True], ids=["whole", "cached"])
def test_hostile_vtimezone_rule_is_refused_with_a_problem(
    rule: str, cached: bool
) -> None:
    zone = zone_block(
        "Hostile Zone",
        zone_part("STANDARD", "+0100", rule),
        zone_part("DAYLIGHT", "+0200", "FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU"),
    )
    feed = ics(meeting("Hostile Zone"), header=zone)
    parsed = finishes(
        lambda: parse_ics(feed, YEAR_2026, cache=ParseCache() if cached else None)
    )
    refused = [p for p in parsed.problems if p.what == "time zone skipped"]
    (only,) = refused
    assert "'Hostile Zone'" in only.why
    # The documented fallback: an unknown TZID is read in the calendar's zone.
    assert [o.start for o in parsed.occurrences] == [
        datetime(2026, 7, 1, 9, tzinfo=UTC)
    ]


def test_vtimezone_with_a_thousand_yearly_parts_is_refused() -> None:
    parts = [
        zone_part(
            "STANDARD", "+0100", "FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", "16010101T030000"
        )
        for _ in range(1_000)
    ]
    feed = ics(meeting("Many Rules"), header=zone_block("Many Rules", *parts))
    parsed = parse_ics(feed, YEAR_2026)
    (refused,) = [p for p in parsed.problems if p.what == "time zone skipped"]
    assert "units of work" in refused.why


def test_outlook_vtimezone_from_1601_is_read_like_dateutil() -> None:
    zone = zone_block(
        "Outlook Berlin",
        zone_part(
            "STANDARD", "+0100", "FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", "16010101T030000"
        ),
        zone_part(
            "DAYLIGHT", "+0200", "FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", "16010101T020000"
        ),
    )
    events = [
        "UID:summer\nDTSTART;TZID=Outlook Berlin:20260701T090000",
        "UID:winter\nDTSTART;TZID=Outlook Berlin:20261201T090000",
        "UID:far\nDTSTART;TZID=Outlook Berlin:28000701T090000",
    ]
    far = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2801, 1, 1, tzinfo=UTC))
    parsed = parse_ics(ics(*events, header=zone), far)
    assert parsed.problems == ()
    assert {o.key.uid: o.start.hour for o in parsed.occurrences} == {
        "summer": 7,
        "winter": 8,
        "far": 7,
    }
    assert {o.tzid for o in parsed.occurrences} == {"Outlook Berlin"}


@pytest.mark.parametrize("cached", [False, True], ids=["whole", "cached"])
@pytest.mark.parametrize("order", ["a-first", "b-first"])
def test_two_feeds_defining_one_tzid_each_get_their_own_times(
    cached: bool, order: str
) -> None:
    tzid = "Customized Time Zone"
    feeds = {
        "a": ics(meeting(tzid), header=fixed_zone(tzid, "-0500")),
        "b": ics(meeting(tzid), header=fixed_zone(tzid, "+0900")),
    }
    expected = {
        "a": datetime(2026, 7, 1, 14, tzinfo=UTC),
        "b": datetime(2026, 7, 1, 0, tzinfo=UTC),
    }
    caches = {name: ParseCache() if cached else None for name in feeds}
    names = sorted(feeds, reverse=order == "b-first")
    for _ in range(2):  # a second round reuses the caches
        for name in names:
            parsed = parse_ics(feeds[name], YEAR_2026, cache=caches[name])
            assert [o.start for o in parsed.occurrences] == [expected[name]], name


def test_hostile_definition_in_one_feed_never_stalls_another() -> None:
    tzid = "Customized Time Zone"
    hostile = zone_block(tzid, zone_part("STANDARD", "+0100", "FREQ=SECONDLY"))
    parse_ics(ics(meeting(tzid), header=hostile), YEAR_2026)
    valid = ics(meeting(tzid), header=fixed_zone(tzid, "+0900"))
    parsed = parse_ics(valid, YEAR_2026)
    assert parsed.problems == ()
    assert parsed.occurrences[0].start == datetime(2026, 7, 1, 0, tzinfo=UTC)


def test_tzid_a_feed_does_not_define_is_unknown_whatever_others_defined() -> None:
    tzid = "Customized Time Zone"
    parse_ics(ics(meeting(tzid), header=fixed_zone(tzid, "+0900")), YEAR_2026)
    parsed = parse_ics(ics(meeting(tzid)), YEAR_2026)
    assert parsed.occurrences[0].start == datetime(2026, 7, 1, 9, tzinfo=UTC)
    assert [p.what for p in parsed.problems] == ["unknown TZID"]


def test_vtimezone_turned_unreadable_gives_the_whole_parse_through_a_cache() -> None:
    tzid = "Customized Time Zone"
    cache = ParseCache()
    parse_ics(
        ics(meeting(tzid), header=fixed_zone(tzid, "-0630")), YEAR_2026, cache=cache
    )
    broken = ics(
        meeting(tzid),
        header=fixed_zone(tzid, "-0630").replace(
            "TZOFFSETTO:-0630", "TZOFFSETTO:garbage"
        ),
    )
    cached = parse_ics(broken, YEAR_2026, cache=cache)
    assert cached == parse_ics(broken, YEAR_2026)
    assert "time zone skipped" in [p.what for p in cached.problems]
    assert cached.occurrences[0].start == datetime(2026, 7, 1, 9, tzinfo=UTC)


def test_iana_tzid_wins_over_the_feeds_definition_of_it() -> None:
    wrong_berlin = fixed_zone("Europe/Berlin", "+0900")
    parsed = parse_ics(ics(meeting("Europe/Berlin"), header=wrong_berlin), YEAR_2026)
    assert parsed.occurrences[0].start == datetime(2026, 7, 1, 7, tzinfo=UTC)


# --- the parser's own size limits --------------------------------------------


def numbered_events(count: int) -> list[str]:
    return [
        f"UID:e{n}\nDTSTART:20260701T090000Z\nSUMMARY:Event {n}" for n in range(count)
    ]


def test_body_over_max_bytes_raises_parse_error_naming_the_limit() -> None:
    body = ics(*numbered_events(20)).encode()
    with pytest.raises(ParseError, match="max_bytes") as raised:
        parse_ics(body, YEAR_2026, max_bytes=len(body) - 1)
    assert f"{len(body):,} bytes" in str(raised.value)
    assert len(parse_ics(body, YEAR_2026, max_bytes=len(body)).occurrences) == 20


@pytest.mark.parametrize("cached", [False, True], ids=["whole", "cached"])
def test_body_over_max_components_raises_parse_error_naming_the_limit(
    cached: bool,
) -> None:
    body = ics(*numbered_events(11))
    cache = ParseCache() if cached else None
    with pytest.raises(ParseError, match=r"11 components.*max_components"):
        parse_ics(body, YEAR_2026, max_components=10, cache=cache)
    assert len(parse_ics(body, YEAR_2026, max_components=11).occurrences) == 11


@pytest.mark.parametrize("cached", [False, True], ids=["whole", "cached"])
@pytest.mark.parametrize("nested", ["X-THING", "VEVENT"])
def test_deeply_nested_components_raise_parse_error_instead_of_parsing_silently(
    nested: str, cached: bool
) -> None:
    depth = 100_000
    body = (
        "BEGIN:VCALENDAR\n"
        + f"BEGIN:{nested}\n" * depth
        + f"END:{nested}\n" * depth
        + "BEGIN:VEVENT\nUID:a\nDTSTART:20260701T090000Z\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    with pytest.raises(ParseError, match="100,001 deep"):
        parse_ics(body, YEAR_2026, cache=ParseCache() if cached else None)


@pytest.mark.parametrize("folded", [False, True], ids=["one-line", "folded"])
@pytest.mark.parametrize("cached", [False, True], ids=["whole", "cached"])
def test_line_over_max_line_is_dropped_and_reported(folded: bool, cached: bool) -> None:
    value = "\r\n ".join(["x" * 70] * 3) if folded else "x" * 210
    events = numbered_events(3)
    events[1] += "\nDESCRIPTION:LONG"
    body = ics(*events).replace("LONG", value)  # ics() would strip the folds
    parsed = parse_ics(
        body, YEAR_2026, max_line=200, cache=ParseCache() if cached else None
    )
    (problem,) = parsed.problems
    assert problem.what == "line too long"
    assert "max_line" in problem.why
    assert body.splitlines()[problem.line - 1].startswith("DESCRIPTION:")  # type: ignore[operator]
    assert [o.description for o in parsed.occurrences] == ["", "", ""]
    assert parse_ics(body, YEAR_2026, max_line=222).problems == ()


def test_a_line_over_a_mebibyte_is_dropped_by_default() -> None:
    events = numbered_events(2)
    events[0] += "\nDESCRIPTION:" + "x" * (1024 * 1024)
    parsed = parse_ics(ics(*events), YEAR_2026)
    assert [p.what for p in parsed.problems] == ["line too long"]
    assert len(parsed.occurrences) == 2


@pytest.mark.parametrize("limit", ["max_bytes", "max_components", "max_line"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_limits_must_be_positive_integers(limit: str, value: object) -> None:
    with pytest.raises(ValidationError, match=limit):
        parse_ics(ics(), YEAR_2026, **{limit: value})  # type: ignore[arg-type]


def test_vevent_nested_in_another_is_expanded_once_and_bounded() -> None:
    inner = (
        "BEGIN:VEVENT\nUID:inner\nDTSTART:20260301T090000Z\nRRULE:FREQ=SECONDLY\n"
        "END:VEVENT"
    )
    body = ics("UID:outer\nDTSTART:20260201T090000Z\nNESTED").replace("NESTED", inner)
    parsed = parse_ics(body, YEAR_2026, max_occurrences=10)
    dense = [p for p in parsed.problems if p.what == "recurrence too dense"]
    assert [p.uid for p in dense] == ["inner"]
    assert [o.key.uid for o in parsed.occurrences].count("outer") == 1


def test_instances_lasting_into_the_window_from_long_ago_are_charged() -> None:
    # A flipped byte made the DTSTART year 23: every weekly instance since
    # then lasts 2,000 years into the window, and each one is built.
    event = (
        "UID:ancient\nDTSTART:00230105T100000Z\nDTEND:20230105T110000Z\n"
        "RRULE:FREQ=WEEKLY;UNTIL=20230608T170000Z"
    )
    parsed = parse_ics(ics(event), YEAR_2026, max_occurrences=100)
    assert parsed.occurrences == ()
    (problem,) = parsed.problems
    assert problem.what == "recurrence too dense"
    assert "over the parser's budget of 400,000 a series" in problem.why
    assert parsed == parse_ics(
        ics(event), YEAR_2026, max_occurrences=100, cache=ParseCache()
    )
