"""Helpers for the web tests: a real server on 127.0.0.1 over a real SQLite store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
from aiohttp import web

from calsync import Delivery, Engine, HttpFetcher, Settings, SQLiteStore
from calsync.handlers import DeliveryError
from calsync.testing import ManualClock

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKEN = "test-token-0123456789"
FEED_SECRET = "feedsecret42"


def web_settings(**changes: object) -> Settings:
    """Settings for web tests: one delivery attempt, parsing in this process."""
    return Settings(  # type: ignore[arg-type]
        worker="web-test",
        per_host_rate=None,
        max_attempts=1,
        parse_isolation=False,
        **changes,
    )


@contextlib.asynccontextmanager
async def sqlite_engine(
    tmp_path: Path, clock: ManualClock | None = None
) -> AsyncIterator[Engine]:
    """An open Engine over a SQLite file that fetches from 127.0.0.1 only."""
    engine = Engine(
        SQLiteStore(tmp_path / "web.db"),
        HttpFetcher(allow=["127.0.0.1"], total_timeout=timedelta(seconds=10)),
        settings=web_settings(),
        clock=clock,
    )
    async with engine:
        yield engine


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@attrs.define
class FlakyHandler:
    """A handler that refuses every delivery until ``up``, then records them."""

    up: bool = False
    delivered: list[str] = attrs.Factory(list)

    async def __call__(self, delivery: Delivery) -> None:
        if not self.up:
            raise DeliveryError("receiver is down", permanent=True)
        self.delivered.append(delivery.id)
