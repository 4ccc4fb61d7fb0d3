"""The parse pool returns what `parse_ics` returns, and raises what it raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from calsync import Occurrence, ParsedCalendar, ParseError, Problem, Window
from calsync.config import ConfigError, build_settings, load_config
from calsync.core import OccurrenceKey
from calsync.core.parse import parse_ics
from calsync.engine.parsepool import _FIELDS, ParsePool, _compact, _restored

WINDOW = Window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
# Recurring, all-day, zoned, with alarms and overrides: every field is exercised.
SAMPLES = (
    "recurring-ical-events/Germany_Holidays.ics",
    "recurring-ical-events/alarm_1_week_before_event.ics",
    "recurring-ical-events/alarm_absolute.ics",
    "recurring-ical-events/after_many_events_in_order.ics",
)


@pytest.fixture
async def pool() -> AsyncIterator[ParsePool]:
    pool = ParsePool(workers=1, memory_limit=256 * 2**20, cache_size=4)
    yield pool
    await pool.close()


@pytest.mark.parametrize("sample", SAMPLES)
async def test_a_parse_in_the_pool_equals_parse_ics(
    pool: ParsePool, corpus: Path, sample: str
) -> None:
    body = (corpus / sample).read_bytes()
    expected = parse_ics(body, WINDOW, default_tz="Europe/Berlin")
    parsed = await pool.parse(
        sample,
        body,
        WINDOW,
        default_tz="Europe/Berlin",
        max_occurrences=20_000,
        timeout=120,
    )
    assert parsed == expected
    assert [o.content_hash for o in parsed.occurrences] == [
        o.content_hash for o in expected.occurrences
    ]


async def test_a_feed_that_is_not_icalendar_raises_parse_error_from_the_pool(
    pool: ParsePool,
) -> None:
    with pytest.raises(ParseError):
        await pool.parse(
            "html",
            b"<html>login</html>",
            WINDOW,
            default_tz="UTC",
            max_occurrences=10,
            timeout=120,
        )
    assert pool.stats.stopped == 0


def test_the_compact_form_keeps_every_field_of_an_occurrence() -> None:
    assert tuple(field.name for field in attrs.fields(Occurrence)) == _FIELDS
    occurrence = Occurrence(
        OccurrenceKey("uid", "20260302"),
        datetime(2026, 3, 1, 23, tzinfo=UTC),
        datetime(2026, 3, 2, 23, tzinfo=UTC),
        all_day=True,
        summary="s",
        location="l",
        description="d",
        status="CONFIRMED",
        sequence=3,
        tzid="Europe/Berlin",
        start_date=date(2026, 3, 2),
        end_date=date(2026, 3, 3),
        alarms=(timedelta(minutes=10),),
    )
    parsed = ParsedCalendar(
        (occurrence,),
        (Problem("what", "why", "uid", 3),),
        "name",
        "Europe/Berlin",
        timedelta(hours=1),
        frozenset({"gone"}),
    )
    assert _restored(_compact(parsed)) == parsed


def test_the_parse_settings_are_read_from_the_config_and_the_environment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calsync.toml"
    path.write_text("[engine]\nparse_concurrency = 3\nparse_memory_limit = 0\n")
    env = {"CALSYNC_ENGINE_PARSE_ISOLATION": "false"}
    settings = build_settings(load_config(path, env=env))
    assert settings.parse_concurrency == 3
    assert settings.parse_memory_limit is None
    assert settings.parse_isolation is False
    assert build_settings(load_config(None, env={})).parse_isolation is True


def test_a_parse_setting_that_is_not_a_boolean_names_its_key() -> None:
    env = {"CALSYNC_ENGINE_PARSE_ISOLATION": "maybe"}
    with pytest.raises(ConfigError, match="CALSYNC_ENGINE_PARSE_ISOLATION"):
        load_config(None, env=env)
