"""Fixtures: a real AsyncIOScheduler, a real Engine on a real store, real feeds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC
from pathlib import Path

import pytest
from _aps_support import Executions, Recorder
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from calsync import Engine, HttpFetcher, Settings, SQLiteStore, Store
from calsync.testing import FeedServer, disposable_postgres

POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL to test against",
)


@pytest.fixture
async def feeds() -> AsyncIterator[FeedServer]:
    async with FeedServer() as server:
        yield server


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=needs_postgres),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A real store, unopened: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield SQLiteStore(tmp_path / "calsync.db")
        return
    assert POSTGRES_URL is not None
    async with disposable_postgres(POSTGRES_URL, prefix="calsync_aps") as store:
        yield store


@pytest.fixture
async def engine(store: Store) -> AsyncIterator[Engine]:
    """An Engine on the real clock (the scheduler's), allowed to fetch 127.0.0.1."""
    settings = Settings(worker="aps-test", per_host_rate=None)
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings) as engine:
        yield engine


@pytest.fixture
async def scheduler(engine: Engine) -> AsyncIterator[AsyncIOScheduler]:
    """A host's AsyncIOScheduler, not started; shut down before the Engine closes."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    try:
        yield scheduler
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await asyncio.sleep(0.2)  # the shutdown and the cancelled jobs settle


@pytest.fixture
def executions(scheduler: AsyncIOScheduler) -> Iterator[Executions]:
    listener = Executions()
    scheduler.add_listener(listener, EVENT_JOB_EXECUTED)
    yield listener
    scheduler.remove_listener(listener)
