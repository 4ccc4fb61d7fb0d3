"""The parse pool returns what `parse_ics` returns, and raises what it raises."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from calsync import Occurrence, ParsedCalendar, ParseError, Problem, Window
from calsync.config import ConfigError, build_settings, load_config
from calsync.core import OccurrenceKey
from calsync.core.parse import parse_ics
from calsync.engine.parsepool import ParsePool, _assembled, _delta, _Mismatch, _Result
from conftest import ics

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
    whole, _ = _delta(parsed, None)
    assert _assembled(whole, None).parsed == parsed


# -- sending only what changed ---------------------------------------------------

NOW = datetime(2026, 3, 2, 9, tzinfo=UTC)
WEEK = Window(NOW - timedelta(days=1), NOW + timedelta(days=60))


def team_event(n: int, *, summary: str = "", weekly: bool = False) -> str:
    """Event ``n``: a single one on day n, or a weekly series starting then."""
    start = NOW + timedelta(days=n % 50, hours=n % 7)
    lines = [
        f"UID:e{n}@calsync.test",
        "DTSTAMP:20260101T000000Z",
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
        f"DTEND:{start + timedelta(minutes=30):%Y%m%dT%H%M%SZ}",
        f"SUMMARY:{summary or f'event {n}'}",
    ]
    if weekly:
        lines.append("RRULE:FREQ=WEEKLY;COUNT=6")
    return "\n".join(lines)


def moved_instance(n: int) -> str:
    """An override moving the second week of series ``n`` by an hour."""
    original = NOW + timedelta(days=n % 50 + 7, hours=n % 7)
    start = original + timedelta(hours=1)
    return "\n".join(
        [
            f"UID:e{n}@calsync.test",
            "DTSTAMP:20260101T000000Z",
            f"RECURRENCE-ID:{original:%Y%m%dT%H%M%SZ}",
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
            f"DTEND:{start + timedelta(minutes=30):%Y%m%dT%H%M%SZ}",
            "SUMMARY:moved",
        ]
    )


def team_feed(
    count: int = 40,
    *,
    changed: dict[int, str] | None = None,
    removed: frozenset[int] = frozenset(),
    header: str = "X-WR-CALNAME:Team",
) -> bytes:
    """Singles and weekly series (every fifth event), one series with an override."""
    events = [
        team_event(n, summary=(changed or {}).get(n, ""), weekly=n % 5 == 0)
        for n in range(count)
        if n not in removed
    ]
    events.append(moved_instance(0))
    return ics(*events, header=header).encode()


class Parses:
    """Parse bodies through a pool and check each against a whole parse."""

    def __init__(self, pool: ParsePool, *, max_occurrences: int = 20_000) -> None:
        self.pool = pool
        self.max_occurrences = max_occurrences

    async def check(
        self, calendar_id: str, body: bytes, window: Window = WEEK
    ) -> ParsedCalendar:
        parsed = await self.pool.parse(
            calendar_id,
            body,
            window,
            default_tz="Europe/Berlin",
            max_occurrences=self.max_occurrences,
            timeout=120,
        )
        whole = parse_ics(
            body,
            window,
            default_tz="Europe/Berlin",
            max_occurrences=self.max_occurrences,
        )
        assert parsed == whole
        assert parsed.occurrences  # the feeds here are never empty
        return parsed

    @property
    def partial(self) -> int:
        return self.pool.stats.partial

    @property
    def sent(self) -> int:
        return self.pool.stats.occurrences_sent


async def test_an_unchanged_feed_is_rebuilt_from_what_the_parent_kept(
    pool: ParsePool,
) -> None:
    parses = Parses(pool)
    first = await parses.check("a", team_feed())
    assert parses.sent == len(first.occurrences)
    again = await parses.check("a", team_feed())
    assert parses.partial == 1
    assert parses.sent == len(first.occurrences)  # nothing more crossed the pipe
    assert again.occurrences is first.occurrences


async def test_one_edited_event_sends_its_own_occurrences_only(
    pool: ParsePool,
) -> None:
    parses = Parses(pool)
    first = await parses.check("a", team_feed())
    await parses.check("a", team_feed(changed={5: "series renamed"}))
    assert parses.sent - len(first.occurrences) == 6  # the weekly series


async def test_a_slid_window_sends_only_the_occurrences_that_changed(
    pool: ParsePool,
) -> None:
    # The window moves: every group is expanded again into new objects.
    parses = Parses(pool)
    first = await parses.check("a", team_feed())
    slid = Window(WEEK.start + timedelta(days=2), WEEK.end + timedelta(days=2))
    after = await parses.check("a", team_feed(), slid)
    assert parses.partial == 1
    gone = set(first.occurrences) - set(after.occurrences)
    assert gone  # the first days slid out of the window
    assert parses.sent - len(first.occurrences) < len(after.occurrences) / 2


@pytest.mark.parametrize(
    "edited",
    [
        pytest.param(team_feed(changed={3: "moved to room 5"}), id="one-changed"),
        pytest.param(team_feed(changed={5: "series renamed"}), id="series-changed"),
        pytest.param(team_feed(removed=frozenset({7})), id="one-removed"),
        pytest.param(team_feed(removed=frozenset({0})), id="series-removed"),
        pytest.param(team_feed(41), id="one-added"),
        pytest.param(team_feed(header="X-WR-CALNAME:Renamed"), id="header-changed"),
        pytest.param(team_feed(4), id="most-removed"),
        # A new zone for floating times: every group is expanded again.
        pytest.param(team_feed(header="X-WR-TIMEZONE:Asia/Tokyo"), id="all-new"),
    ],
)
async def test_an_edited_feed_sends_only_what_changed_and_equals_a_whole_parse(
    pool: ParsePool, edited: bytes
) -> None:
    parses = Parses(pool)
    await parses.check("a", team_feed())
    await parses.check("a", edited)
    assert parses.partial == 1
    await parses.check("a", team_feed())
    assert parses.partial == 2


async def test_any_sequence_of_edits_is_rebuilt_as_a_whole_parse(
    pool: ParsePool,
) -> None:
    parses = Parses(pool, max_occurrences=60)
    rng = random.Random(16)
    feeds = {"a": (40, {}, frozenset()), "b": (20, {}, frozenset())}
    for step in range(24):
        calendar_id = rng.choice("ab")
        count, changed, removed = feeds[calendar_id]
        n = rng.randrange(count + 1)
        match rng.choice(("change", "remove", "add", "same")):
            case "change":
                changed = {**changed, n: f"edit {step}"}
            case "remove":
                removed = removed | {n}
            case "add":
                count += 1
        feeds[calendar_id] = (count, changed, removed)
        await parses.check(
            calendar_id, team_feed(count, changed=changed, removed=removed)
        )
    assert parses.partial == 22


async def test_a_capped_result_is_rebuilt_as_a_whole_parse_caps_it(
    pool: ParsePool,
) -> None:
    # An added early event pushes the last kept occurrence of an unedited group out.
    parses = Parses(pool, max_occurrences=50)
    await parses.check("a", team_feed(60))
    capped = await parses.check("a", team_feed(61, changed={60: "early"}))
    assert any(problem.what == "too many occurrences" for problem in capped.problems)
    assert parses.partial == 1


async def test_a_killed_worker_answers_with_a_whole_result(pool: ParsePool) -> None:
    parses = Parses(pool)
    await parses.check("a", team_feed())
    [worker] = pool.pids()
    os.kill(worker, signal.SIGKILL)
    process = pool._workers[0]
    while process is not None and process.alive():
        await asyncio.sleep(0.01)
    await parses.check("a", team_feed(changed={3: "after the kill"}))
    assert parses.partial == 0
    await parses.check("a", team_feed(changed={4: "then a partial one"}))
    assert parses.partial == 1


async def test_an_evicted_result_in_the_parent_means_a_whole_result() -> None:
    body = team_feed()
    pool = ParsePool(workers=1, memory_limit=None, cache_size=4, result_bytes=1)
    try:
        parses = Parses(pool)
        await parses.check("a", body)
        await parses.check("a", team_feed(changed={3: "changed"}))
        assert parses.partial == 0
        assert pool.results_size == 0
    finally:
        await pool.close()


async def test_the_parent_keeps_the_most_recent_results_within_its_bytes() -> None:
    probe = ParsePool(workers=1, memory_limit=None, cache_size=4)
    try:
        await Parses(probe).check("a", team_feed())
        one = probe.results_size
    finally:
        await probe.close()
    pool = ParsePool(workers=1, memory_limit=None, cache_size=4, result_bytes=one)
    try:
        parses = Parses(pool)
        await parses.check("a", team_feed())
        await parses.check("b", team_feed())  # evicts a's result
        await parses.check("a", team_feed(changed={3: "changed"}))
        assert parses.partial == 0
        assert pool.results_size == one  # a's result, rebuilt whole, evicted b's
        await parses.check("a", team_feed(changed={3: "again"}))
        assert parses.partial == 1
    finally:
        await pool.close()


async def test_two_calendars_interleaved_on_one_worker_each_build_on_their_own(
    pool: ParsePool,
) -> None:
    parses = Parses(pool)
    await parses.check("a", team_feed())
    await parses.check("b", team_feed(30))
    await parses.check("a", team_feed(changed={3: "a changed"}))
    await parses.check("b", team_feed(30, removed=frozenset({1})))
    await parses.check("a", team_feed(30))  # b's body now under a's id
    await parses.check("b", team_feed())
    assert parses.partial == 4


async def test_a_calendar_the_worker_forgot_gets_a_whole_result() -> None:
    pool = ParsePool(workers=1, memory_limit=None, cache_size=1)
    try:
        parses = Parses(pool)
        await parses.check("a", team_feed())
        await parses.check("b", team_feed(30))  # the worker keeps b's cache only
        await parses.check("a", team_feed(changed={3: "changed"}))
        assert parses.partial == 0
    finally:
        await pool.close()


async def test_a_failed_parse_is_followed_by_a_whole_result(pool: ParsePool) -> None:
    parses = Parses(pool)
    await parses.check("a", team_feed())
    with pytest.raises(ParseError):
        await parses.check("a", b"<html>login</html>")
    await parses.check("a", team_feed())
    assert parses.partial == 0


def test_a_result_built_on_another_result_is_refused() -> None:
    parsed = parse_ics(team_feed(), WEEK)
    first, sent = _delta(parsed, None)
    base = _assembled(first, None)
    second, _ = _delta(parsed, sent)
    other, _ = _delta(parsed, None)
    with pytest.raises(_Mismatch):
        _assembled(second, _assembled(other, None))
    assert _assembled(second, base).parsed == parsed


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


async def test_a_kept_result_that_does_not_fit_the_answer_is_replaced_whole(
    pool: ParsePool,
) -> None:
    parses = Parses(pool)
    await parses.check("a", team_feed())
    kept = pool._results.get("a")
    assert kept is not None
    damaged = attrs.evolve(kept.parsed, occurrences=kept.parsed.occurrences[1:])
    pool._results.put("a", _Result(kept.token, damaged, kept.size))
    await parses.check("a", team_feed())
    assert pool.stats.parses == 3  # the partial answer, then a whole one
    assert parses.partial == 1


# -- the caches' bytes ------------------------------------------------------------


async def test_the_workers_keep_their_caches_within_the_byte_budget() -> None:
    probe = ParsePool(workers=1, memory_limit=None, cache_size=4, result_bytes=0)
    try:
        await Parses(probe).check("a", team_feed())
        one = probe.cache_bytes
        assert one > 0
        assert probe.cached_calendars == 1
    finally:
        await probe.close()
    # Room for one calendar's cache, not two: b's parse evicts a's cache.
    pool = ParsePool(
        workers=1,
        memory_limit=None,
        cache_size=4,
        cache_bytes=one * 3 // 2,
        result_bytes=0,
    )
    try:
        parses = Parses(pool)
        await parses.check("a", team_feed())
        await parses.check("b", team_feed())
        assert (pool.cached_calendars, pool.stats.evicted) == (1, 1)
        assert pool.cache_bytes <= pool.cache_budget
        warm = pool.stats.warm
        await parses.check("a", team_feed())
        assert pool.stats.warm == warm  # a's cache was gone
        await parses.check("a", team_feed())
        assert pool.stats.warm == warm + 1
    finally:
        await pool.close()
    assert pool.cache_bytes == 0


async def test_a_cache_alone_over_the_budget_is_not_kept() -> None:
    pool = ParsePool(
        workers=1, memory_limit=None, cache_size=4, cache_bytes=1, result_bytes=0
    )
    try:
        parses = Parses(pool)
        await parses.check("a", team_feed())
        await parses.check("a", team_feed())
        assert (pool.stats.warm, pool.cached_calendars, pool.cache_bytes) == (0, 0, 0)
    finally:
        await pool.close()
