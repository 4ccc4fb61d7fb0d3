"""What calsync's Prometheus metrics cost: a scrape of 10,000 calendars, and a cycle.

Section ``scrape``: ``GET /metrics`` over HTTP (aiohttp client to the routes of
`calsync.observe.add_routes`, on 127.0.0.1) with --calendars calendars (10,000)
in a SQLite store, each with a last success (so each has its own
``calsync_feed_last_success_timestamp_seconds`` series), a tenth failing.
Measured: the first scrape (it reads the store), then --runs scrapes served from
the snapshot (as Prometheus asks, OpenMetrics), alternating with the store read
a scrape starts in the background once the snapshot is older than ``max_age``
(`Metrics.refresh`: read and pre-render, measured on its own). Target: a scrape
< 200 ms (median).

Section ``cycle``: one `Engine.sync_due` cycle over --cycle-calendars
calendars (1,000) whose feeds are unchanged (every one answers 304; the feed
server runs in a process of its own), without metrics (A) and with a `Metrics`
observing the Engine (B), alternating A and B for --runs pairs. Reported: wall
and CPU time, min / median / max, and B / A of the medians; and the listener's
own time on each B cycle's result (what the metrics add, measured directly:
steadier than the difference of two noisy cycles), as a share of the cycle's
wall and CPU time. Target: metrics < 3 % of the cycle's CPU time (the stricter).

    python benchmarks/bench_metrics.py [--calendars 10000] [--cycle-calendars 1000]
        [--runs 9] [--only scrape,cycle]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from calsync import Engine, HttpFetcher, Settings, SQLiteStore
from calsync.engine.results import JobResult
from calsync.observe import Metrics, add_routes
from calsync.stores.records import Calendar, JobRun, SyncState
from calsync.testing import FeedServer

SCRAPE_TARGET = 0.200
COST_TARGET = 0.03
SPAWN = multiprocessing.get_context("spawn")
# What Prometheus 2.x sends: it gets OpenMetrics.
PROMETHEUS = {
    "Accept": "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
}


def spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """min / median / max of ``values`` times ``scale``."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return " / ".join(f"{value * scale:.{digits}f}" for value in (low, mid, high))


# -- scrape --------------------------------------------------------------------


async def seed(store: SQLiteStore, calendars: int) -> None:
    """Store the calendars through the Store API, a batch at a time."""
    now = datetime.now(UTC)
    batch = 250
    for start in range(0, calendars, batch):
        stored = []
        for index in range(start, min(start + batch, calendars)):
            failing = index % 10 == 0
            state = SyncState(
                last_success_at=now - timedelta(minutes=index % 60),
                last_attempt_at=now,
                consecutive_failures=1 if failing else 0,
                last_error="HTTP 500" if failing else None,
                next_sync_at=now + timedelta(minutes=15),
            )
            calendar = Calendar(
                url=f"https://feeds.example/{index}.ics",
                created_at=now - timedelta(days=1),
                name=f"team {index}",
                state=state,
            )
            stored.append(store.add_calendar(calendar))
        await asyncio.gather(*stored)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


