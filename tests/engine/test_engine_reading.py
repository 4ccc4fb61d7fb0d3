"""Engine.occurrences and Engine.reseal_secrets: what the CLI and hosts read and do."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from calsync import Engine, SQLiteStore, ValidationError, Window
from calsync.core import CalendarNotFound
from calsync.testing import FeedServer, ManualClock, MemoryStore

from .conftest import T0, event, ics, settings

HOUR = timedelta(hours=1)


async def test_occurrences_lists_a_calendars_events_by_start_within_a_window(
    engine: Engine, feeds: FeedServer
) -> None:
    feeds.set("/a.ics", ics(event("late", T0 + 5 * HOUR), event("soon", T0 + HOUR)))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), owner="alice")
    await engine.sync_calendar(calendar.id)
    every = await engine.occurrences(calendar.id)
    assert [o.key.uid for o in every] == ["soon", "late"]
    early = await engine.occurrences(calendar.id, Window(T0, T0 + 2 * HOUR))
    assert [o.key.uid for o in early] == ["soon"]
    assert await engine.occurrences(calendar.id, owner="alice") == every


async def test_occurrences_of_someone_elses_calendar_are_not_found(
    engine: Engine, feeds: FeedServer
) -> None:
    calendar = await engine.add_calendar(feeds.url("/a.ics"), owner="alice")
    with pytest.raises(CalendarNotFound):
        await engine.occurrences(calendar.id, owner="bob")
    with pytest.raises(CalendarNotFound):
        await engine.occurrences("no-such-calendar")


async def test_reseal_secrets_counts_the_calendars_it_sealed(
    tmp_path: Path, clock: ManualClock
) -> None:
    database = tmp_path / "calsync.db"
    async with Engine(SQLiteStore(database), clock=clock) as engine:
        await engine.add_calendar("https://example.com/a.ics?token=s3cret")
    store = SQLiteStore(database, secret_keys=[Fernet.generate_key().decode()])
    async with Engine(store, clock=clock, settings=settings()) as engine:
        assert await engine.reseal_secrets() == 1


async def test_reseal_secrets_is_refused_by_a_store_that_keeps_nothing_on_disk(
    clock: ManualClock,
) -> None:
    async with Engine(MemoryStore(), clock=clock) as engine:
        with pytest.raises(ValidationError, match="nothing on disk"):
            await engine.reseal_secrets()
