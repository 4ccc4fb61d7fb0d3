"""Fixtures for the operator's surface: a real Engine on a SQLite file, feeds, HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import attrs
import pytest
from aiohttp import web

from calsync import Delivery, Engine, HttpFetcher, Settings, SQLiteStore
from calsync.testing import FeedServer, ManualClock

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@attrs.define
class Recorder:
    """A handler that records the deliveries it was given."""

    deliveries: list[Delivery] = attrs.Factory(list)

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)


@pytest.fixture
async def feeds() -> AsyncIterator[FeedServer]:
    async with FeedServer() as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def engine(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Engine]:
    store = SQLiteStore(tmp_path / "calsync.db")
    settings = Settings(worker="test-worker", per_host_rate=None)
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings, clock=clock) as engine:
        yield engine


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """GET ``url``: the status, the content type header and the body text."""
    headers = {} if accept is None else {"Accept": accept}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers) as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()
