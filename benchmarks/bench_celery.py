"""One ``calsync.sync_due`` fan-out over 1,000 calendars on Celery: 1 worker vs 2.

The feeds are small (10 events each) and every answer takes 50 ms, so a sync is
bound by latency, not CPU: more worker processes should mean proportionally
less wall time. Each worker node runs ``--pool prefork --concurrency 2``;
Redis is the broker, PostgreSQL the store. Measured: from sending
``calsync.sync_due`` (which leases the due calendars and sends one
``calsync.sync_calendar`` task per calendar) until all 1,000 calendars have a
successful sync recorded after it. Before each run every calendar is made due
again (``request_sync``); the feeds are unchanged, so they answer 304. The two
configurations are measured alternately, fresh worker processes each time,
median of --runs each; target: 2 workers >= 1.7x faster than 1.

    python benchmarks/bench_celery.py [--postgres-url URL] [--redis-url URL]
        [--runs 3] [--calendars 1000]

This file is also the workers' Celery app (``celery -A bench_celery``), set up
from the environment the benchmark passes them.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import redis
from celery import Celery

import calsync
from benchkit import alternating, spread
from benchkit import table as table_of
from calsync.testing import FeedServer

EVENTS = 10
LATENCY = 0.05
CONCURRENCY = 2
NODES = (1, 2)
TARGET_RATIO = 1.7
SPAWN = multiprocessing.get_context("spawn")
HERE = Path(__file__).resolve().parent


# -- the workers' app ---------------------------------------------------------


def worker_engine() -> calsync.Engine:
    store = calsync.PostgresStore(
        os.environ["CALSYNC_BENCH_POSTGRES_URL"],
        schema=os.environ["CALSYNC_BENCH_SCHEMA"],
        max_size=2,
    )
    settings = calsync.Settings(per_host_rate=None, per_host_concurrency=64)
    return calsync.Engine(
        store, calsync.HttpFetcher(allow=["127.0.0.1"]), settings=settings
    )


def make_app(broker: str, queue: str, prefix: str) -> Celery:
    app = Celery("bench_celery", broker=broker)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_transport_options={"global_keyprefix": prefix},
    )
    return app


if "CALSYNC_BENCH_SCHEMA" in os.environ:
    from calsync_celery import install

    app = make_app(
        os.environ["CALSYNC_BENCH_REDIS_URL"],
        os.environ["CALSYNC_BENCH_QUEUE"],
        os.environ["CALSYNC_BENCH_PREFIX"],
    )
    install(app, worker_engine, handler=calsync.LoggingHandler())


# -- the feeds, served from a process of their own ----------------------------


def feed_body(index: int, base: datetime) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:-//calsync bench//{index}//EN"]
    for n in range(EVENTS):
        start = base + timedelta(days=n + 1, minutes=index % 60)
        lines += [
            "BEGIN:VEVENT",
            f"UID:c{index}-e{n}@bench.calsync",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
            "DURATION:PT45M",
            f"SUMMARY:Meeting {n} of team {index}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def serve(calendars: int, base: datetime, control: Connection) -> None:
    asyncio.run(_serve(calendars, base, control))


async def _serve(calendars: int, base: datetime, control: Connection) -> None:
    async with FeedServer() as server:
        for index in range(calendars):
            server.set(f"/{index}.ics", feed_body(index, base))
            server.delay(f"/{index}.ics", LATENCY)
        control.send(server.url("/"))
        await asyncio.get_running_loop().run_in_executor(None, control.recv)


# -- worker nodes ---------------------------------------------------------------


class Nodes:
    """``count`` worker nodes, each a process group of its own."""

    def __init__(self, count: int, env: dict[str, str], folder: Path) -> None:
        self.processes = []
        for number in range(count):
            log = (folder / f"worker-{count}-{number}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "bench_celery",
                        "worker",
                        "--pool",
                        "prefork",
                        "--concurrency",
                        str(CONCURRENCY),
                        "-n",
                        f"bench{number}-{env['CALSYNC_BENCH_QUEUE']}@%h",
                        "-Q",
                        env["CALSYNC_BENCH_QUEUE"],
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "--loglevel",
                        "WARNING",
                    ],
                    cwd=HERE,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()

    def wait_ready(self, app: Celery) -> None:
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=0.5)) < len(self.processes):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker nodes did not start; see their logs")

    def stop(self) -> None:
        for process in self.processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# -- measuring --------------------------------------------------------------------


async def synced_since(engine: calsync.Engine, since: datetime) -> list[datetime]:
    calendars = await engine.list_calendars()
    return [
        c.state.last_success_at
        for c in calendars
        if c.state.last_success_at is not None and c.state.last_success_at >= since
    ]


async def fan_out(engine: calsync.Engine, app: Celery, calendars: int) -> float:
    """Send sync_due; return seconds until the last calendar's success."""
    sent = datetime.now(UTC)
    app.send_task("calsync.sync_due")
    deadline = time.monotonic() + 600
    while len(done := await synced_since(engine, sent)) < calendars:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(done)} of {calendars} synced in 600 s")
        await asyncio.sleep(0.2)
    return (max(done) - sent).total_seconds()


