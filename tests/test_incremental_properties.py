"""Property: after any edits, a parse through a ParseCache equals a whole parse."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calsync import ParseCache, ParseError, Window, parse_ics
from conftest import CORPUS

FEEDS = sorted(
    path
    for path in CORPUS.rglob("*.ics")
    if path.stat().st_size < 60_000
    and path.read_bytes().lstrip()[:15] == b"BEGIN:VCALENDAR"
    and b"BEGIN:VEVENT" in path.read_bytes()
)
# Top-level components as the edits see them: good enough to cut real feeds.
BLOCK = re.compile(rb"^BEGIN:(VEVENT|VTIMEZONE)\r?\n.*?^END:\1\r?$\n?", re.M | re.S)
START = re.compile(rb"(?m)^DTSTART[^:\r\n]*:(\d{8})")
EDITS = [
    "add",
    "remove",
    "edit",
    "shift",
    "reorder",
    "move override",
    "change vtimezone",
    "change x-wr-timezone",
    "break a line",
    "resize window",
]
# Every step also slides the window by one of these (hours) and may change the
# calendar's own zone.
SLIDES = [0, 1, 24, -24, 7 * 24, -30 * 24, 45 * 24]
ZONES = ["Europe/Berlin", "Europe/Berlin", "America/New_York"]

Edit = tuple[str, int, int]


def window_around(body: bytes, pick: int, days: int) -> Window:
    """A window of ``days`` starting a little before one of the feed's events."""
    events = [m.group(0) for m in BLOCK.finditer(body) if m.group(1) == b"VEVENT"]
    starts = [s for event in events for s in START.findall(event)] or [b"20260101"]
    day = starts[pick % len(starts)].decode()
    first = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), tzinfo=UTC)
    start = first - timedelta(days=pick % 20)
    return Window(start, start + timedelta(days=days))


def apply(edit: Edit, body: bytes, window: Window) -> tuple[bytes, Window]:
    """Apply one edit; ``a`` and ``b`` pick what it touches."""
    kind, a, b = edit
    if kind == "resize window":
        end = window.end + timedelta(days=a % 60 - 20)
        return body, Window(window.start, max(end, window.start + timedelta(days=1)))
    if kind == "change x-wr-timezone":
        line = (
            b"X-WR-TIMEZONE:"
            + [b"Europe/Berlin", b"Asia/Tokyo", b"Nowhere/Land"][a % 3]
        )
        if b"X-WR-TIMEZONE:" in body:
            return re.sub(rb"X-WR-TIMEZONE:[^\r\n]*", line, body), window
        return body.replace(b"VERSION:", line + b"\r\nVERSION:", 1), window
    if kind == "break a line":
        lines = body.split(b"\n")
        line = a % len(lines)
        lines[line] = lines[line][: b % (len(lines[line]) + 1)]
        return b"\n".join(lines), window
    blocks = list(BLOCK.finditer(body))
    events = [m for m in blocks if m.group(1) == b"VEVENT"]
    zones = [m for m in blocks if m.group(1) == b"VTIMEZONE"]
    if kind == "change vtimezone":
        if not zones:
            return body, window
        zone = zones[a % len(zones)]
        offset = rb"TZOFFSETTO:([+-])\d\d"
        changed = re.sub(offset, rb"TZOFFSETTO:\g<1>05", zone.group(0), count=1)
        return body[: zone.start()] + changed + body[zone.end() :], window
    if not events:
        return body, window
    if kind == "move override":
        overrides = [m for m in events if b"RECURRENCE-ID" in m.group(0)] or events
        event = overrides[a % len(overrides)]
    else:
        event = events[a % len(events)]
    text = event.group(0)
    rest = body[: event.start()] + body[event.end() :]
    if kind == "remove":
        return rest, window
    if kind == "add":
        copy = re.sub(rb"(?m)^UID:", b"UID:copy-%d-" % b, text, count=1)
        return body[: event.end()] + copy + body[event.end() :], window
    if kind == "edit":
        edited = re.sub(rb"(?m)^(SUMMARY[^:\r\n]*:)", rb"\1edited ", text, count=1)
        if edited == text:
            edited = text.replace(b"END:VEVENT", b"SUMMARY:added\r\nEND:VEVENT")
        return body[: event.start()] + edited + body[event.end() :], window
    if kind == "shift":
        day = b"\\g<1>%02d" % (b % 28 + 1)
        shifted = re.sub(rb"(DTSTART[^:\r\n]*:\d{6})\d\d", day, text, count=1)
        return body[: event.start()] + shifted + body[event.end() :], window
    # reorder and move override: put the event before another one
    targets = [m.start() for m in BLOCK.finditer(rest) if m.group(1) == b"VEVENT"]
    at = targets[b % len(targets)] if targets else len(rest)
    return rest[:at] + text + rest[at:], window


@pytest.mark.filterwarnings("ignore")
@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    feed=st.sampled_from(FEEDS),
    pick=st.integers(min_value=0, max_value=10_000),
    days=st.sampled_from([7, 90, 400]),
    max_occurrences=st.sampled_from([20_000, 50, 3]),
    edits=st.lists(
        st.tuples(
            st.sampled_from(EDITS),
            st.integers(min_value=0, max_value=10_000),
            st.integers(min_value=0, max_value=10_000),
        ),
        min_size=1,
        max_size=4,
    ),
    slides=st.lists(st.sampled_from(SLIDES), min_size=4, max_size=4),
    zones=st.lists(st.sampled_from(ZONES), min_size=4, max_size=4),
)
def test_cached_parse_equals_whole_parse_after_random_edits(
    feed: Path,
    pick: int,
    days: int,
    max_occurrences: int,
    edits: list[Edit],
    slides: list[int],
    zones: list[str],
) -> None:
    body = feed.read_bytes()
    window = window_around(body, pick, days)
    cache = ParseCache()
    steps = zip([None, *edits], [0, *slides], [ZONES[0], *zones], strict=False)
    for edit, hours, zone in steps:
        if edit is not None:
            body, window = apply(edit, body, window)
        slide = timedelta(hours=hours)
        window = Window(window.start + slide, window.end + slide)
        options = {"default_tz": zone, "max_occurrences": max_occurrences}
        try:
            whole = parse_ics(body, window, **options)  # type: ignore[arg-type]
        except ParseError:
            return
        assert parse_ics(body, window, cache=cache, **options) == whole  # type: ignore[arg-type]
