"""Mutated corpus feeds for parse_ics, and the check every one of them must pass.

Input number ``n`` is made from ``random.Random(n)`` alone, so a failure found by
``tests/fuzz_parse.py`` is replayed with ``--replay n``. Used by the bounded
test in the default run (tests/test_fuzz.py) and by ``nox -s fuzz``.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import attrs

from calsync import CalsyncError, ParseCache, ParsedCalendar, Window, parse_ics

CORPUS = Path(__file__).resolve().parent / "corpus"
WINDOW = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 7, 1, tzinfo=UTC))
# Inputs stay small so that 100,000 of them take minutes: a larger corpus feed
# is cut into a few pieces of this size, each its head and some of its events.
MAX_SOURCE_BYTES = 4_000
PIECES_A_FEED = 6
ZONE_PARTS_KEPT = 6
# Most inputs keep few occurrences, so that a dense rule costs milliseconds;
# one in DEFAULT_LIMIT_EVERY keeps parse_ics's default of 20,000.
SMALL_LIMIT = 200
DEFAULT_LIMIT_EVERY = 50

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
_EVENT = re.compile(rb"BEGIN:VEVENT\r?\n.*?END:VEVENT\r?\n", re.DOTALL)
_ZONE_PART = re.compile(rb"BEGIN:(STANDARD|DAYLIGHT)\r?\n.*?END:\1\r?\n", re.DOTALL)


@attrs.frozen
class Input:
    """One fuzz input: the body, the corpus piece it came from and how it was made."""

    number: int
    source: int
    body: bytes
    how: str
    max_occurrences: int


def sources() -> list[bytes]:
    """The small feeds mutations start from, in a stable order."""
    pool: list[bytes] = []
    for path in sorted(CORPUS.rglob("*.ics")):
        pool.extend(_pieces(path.read_bytes()))
    return pool


def _pieces(body: bytes) -> list[bytes]:
    """Cut a large feed into a few small ones: its head, some events, the end."""
    if len(body) <= MAX_SOURCE_BYTES:
        return [body]
    events = list(_EVENT.finditer(body))
    if not events:
        return [body[:MAX_SOURCE_BYTES]]
    head = _few_zone_parts(body[: events[0].start()])
    room = max(MAX_SOURCE_BYTES - len(head), 1)
    chunks: list[list[bytes]] = [[]]
    for event in events:
        size = sum(map(len, chunks[-1]))
        if chunks[-1] and size + len(event.group()) > room:
            chunks.append([])
        chunks[-1].append(event.group())
    step = max(len(chunks) // PIECES_A_FEED, 1)
    return [
        head + b"".join(chunk) + b"END:VCALENDAR\r\n"
        for chunk in chunks[::step][:PIECES_A_FEED]
    ]


def _few_zone_parts(head: bytes) -> bytes:
    """Keep a zone's first STANDARD and DAYLIGHT parts, not its whole history."""
    parts = list(_ZONE_PART.finditer(head))[ZONE_PARTS_KEPT:]
    for part in reversed(parts):
        head = head[: part.start()] + head[part.end() :]
    return head


def _lines(body: bytes) -> list[bytes]:
    return body.splitlines(keepends=True)