async def bench_scrape(directory: Path, calendars: int, runs: int) -> bool:
    store = SQLiteStore(directory / "scrape.db")
    settings = Settings(worker="bench-scrape")
    async with Engine(store, settings=settings) as engine:
        started = time.perf_counter()
        await seed(store, calendars)
        print(
            f"  seeded {calendars:,} calendars in {time.perf_counter() - started:.0f} s"
        )
        metrics = Metrics(
            engine, registry=CollectorRegistry(), max_age=timedelta(days=1)
        )
        app = web.Application()
        await add_routes(app, engine, metrics=metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/metrics"
        sizes: list[int] = []
        try:
            async with aiohttp.ClientSession() as session:

                async def scrape() -> None:
                    async with session.get(url, headers=PROMETHEUS) as response:
                        assert response.status == 200
                        sizes.append(len(await response.read()))

                first = await timed(scrape)
                scrapes, reads = [], []
                for _ in range(runs):
                    scrapes.append(await timed(scrape))
                    reads.append(await timed(metrics.refresh))
        finally:
            await runner.cleanup()
            metrics.close()
    median = statistics.median(scrapes)
    verdict = "ok" if median < SCRAPE_TARGET else "ABOVE TARGET"
    print(f"\nscrape: GET /metrics with {calendars:,} calendars, {runs} runs (ms)")
    print(f"{'what':<40}{'min / median / max':>26}")
    print(f"{'first scrape (reads the store)':<40}{first * 1000:>26.1f}")
    print(f"{'scrape (served from the snapshot)':<40}{spread(scrapes, 1000):>26}")
    print(f"{'store read (Metrics.refresh, background)':<40}{spread(reads, 1000):>26}")
    print(f"response: {sizes[-1] / 1024:.0f} KiB")
    print(f"scrape median {median * 1000:.1f} ms, target < 200 ms: {verdict}")
    return median < SCRAPE_TARGET


# -- cycle ---------------------------------------------------------------------


def feed_body(index: int) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calsync bench//EN"]
    for n in range(20):
        lines += [
            "BEGIN:VEVENT",
            f"UID:c{index}-e{n}@bench.calsync",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART:202701{1 + n % 28:02d}T{8 + n % 10:02d}0000Z",
            "DURATION:PT30M",
            f"SUMMARY:Meeting {n}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def serve(calendars: int, control: Connection) -> None:
    """The feed server process: every feed with an ETag, so syncs get 304."""
    asyncio.run(_serve(calendars, control))


async def _serve(calendars: int, control: Connection) -> None:
    async with FeedServer() as server:
        for index in range(calendars):
            server.set(f"/{index}.ics", feed_body(index))
        control.send(server.url("/"))
        await asyncio.get_running_loop().run_in_executor(None, control.recv)


async def bench_cycle(directory: Path, calendars: int, runs: int) -> bool:
    parent, child = SPAWN.Pipe()
    server = SPAWN.Process(target=serve, args=(calendars, child))
    server.start()
    try:
        base_url = parent.recv()
        return await _cycles(directory, base_url, calendars, runs)
    finally:
        parent.send("stop")
        server.join(10)


async def _cycles(directory: Path, base_url: str, calendars: int, runs: int) -> bool:
    settings = Settings(
        worker="bench-cycle",
        per_host_rate=None,
        per_host_concurrency=64,
        sync_concurrency=32,
    )
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    store = SQLiteStore(directory / "cycle.db")
    async with Engine(store, fetcher, settings=settings) as engine:
        ids = [
            (await engine.add_calendar(f"{base_url}{index}.ics")).id
            for index in range(calendars)
        ]
        await engine.sync_due()  # first sync: bodies parsed, ETags stored
        wall: dict[str, list[float]] = {"A": [], "B": []}
        cpu: dict[str, list[float]] = {"A": [], "B": []}
        listener: list[float] = []
        for _ in range(runs):
            for arm in ("A", "B"):
                for calendar_id in ids:
                    await engine.request_sync(calendar_id)
                metrics = None
                if arm == "B":
                    metrics = Metrics(engine, registry=CollectorRegistry())
                    timing = _timing(engine, listener)
                cpu_started, started = time.process_time(), time.perf_counter()
                done = await engine.sync_due()
                wall[arm].append(time.perf_counter() - started)
                cpu[arm].append(time.process_time() - cpu_started)
                if metrics is not None:
                    timing()
                    metrics.close()
                assert done.counts.get("unchanged") == calendars, done.counts
    return _cycle_table(calendars, runs, wall, cpu, listener)


def _timing(engine: Engine, listener: list[float]) -> Callable[[], None]:
    """Time what a Metrics' listener does with the next sync_due result, again."""
    runs: list[tuple[JobRun, JobResult | None]] = []
    unsubscribe = engine.observe(lambda run, result: runs.append((run, result)))

    def replay() -> None:
        unsubscribe()
        replica = Metrics(engine, registry=CollectorRegistry())
        try:
            on_run = replica._instruments.on_run
            started = time.perf_counter()
            for run, result in runs:
                on_run(run, result)
            listener.append(time.perf_counter() - started)
        finally:
            replica.close()

    return replay


def _cycle_table(
    calendars: int,
    runs: int,
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
    listener: list[float],
) -> bool:
    print(
        f"\ncycle: sync_due over {calendars:,} unchanged calendars (all 304), "
        f"{runs} runs alternating A/B (s)"
    )
    print(f"{'arm':<28}{'wall min / median / max':>28}{'cpu min / median / max':>28}")
    for arm, name in (("A", "A: no metrics"), ("B", "B: with Metrics")):
        walls, cpus = spread(wall[arm], digits=3), spread(cpu[arm], digits=3)
        print(f"{name:<28}{walls:>28}{cpus:>28}")
    wall_ratio = statistics.median(wall["B"]) / statistics.median(wall["A"])
    cpu_ratio = statistics.median(cpu["B"]) / statistics.median(cpu["A"])
    share = statistics.median(listener) / statistics.median(wall["B"])
    cpu_share = statistics.median(listener) / statistics.median(cpu["B"])
    print(f"B / A medians: {wall_ratio:.3f}x wall, {cpu_ratio:.3f}x cpu")
    print(
        f"the metrics listener per cycle: {spread(listener, 1000, 2)} ms "
        f"= {share:.2%} of the cycle's median wall time, {cpu_share:.2%} of its CPU"
    )
    verdict = "ok" if cpu_share < COST_TARGET else "ABOVE TARGET"
    print(f"metrics cost {cpu_share:.2%} of a cycle's CPU, target < 3 %: {verdict}")
    return cpu_share < COST_TARGET


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calendars", type=int, default=10_000)
    parser.add_argument("--cycle-calendars", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--only", default="scrape,cycle")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="calsync-bench-metrics-") as name:
        directory = Path(name)
        if "scrape" in sections:
            await bench_scrape(directory, args.calendars, args.runs)
        if "cycle" in sections:
            await bench_cycle(directory, args.cycle_calendars, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
