"""The Engine's reads for operators: dead letters by page and owner, job history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from _feeds import event, ics
from _web import T0, FlakyHandler, sqlite_engine
from calsync import Engine, ValidationError
from calsync.testing import FeedServer, ManualClock


@pytest.fixture
async def failed(
    tmp_path: Path,
) -> AsyncIterator[tuple[Engine, dict[str, str], FlakyHandler]]:
    """Three failed reminders of alice and two of bob, by fire time."""
    clock = ManualClock(T0)
    handler = FlakyHandler()
    async with FeedServer() as feeds, sqlite_engine(tmp_path, clock) as engine:
        owners = {}
        for owner, count in (("alice", 3), ("bob", 2)):
            starts = [T0 + timedelta(minutes=12 + n) for n in range(count)]
            feeds.set(
                f"/{owner}.ics",
                ics(*(event(f"{owner}-{n}", s) for n, s in enumerate(starts))),
            )
            calendar = await engine.add_calendar(
                feeds.url(f"/{owner}.ics"), owner=owner
            )
            owners[owner] = calendar.id
            await engine.sync_calendar(calendar.id)
        clock.advance(timedelta(minutes=6))
        await engine.check_notifications()
        await engine.dispatch_notifications(handler)
        yield engine, owners, handler


async def test_dead_letters_come_in_pages_by_fire_time(
    failed: tuple[Engine, dict[str, str], FlakyHandler],
) -> None:
    engine, _, _ = failed
    first = await engine.dead_letters(limit=2)
    rest = await engine.dead_letters(offset=2, limit=10)
    everything = [*first, *rest]
    assert len(everything) == 5
    assert [r.fire_at for r in everything] == sorted(r.fire_at for r in everything)
    assert {r.status for r in everything} == {"failed"}


async def test_dead_letters_of_one_owner_only(
    failed: tuple[Engine, dict[str, str], FlakyHandler],
) -> None:
    engine, owners, _ = failed
    bobs = await engine.dead_letters(owner="bob")
    assert {r.calendar_id for r in bobs} == {owners["bob"]}
    assert len(bobs) == 2


async def test_requeue_with_an_owner_leaves_other_owners_reminders(
    failed: tuple[Engine, dict[str, str], FlakyHandler],
) -> None:
    engine, owners, _ = failed
    everything = [r.id for r in await engine.dead_letters()]
    assert await engine.requeue(everything, owner="alice") == 3
    left = await engine.dead_letters()
    assert {r.calendar_id for r in left} == {owners["bob"]}


async def test_job_runs_are_the_history_newest_first_and_filtered(
    failed: tuple[Engine, dict[str, str], FlakyHandler],
) -> None:
    engine, _, _ = failed
    runs = await engine.job_runs()
    assert [run.job for run in runs][:2] == [
        "dispatch_notifications",
        "check_notifications",
    ]
    syncs = await engine.job_runs(job="sync_calendar", limit=1)
    assert [run.job for run in syncs] == ["sync_calendar"]
    with pytest.raises(ValidationError):
        await engine.job_runs(job="nap")


async def test_a_new_calendar_is_not_stale(tmp_path: Path) -> None:
    async with sqlite_engine(tmp_path) as engine:
        calendar = await engine.add_calendar("http://127.0.0.1/a.ics")
        assert engine.calendar_status(calendar).stale is False