def flip_bytes(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def flip_digits(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    """Change digits (years, times, offsets, counts): the values rules live on."""
    data = bytearray(body)
    digits = [n for n, byte in enumerate(data) if 0x30 <= byte <= 0x39]
    for at in rng.sample(digits, min(len(digits), rng.randint(1, 4))):
        data[at] = rng.choice(b"0123456789")
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
    repeat = 300 if rng.randrange(30) == 0 else 1
    for kind in rng.sample(["STANDARD", "DAYLIGHT"], rng.randint(1, 2)) * repeat:
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


def _hostile_event(rng: random.Random) -> bytes:
    """An event whose expansion is costly: early start, long, moved, many dates."""
    # Most such events are cut by the budget at once (0023) or cheap (2019); one
    # that builds thousands of instances within its budget (1900) costs ~0.1 s.
    year = rng.choice(["0023", "0023", "2018", "2019", "2019", "2019", "1900"])
    start = f"{year}0301T090000Z"
    lines = [f"UID:fuzz-{rng.randrange(3)}", f"DTSTART:{start}"]
    end = rng.choice(
        ["", "DTEND:20190301T100000Z", "DURATION:P9000D", "DTEND:00010101"]
    )
    lines += [end] if end else []
    lines.append(
        "RRULE:"
        + rng.choice([*HOSTILE_RULES, "FREQ=WEEKLY", "FREQ=DAILY", "FREQ=MINUTELY"])
    )
    if rng.random() < 0.3:
        dates = ",".join(
            f"2019{m:02d}{d:02d}" for m in range(1, 13) for d in range(1, 29)
        )
        lines.append(f"RDATE;VALUE=DATE:{dates}")
    if rng.random() < 0.3:
        lines.append("EXDATE:" + ",".join(f"2019030{d}T090000Z" for d in range(1, 10)))
    event = "BEGIN:VEVENT\n" + "\n".join(lines) + "\nEND:VEVENT\n"
    if rng.random() < 0.3:
        moved = rng.choice(["99990101T090000Z", "00010101T090000Z", "20190401T090000Z"])
        event += (
            f"BEGIN:VEVENT\n{lines[0]}\nRECURRENCE-ID;RANGE=THISANDFUTURE:{start}\n"
            f"DTSTART:{moved}\nEND:VEVENT\n"
        )
    return event.encode()


def _hostile_lines(rng: random.Random) -> bytes:
    choice = rng.randrange(9)
    if choice == 0:
        depth = rng.choice([40, 2_000])
        return b"BEGIN:X-NEST\n" * depth + b"END:X-NEST\n" * depth
    if choice == 1:
        size = 1_100_000 if rng.randrange(10) == 0 else 5_000  # over max_line, or not
        return b"DESCRIPTION:" + b"x" * size + b"\n"
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
    if choice == 7:
        return _hostile_event(rng)
    return b"BEGIN:VALARM\nTRIGGER:-PT15M\n" * rng.randint(1, 50)


def insert_hostile(rng: random.Random, body: bytes, _: list[bytes]) -> bytes:
    lines = _lines(body)
    at = rng.randrange(len(lines) + 1)
    return b"".join([*lines[:at], _hostile_lines(rng), *lines[at:]])


MUTATIONS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    flip_bytes,
    flip_digits,
    delete_lines,
    duplicate_lines,
    swap_values,
    truncate,
    splice,
    insert_hostile,
]


def mutated(number: int, pool: list[bytes]) -> Input:
    """Return input ``number``, made from ``random.Random(number)`` alone."""
    rng = random.Random(number)
    source = rng.randrange(len(pool))
    body = pool[source]
    steps = []
    for _ in range(rng.randint(1, 3)):
        mutation = rng.choice(MUTATIONS)
        body = mutation(rng, body, pool)
        steps.append(mutation.__name__)
    limit = 20_000 if rng.randrange(DEFAULT_LIMIT_EVERY) == 0 else SMALL_LIMIT
    return Input(number, source, body, "+".join(steps), limit)


def outcome(
    body: bytes, max_occurrences: int, cache: ParseCache | None
) -> ParsedCalendar | str:
    """Parse; a `CalsyncError` is an outcome too, any other exception propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return parse_ics(body, WINDOW, max_occurrences=max_occurrences, cache=cache)
        except CalsyncError as error:
            return f"{type(error).__name__}: {error}"


class Mismatch(AssertionError):
    """A parse through a `ParseCache` gave another result than the whole parse."""


def check(fuzz_input: Input, caches: dict[tuple[int, int], ParseCache]) -> None:
    """Only results or `CalsyncError`s, and the cached parse equals the whole one.

    ``caches`` holds a `ParseCache` per source and limit, warmed by the inputs
    made from that source before, as a calendar's cache is by its last body.
    """
    key = (fuzz_input.source, fuzz_input.max_occurrences)
    cache = caches.setdefault(key, ParseCache())
    whole = outcome(fuzz_input.body, fuzz_input.max_occurrences, None)
    try:
        cached = outcome(fuzz_input.body, fuzz_input.max_occurrences, cache)
    except BaseException:
        caches.pop(key, None)
        raise
    if cached != whole:
        caches.pop(key, None)
        raise Mismatch(f"cached parse differs from whole parse:\n{cached}\n{whole}")
