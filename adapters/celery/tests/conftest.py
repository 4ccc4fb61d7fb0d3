"""Fixtures: real Celery workers and beat on a real broker, a PostgreSQL store, feeds.

The helpers live in `_celery_harness` (tests import them from there, since a
``conftest`` module name is shared with other test folders).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from _celery_harness import (
    BROKER_PARAMS,
    BROKERS,
    POSTGRES_URL,
    Cluster,
    Feeds,
    LatePostgres,
    Store,
)

import calsync
from calsync.testing import disposable_postgres


@pytest.fixture
async def feeds() -> AsyncIterator[Feeds]:
    server = Feeds()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    if POSTGRES_URL is None:
        pytest.skip("CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL")
    async with disposable_postgres(POSTGRES_URL, prefix="calsync_celery") as store:
        fetcher = calsync.HttpFetcher(allow=["127.0.0.1"])
        async with calsync.Engine(store, fetcher) as engine:
            async with await psycopg.AsyncConnection.connect(
                POSTGRES_URL, autocommit=True
            ) as connection:
                await connection.execute(
                    f'CREATE TABLE "{store.schema}".deliveries '
                    "(id text NOT NULL, attempt integer, pid integer, loop bigint)"
                )
            yield Store(engine, store.schema)


@pytest.fixture
async def late_postgres() -> AsyncIterator[LatePostgres]:
    proxy = LatePostgres()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture(params=BROKER_PARAMS)
def cluster(
    request: pytest.FixtureRequest, store: Store, tmp_path: Path
) -> Iterator[Cluster]:
    url = BROKERS[request.param]
    assert url is not None
    nodes = Cluster(request.param, url, store.schema, tmp_path)
    nodes.purge()
    try:
        yield nodes
    finally:
        nodes.stop()
        print(nodes.logs())  # pytest shows it only when the test fails
        nodes.purge()
