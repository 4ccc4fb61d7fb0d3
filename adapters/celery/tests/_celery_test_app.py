"""The Celery app the tests' worker and beat processes run (``celery -A`` this).

Configured from environment variables set by the `cluster` fixture: the broker,
a queue and key prefix of the test's own, the PostgreSQL schema of the store.
Its handler inserts every delivery into ``deliveries`` (no unique key), so a
test can count duplicates. Every task a worker starts is traced to a file.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import psycopg
from celery import Celery, signals

import calsync
from calsync_celery import install

POSTGRES_URL = os.environ["CALSYNC_TEST_POSTGRES_URL"]
# The store's way to PostgreSQL; a test may route it through a proxy it controls.
STORE_URL = os.environ.get("CALSYNC_CELERY_STORE_URL", POSTGRES_URL)
SCHEMA = os.environ["CALSYNC_CELERY_SCHEMA"]
TRACE = os.environ["CALSYNC_CELERY_TRACE"]

app = Celery("calsync_celery_tests", broker=os.environ["CALSYNC_CELERY_BROKER"])
app.conf.update(
    task_default_queue=os.environ["CALSYNC_CELERY_QUEUE"],
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=True,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        # Redis only: redeliver a dead node's unacked tasks after 10 s (not 1 h),
        # and look for them every second.
        "visibility_timeout": 10,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "global_keyprefix": os.environ["CALSYNC_CELERY_PREFIX"],
    },
)


def engine_factory() -> calsync.Engine:
    with open(f"{TRACE}.engines", "a", encoding="utf-8") as file:
        file.write(f"{os.getpid()}\n")  # one line per Engine made
    store = calsync.PostgresStore(STORE_URL, schema=SCHEMA, max_size=4)
    fetcher = calsync.HttpFetcher(allow=["127.0.0.1"])
    settings = calsync.Settings(per_host_rate=None, per_host_concurrency=16)
    return calsync.Engine(store, fetcher, settings=settings)


async def record(delivery: calsync.Delivery) -> None:
    """Deliver by inserting a row: a duplicate delivery is a second row.

    The row names the process and the event loop the Engine called it on.
    """
    loop = id(asyncio.get_running_loop())
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as connection:
        await connection.execute(
            f'INSERT INTO "{SCHEMA}".deliveries (id, attempt, pid, loop) '
            "VALUES (%s, %s, %s, %s)",
            (delivery.id, delivery.attempt, os.getpid(), loop),
        )


triggers = calsync.Triggers(
    sync_due=os.environ.get("CALSYNC_CELERY_SYNC_DUE", "every 2s"),
    check_notifications=os.environ.get("CALSYNC_CELERY_CHECK", "every 5s"),
    dispatch_notifications="every 2s",
    cleanup="daily 03:00",
)
tasks = install(app, engine_factory, handler=record, schedules=triggers)


@signals.task_prerun.connect
def trace(task_id: str, task: Any, args: Any, kwargs: Any, **_: Any) -> None:
    """Append which process of which node starts which task (one JSON line)."""
    line = {
        "pid": os.getpid(),
        "node": task.request.hostname,
        "task": task.name,
        "id": task_id,
        "retries": task.request.retries,
        "args": list(args or ()),
        "kwargs": dict(kwargs or {}),
    }
    with open(TRACE, "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
