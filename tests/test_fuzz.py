"""A bounded fuzz run in every test run: mutated and generated feeds parse safely.

The same inputs and check as ``nox -s fuzz`` (tests/fuzz_parse.py), a fixed
few hundred of them, and a fixed number of hypothesis examples of recurring
events built from costly parts: each gives a result or a `CalsyncError`, and a
parse through a `ParseCache` equals the whole parse. Bounded by counts, never
by time, so a slow machine runs the same examples.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fuzzing import SMALL_LIMIT, Input, check, mutated, outcome, sources
from calsync import ParseCache

INPUTS = range(240)
POOL = sources()


@pytest.mark.parametrize("first", range(0, len(INPUTS), 40))
def test_mutated_corpus_feeds_parse_to_results_or_calsync_errors(first: int) -> None:
    caches: dict[tuple[int, int], ParseCache] = {}
    for number in INPUTS[first : first + 40]:
        fuzz_input = mutated(number, POOL)
        try:
            check(fuzz_input, caches)
        except Exception as error:
            pytest.fail(
                f"input {number} ({fuzz_input.how}): {error!r}; replay: "
                f"python tests/fuzz_parse.py --replay {number}"
            )


def test_fuzz_inputs_are_the_same_on_every_run() -> None:
    assert mutated(7, POOL) == mutated(7, POOL)
    assert len({mutated(n, POOL).how for n in range(50)}) > 10


def test_corpus_pieces_are_small() -> None:
    assert len(POOL) > 300
    assert max(map(len, POOL)) < 8_000


_YEARS = st.sampled_from(["0001", "0023", "1601", "1900", "2018", "2019", "9999"])
_DAYS = st.integers(1, 28).map(lambda day: f"03{day:02d}")
_FREQS = st.sampled_from(
    ["SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"]
)
_PARTS = st.sampled_from(
    [
        "",
        ";COUNT=3",
        ";COUNT=999999999",
        ";INTERVAL=7",
        ";UNTIL=99991231T000000Z",
        ";UNTIL=20190601T000000Z",
        ";BYSECOND=0,30",
        ";BYHOUR=1,2,3",
        ";BYDAY=MO,WE",
        ";BYMONTHDAY=31",
        ";BYSETPOS=-1;BYDAY=MO,TU",
    ]
)


@st.composite
def _moments(draw: st.DrawFn) -> str:
    return f"{draw(_YEARS)}{draw(_DAYS)}T090000Z"


@st.composite
def costly_events(draw: st.DrawFn) -> bytes:
    """A recurring event from the parts that make expansion costly."""
    start = draw(_moments())
    lines = ["BEGIN:VEVENT", "UID:generated", f"DTSTART:{start}"]
    ending = draw(st.sampled_from(["", "DTEND", "DURATION"]))
    if ending == "DTEND":
        lines.append(f"DTEND:{draw(_moments())}")
    elif ending == "DURATION":
        lines.append(f"DURATION:P{draw(st.integers(0, 800_000))}D")
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"RRULE:FREQ={draw(_FREQS)}{draw(_PARTS)}")
    if draw(st.booleans()):
        count = draw(st.integers(1, 400))
        lines.append("RDATE:" + ",".join([draw(_moments())] * count))
    if draw(st.booleans()):
        lines.append(f"EXDATE:{draw(_moments())}")
    lines.append("END:VEVENT")
    if draw(st.booleans()):
        lines += [
            "BEGIN:VEVENT",
            "UID:generated",
            f"RECURRENCE-ID;RANGE=THISANDFUTURE:{start}",
            f"DTSTART:{draw(_moments())}",
            "END:VEVENT",
        ]
    return "\n".join(["BEGIN:VCALENDAR", *lines, "END:VCALENDAR", ""]).encode()


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(costly_events())
def test_costly_recurring_events_parse_to_results_or_calsync_errors(
    body: bytes,
) -> None:
    check(Input(0, 0, body, "generated", SMALL_LIMIT), {})


def test_vtimezone_nested_in_another_is_read_the_same_through_a_cache() -> None:
    # Found by nox -s fuzz: the cached parse read only top-level VTIMEZONEs.
    warm = (
        b"BEGIN:VCALENDAR\nBEGIN:VTIMEZONE\nTZID:Europe/London\nBEGIN:STANDARD\n"
        b"DTSTART:19701025T020000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0000\n"
        b"END:STANDARD\nEND:VTIMEZONE\nEND:VCALENDAR\n"
    )
    nested = warm.replace(
        b"TZID:Europe/London\n",
        b"BEGIN:VTIMEZONE\nTZOFFSETTO:+0000\nEND:VTIMEZONE\nTZID:Europe/London\n",
    )
    cache = ParseCache()
    check(Input(0, 0, warm, "warm", SMALL_LIMIT), {(0, SMALL_LIMIT): cache})
    check(Input(1, 0, nested, "nested", SMALL_LIMIT), {(0, SMALL_LIMIT): cache})


_NO_START = b"BEGIN:VEVENT\nUID:u\nRECURRENCE-ID:20190308T090000Z\nEND:VEVENT\n"
_BAD_END = (
    b"BEGIN:VEVENT\nUID:u\nRECURRENCE-ID:20190315T090000Z\n"
    b"DTSTART:20190315T100000Z\nDTEND:Europe/Paris\nEND:VEVENT\n"
)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (_NO_START + _BAD_END, "KeyError: missing property 'DTSTART'"),
        (_BAD_END + _NO_START, "BrokenCalendarProperty: Cannot access 'dt' on broken"),
    ],
)
def test_the_first_broken_override_in_the_feed_names_the_problem(
    overrides: bytes, why: str
) -> None:
    # Found by nox -s fuzz: recurring-ical-events meets overrides in set order
    # (by memory address), so which one failed first changed between parses.
    body = (
        b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:u\nDTSTART:20190301T090000Z\n"
        b"RRULE:FREQ=WEEKLY\nEND:VEVENT\n" + overrides + b"END:VCALENDAR\n"
    )
    for number in range(10):
        check(Input(number, 0, body, "broken", SMALL_LIMIT), {})
    parsed = outcome(body, SMALL_LIMIT, None)
    assert not isinstance(parsed, str)
    (problem,) = parsed.problems
    assert problem.what == "event skipped"
    assert problem.why.startswith(why)