async def run(args: argparse.Namespace, folder: Path) -> dict[int, list[float]]:
    run_id = uuid.uuid4().hex[:8]
    schema = f"calsync_bench_celery_{run_id}"
    queue = f"calsync-bench-{run_id}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "CALSYNC_BENCH_POSTGRES_URL": args.postgres_url,
        "CALSYNC_BENCH_REDIS_URL": args.redis_url,
        "CALSYNC_BENCH_SCHEMA": schema,
        "CALSYNC_BENCH_QUEUE": queue,
        "CALSYNC_BENCH_PREFIX": f"{queue}:",
    }
    app = make_app(args.redis_url, queue, f"{queue}:")
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    control, server_end = SPAWN.Pipe()
    server = SPAWN.Process(target=serve, args=(args.calendars, base, server_end))
    server.start()
    base_url = control.recv()
    walls: dict[int, list[float]] = {count: [] for count in NODES}
    store = calsync.PostgresStore(args.postgres_url, schema=schema)
    fetcher = calsync.HttpFetcher(allow=["127.0.0.1"])
    try:
        async with calsync.Engine(store, fetcher) as engine:
            ids = [
                (await engine.add_calendar(f"{base_url}{index}.ics")).id
                for index in range(args.calendars)
            ]
            # The first run warms up; which configuration goes first alternates.
            for number, order in alternating(NODES, args.runs + 1):
                for count in order:
                    for calendar_id in ids:
                        await engine.request_sync(calendar_id)
                    nodes = Nodes(count, env, folder)
                    try:
                        await asyncio.to_thread(nodes.wait_ready, app)
                        wall = await fan_out(engine, app, args.calendars)
                    finally:
                        await asyncio.to_thread(nodes.stop)
                    label = "warm-up" if number == 0 else f"run {number}"
                    print(f"  {label}, {count} worker(s): {wall:.2f} s", flush=True)
                    if number:
                        walls[count].append(wall)
    finally:
        control.send("stop")
        server.join()
        app.close()
        with redis.Redis.from_url(args.redis_url) as client:
            for key in client.scan_iter(f"{queue}:*"):
                client.delete(key)
        await drop_schema(args.postgres_url, schema)
    return walls


async def drop_schema(url: str, schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def table(args: argparse.Namespace, walls: dict[int, list[float]]) -> None:
    print(
        f"\none calsync.sync_due fan-out over {args.calendars:,} calendars "
        f"({EVENTS} events, {LATENCY * 1000:.0f} ms per answer), Redis broker, "
        f"PostgreSQL store, prefork --concurrency {CONCURRENCY} per worker, "
        f"min / median / max of {args.runs} runs, alternating"
    )
    rows = [
        [
            str(count),
            str(count * CONCURRENCY),
            spread(walls[count], digits=3),
            f"{args.calendars / statistics.median(walls[count]):.1f}",
        ]
        for count in NODES
    ]
    table_of(["workers", "processes", "wall s", "calendars/s (median)"], rows)
    ratio = statistics.median(walls[1]) / statistics.median(walls[2])
    paired = [one / two for one, two in zip(walls[1], walls[2], strict=True)]
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"1 worker / 2 workers: {ratio:.2f}x, run by run {spread(paired, digits=2)} "
        f"(target >= {TARGET_RATIO}x: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--postgres-url", default=os.environ.get("CALSYNC_TEST_POSTGRES_URL")
    )
    parser.add_argument("--redis-url", default=os.environ.get("CALSYNC_TEST_REDIS_URL"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calendars", type=int, default=1000)
    args = parser.parse_args()
    if not args.postgres_url or not args.redis_url:
        missing = [
            name
            for name, url in (
                ("CALSYNC_TEST_POSTGRES_URL", args.postgres_url),
                ("CALSYNC_TEST_REDIS_URL", args.redis_url),
            )
            if not url
        ]
        print(f"skipped bench_celery: {' and '.join(missing)} not set (nor given)")
        return
    with tempfile.TemporaryDirectory() as folder:
        walls = asyncio.run(run(args, Path(folder)))
    table(args, walls)


if __name__ == "__main__":
    main()
