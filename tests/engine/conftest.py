"""Engine test fixtures: a real feed server, a real SQLite store, a manual clock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from _feeds import event as event  # re-exported for the tests here
from _feeds import ics as ics
from calsync import Delivery, Engine, HttpFetcher, Settings, SQLiteStore, Store
from calsync.testing import FeedServer, ManualClock, disposable_postgres

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@attrs.define
class Recorder:
    """A handler that records what it was given, failing the first ``fail`` calls."""

    fail: int = 0
    deliveries: list[Delivery] = attrs.Factory(list)
    calls: int = 0

    async def __call__(self, delivery: Delivery) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError(f"handler down (call {self.calls})")
        self.deliveries.append(delivery)

    @property
    def ids(self) -> list[str]:
        return [delivery.id for delivery in self.deliveries]


@pytest.fixture
async def feeds() -> AsyncIterator[FeedServer]:
    async with FeedServer() as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def settings(**changes: object) -> Settings:
    """Settings for tests: no per-host rate limit, a fixed worker name."""
    return Settings(worker="test-worker", per_host_rate=None, **changes)  # type: ignore[arg-type]


POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL to test against",
)


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
    async with disposable_postgres(POSTGRES_URL, prefix="calsync_engine") as store:
        yield store


@pytest.fixture
async def engine(store: Store, clock: ManualClock) -> AsyncIterator[Engine]:
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        yield engine
