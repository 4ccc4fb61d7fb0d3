"""Mutated corpus feeds for parse_ics, and the check every one of them must pass.

Input number ``n`` is made from ``random.Random(n)`` alone, so a failure found by
``tests/fuzz_parse.py`` is replayed with ``--replay n``. Used by the bounded
test in the default run (tests/test_fuzz.py) and by ``nox -s fuzz``.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

from calsync import CalsyncError, ParseCache, ParsedCalendar, Window, parse_ics

CORPUS = Path(__file__).resolve().parent / "corpus"
WINDOW = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 7, 1, tzinfo=UTC))
# Larger files are fine to parse but make 100,000 inputs take hours.
MAX_SOURCE_BYTES = 100_000

HOSTILE_RULES = [
    "FREQ=SECONDLY",
    "FREQ=MINUTELY;INTERVAL=0",
    "FREQ=SECONDLY;UNTIL=99991231T000000Z",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=YEARLY;BYSECOND=60",
    "FREQ=DAILY;BYSETPOS=400",
    "FREQ=MONTHLY;BYDAY=60MO",
    "FREQ=YEARLY;BYWEEKNO=1;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19",
    "FREQ=HOURLY;INTERVAL=-1",
    "FREQ=WEEKLY;COUNT=999999999",
]


def sources() -> list[bytes]:
    """The corpus feeds mutations start from, in a stable order."""
    paths = sorted(CORPUS.rglob("*.ics"))
    return [p.read_bytes() for p in paths if p.stat().st_size <= MAX_SOURCE_BYTES]


def _lines(body: bytes) -> list[bytes]:
    return body.splitlines(keepends=True)


def flip_bytes(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def delete_lines(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    lines = _lines(body)
    for _ in range(rng.randint(1, 5)):
        if lines:
            del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def duplicate_lines(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    lines = _lines(body)
    if not lines:
        return body
    start = rng.randrange(len(lines))
    end = min(len(lines), start + rng.randint(1, 12))
    at = rng.randrange(len(lines) + 1)
    return b"".join(lines[:at] + lines[start:end] * rng.randint(1, 3) + lines[at:])


def swap_values(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    lines = _lines(body)
    with_values = [n for n, line in enumerate(lines) if b":" in line[1:]]
    if len(with_values) < 2:
        return body
    first, second = rng.sample(with_values, 2)
    name_a, value_a = lines[first].split(b":", 1)
    name_b, value_b = lines[second].split(b":", 1)
    lines[first], lines[second] = name_a + b":" + value_b, name_b + b":" + value_a
    return b"".join(lines)


def truncate(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    return body[: rng.randrange(len(body) + 1)]


def splice(rng: random.Random, body: bytes, pool: list[bytes]) -> bytes:
    other = _lines(rng.choice(pool))
    lines = _lines(body)
    return b"".join(
        lines[: rng.randrange(len(lines) + 1)] + other[rng.randrange(len(other) + 1) :]
    )


def _hostile_zone(rng: random.Random) -> bytes:
    tzid = rng.choice(["Fuzz Zone", "Customized Time Zone", "W. Europe Standard Time"])
    parts = []
    for kind in rng.sample(["STANDARD", "DAYLIGHT"], rng.randint(1, 2)) * rng.choice(
        [1, 1, 1, 300]
    ):
        rule = rng.choice([*HOSTILE_RULES, "FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU"])
        parts.append(
            f"BEGIN:{kind}\nDTSTART:{rng.choice(['16010101', '19700101'])}T030000\n"
            f"TZOFFSETFROM:+0100\nTZOFFSETTO:+0200\nRRULE:{rule}\nEND:{kind}\n"
        )
    event = (
        f"BEGIN:VEVENT\nUID:fuzz-zone\nDTSTART;TZID={tzid}:20190301T090000\n"
        "RRULE:FREQ=DAILY;COUNT=5\nEND:VEVENT\n"
    )
    return (
        f"BEGIN:VTIMEZONE\nTZID:{tzid}\n{''.join(parts)}END:VTIMEZONE\n{event}".encode()
    )


def _hostile_lines(rng: random.Random) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        depth = rng.choice([40, 2_000])
        return b"BEGIN:X-NEST\n" * depth + b"END:X-NEST\n" * depth
    if choice == 1:
        return b"DESCRIPTION:" + b"x" * rng.choice([70_000, 1_100_000]) + b"\n"
    if choice == 2:
        return f"RRULE:{rng.choice(HOSTILE_RULES)}\n".encode()
    if choice == 3:
        return (
            "BEGIN:VEVENT\nUID:fuzz-rule\nDTSTART:20190301T090000Z\n"
            f"RRULE:{rng.choice(HOSTILE_RULES)}\nEND:VEVENT\n"
        ).encode()
    if choice == 4:
        return _hostile_zone(rng)
    if choice == 5:
        return rng.choice(
            [b"UID;x\n", b"DTSTART;TZID=:\n", b"BEGIN:VEVENT\n", b"END:\n"]
        )
    if choice == 6:
        return b"EXDATE;TZID=Fuzz Zone:20190301T090000,garbage\n"
    return b"BEGIN:VALARM\nTRIGGER:-PT15M\n" * rng.randint(1, 50)


def insert_hostile(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    lines = _lines(body)
    at = rng.randrange(len(lines) + 1)
    return b"".join([*lines[:at], _hostile_lines(rng), *lines[at:]])


MUTATIONS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    flip_bytes,
    delete_lines,
    duplicate_lines,
    swap_values,
    truncate,
    splice,
    insert_hostile,
]


def mutated(number: int, pool: list[bytes]) -> tuple[int, bytes, str]:
    """Return input ``number``: its source's index, its body, and how it was made."""
    rng = random.Random(number)
    source = rng.randrange(len(pool))
    body = pool[source]
    steps = []
    for _ in range(rng.randint(1, 3)):
        mutation = rng.choice(MUTATIONS)
        body = mutation(rng, body, pool)
        steps.append(mutation.__name__)
    return source, body, "+".join(steps)


def outcome(body: bytes, cache: ParseCache | None) -> ParsedCalendar | str:
    """Parse; a `CalsyncError` is an outcome too, any other exception propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return parse_ics(body, WINDOW, cache=cache)
        except CalsyncError as error:
            return f"{type(error).__name__}: {error}"


def check(
    body: bytes,
    cache: ParseCache,
    guard: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> None:
    """Only results or `CalsyncError`s, and the cached parse equals the whole one.

    ``guard`` wraps each of the two parses (the fuzz runner's per-parse alarm).
    """
    with guard():
        whole = outcome(body, None)
    with guard():
        cached = outcome(body, cache)
    if cached != whole:
        raise AssertionError(
            f"cached parse differs from whole parse:\n{cached}\n{whole}"
        )
