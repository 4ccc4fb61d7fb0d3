"""Differential test: parse_ics finds the instances the reference libraries find.

The reference is icalendar + x-wr-timezone + recurring-ical-events used directly,
as their documentation shows. calsync adds only what DESIGN.md asks for on top
(cancelled instances dropped, stand-in UIDs, zones for floating times), so on
every corpus feed that the reference can expand, both must agree on the
(UID, start instant) of every occurrence. This guards calsync's shortcuts (the
skip of events far outside the window, the bounds on dense rules).
"""

from __future__ import annotations

import functools
import warnings
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest
import recurring_ical_events
import x_wr_timezone

from calsync import Window, parse_ics
from conftest import CORPUS

WINDOW = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
FEEDS = sorted(
    path
    for path in CORPUS.rglob("*.ics")
    if path.read_bytes().lstrip()[:15] == b"BEGIN:VCALENDAR"
    and "benchmark" not in path.name
)


def _instant(value: date | datetime, zone: tzinfo) -> datetime:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)
    return datetime.combine(value, time(), tzinfo=zone).astimezone(UTC)


@functools.cache
def _reference(path: Path) -> frozenset[tuple[str, datetime]] | None:
    """Expand with the libraries alone; None when they cannot."""
    body = path.read_bytes()
    # icalendar keeps VTIMEZONEs process-wide; calsync reads a feed's own alone.
    icalendar.timezone.tzp.use_zoneinfo()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calendar = icalendar.Calendar.from_ical(body)
            zone_name = calendar.get("X-WR-TIMEZONE")
            zone = ZoneInfo(str(zone_name)) if zone_name else ZoneInfo("UTC")
            if zone_name:
                calendar = x_wr_timezone.to_standard(calendar)
            events = recurring_ical_events.of(calendar).between(
                WINDOW.start, WINDOW.end
            )
    except Exception:
        return None
    return frozenset(
        (str(event["UID"]), _instant(event["DTSTART"].dt, zone))
        for event in events
        if "UID" in event and str(event.get("STATUS", "")).upper() != "CANCELLED"
    )


EXPANDABLE = [path for path in FEEDS if _reference(path) is not None]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", EXPANDABLE, ids=lambda p: str(p.relative_to(CORPUS)))
def test_parse_ics_agrees_with_the_reference_libraries(path: Path) -> None:
    reference = _reference(path)
    assert reference is not None
    parsed = parse_ics(path.read_bytes(), WINDOW)
    found = {
        (o.key.uid, o.start)
        for o in parsed.occurrences
        if not o.key.uid.startswith("calsync-no-uid-")
    }
    expected = {
        (uid, start) for uid, start in reference if WINDOW.start <= start < WINDOW.end
    }
    found = {(uid, start) for uid, start in found if WINDOW.start <= start < WINDOW.end}
    assert found == expected


def test_reference_comparison_covers_most_of_the_corpus() -> None:
    assert len(EXPANDABLE) > 100, "the reference can no longer expand the corpus"
