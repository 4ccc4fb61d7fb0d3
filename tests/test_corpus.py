"""Every feed in the shared corpus parses: occurrences, problems or ParseError."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from _hang import finishes
from calsync import ParsedCalendar, ParseError, Window, parse_ics
from conftest import CORPUS

FILES = sorted(CORPUS.rglob("*.ics"))
WINDOWS = {
    "2019": Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)),
    "2026": Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
}


def _parse_or_error(body: bytes, window: Window) -> ParsedCalendar | ParseError:
    try:
        return parse_ics(body, window, default_tz="Europe/Berlin")
    except ParseError as error:
        return error


def test_corpus_is_present() -> None:
    assert len(FILES) > 250, f"expected the shared corpus at {CORPUS}"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
@pytest.mark.parametrize("window_name", sorted(WINDOWS))
def test_corpus_file_parses_or_raises_parse_error(path: Path, window_name: str) -> None:
    window = WINDOWS[window_name]
    body = path.read_bytes()
    parsed = finishes(lambda: _parse_or_error(body, window))
    if isinstance(parsed, ParseError):
        assert "VCALENDAR" in str(parsed), "a ParseError says what it expected"
        return
    assert isinstance(parsed, ParsedCalendar)
    window = WINDOWS[window_name]
    for occurrence in parsed.occurrences:
        assert window.overlaps(occurrence.start, occurrence.end)
        assert occurrence.start.tzinfo is UTC
    assert len({o.key for o in parsed.occurrences}) == len(parsed.occurrences)
    for problem in parsed.problems:
        assert problem.what
        assert problem.why


def test_google_export_expands_the_events_of_2019() -> None:
    body = (
        CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"
    ).read_bytes()
    parsed = parse_ics(body, WINDOWS["2019"])
    assert len(parsed.occurrences) == 341
    assert parsed.problems == ()
    assert parsed.timezone == "Europe/London"


@pytest.mark.filterwarnings("ignore")
def test_broken_rrule_in_corpus_is_reported_with_uid_and_line() -> None:
    path = CORPUS / "recurring-ical-events" / "bad_rrule_missing_until_event.ics"
    window = Window(datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC))
    parsed = parse_ics(path.read_bytes(), window)
    assert parsed.problems, "the UNTL typo must be reported"
    problem = parsed.problems[0]
    assert problem.uid is not None
    assert problem.line is not None
    assert path.read_text().splitlines()[problem.line - 1].startswith("UID")
