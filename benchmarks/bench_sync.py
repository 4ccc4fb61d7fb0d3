"""Benchmark: re-syncing a big changed feed through the Engine, against a whole parse.

The Google export (tests/corpus, 4,778 VEVENTs, 1.6 MB) is stored in a calendar
(SQLite, and PostgreSQL when CALSYNC_TEST_POSTGRES_URL or --postgres-url is
set), then re-synced by `Engine.sync_calendar` (fetch from a loopback aiohttp
server in this process, parse through the calendar's cache in a parse worker,
diff, guard, reminders, one store write). The virtual clock moves 15 minutes
before every sync, as it does in service, so every sync's window has slid.
Cases, each against a whole `parse_ics` (no cache) of the same body and window:

  1 % edited     a new 1 % of the events edited (summary), new ETag;
  one event      one more event edited, new ETag;
  window slid    the same body, fetched and parsed again (``force=True``: what
                 the Engine does once ``reparse_after`` has passed);
  new ETag       nothing changed but the body is re-served with a new ETag.

Cases alternate run by run with their whole parse, so machine noise hits both
alike; printed: min / median / max milliseconds of wall time and the ratio of
the medians; and the median CPU time (the re-sync's: this process, which also
serves the feed, plus the parse worker's; not the PostgreSQL server's),
steadier than wall time on a loaded machine.

    python benchmarks/bench_sync.py [--runs 7] [--backends sqlite,postgres]
        [--profile CASE]

``--profile CASE`` prints cProfile's top functions of that case's syncs (with
parse isolation off, so the parse shows up in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import re
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from calsync import Engine, HttpFetcher, PostgresStore, Settings, SQLiteStore, Store
from calsync.core.model import Window
from calsync.core.parse import parse_ics
from calsync.testing import ManualClock

GOOGLE = (
    Path(__file__).resolve().parent.parent
    / "tests/corpus/recurring-ical-events/benchmark-google-export-issue42.ics"
)
START = datetime(2011, 1, 1, tzinfo=UTC)
PAST, HORIZON = timedelta(days=366), timedelta(days=3650)
STEP = timedelta(minutes=15)
TARGETS = {"1 % edited": 10.0, "one event": 30.0, "window slid": 8.0, "new ETag": 50.0}


Samples = dict[str, dict[str, list[float]]]


class Feed:
    """One feed on a loopback aiohttp server; the ETag is set by the benchmark."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.etag = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def serve(self, body: bytes) -> None:
        """Serve ``body`` under a new ETag (the same body too)."""
        self.body = body
        self.etag += 1

    async def _answer(self, request: web.Request) -> web.Response:
        etag = f'"v{self.etag}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=self.body, headers={"ETag": etag, "Content-Type": "text/calendar"}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/google.ics", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/google.ics"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def edit(body: bytes, count: int, rng: random.Random, mark: str) -> bytes:
    """Prefix ``mark`` to the SUMMARY of ``count`` random events."""
    starts = [m.end() for m in re.finditer(rb"(?m)^SUMMARY[^:\r\n]*:", body)]
    for at in sorted(rng.sample(starts, count), reverse=True):
        body = body[:at] + mark.encode() + b" " + body[at:]
    return body


async def bench_backend(store: Store, runs: int, profile: str | None) -> Samples:
    """Per case, seconds of the re-sync and the whole parse, wall and CPU."""
    base = GOOGLE.read_bytes()
    events = len(re.findall(rb"(?m)^BEGIN:VEVENT", base))
    clock = ManualClock(START)
    settings = Settings(worker="bench-sync", parse_isolation=profile is None)
    feed = Feed(base)
    await feed.start()
    rng = random.Random(1)
    samples: Samples = {name: {} for name in TARGETS}
    profiler = cProfile.Profile()
    if profile is not None:
        # Parse inline, so the profile sees it (a thread's calls are not profiled).
        async def inline(function: Callable[..., object], *args: object) -> object:
            return function(*args)

        asyncio.to_thread = inline  # type: ignore[assignment]
    try:
        async with Engine(
            store, HttpFetcher(allow=["127.0.0.1"]), settings=settings, clock=clock
        ) as engine:
            calendar = await engine.add_calendar(
                feed.url, name="google", window_past=PAST, horizon=HORIZON
            )
            first = await engine.sync_calendar(calendar.id)
            assert first.error is None, first.error
            print(f"  first sync: {first.added:,} occurrences stored", flush=True)
            # Warm up: the parse worker and its cache, one slid re-parse.
            clock.advance(STEP)
            await engine.sync_calendar(calendar.id, force=True)
            body = base

            def cpu() -> float:
                pool = engine._syncer.parse_pool
                workers = [] if pool is None else pool.pids()
                return time.process_time() + sum(map(cpu_seconds, workers))

            async def case(
                name: str, new_body: bytes, sync: Callable[[], Awaitable[object]]
            ) -> None:
                window = Window(clock() + STEP - PAST, clock() + STEP + HORIZON)
                started, cpu_started = time.perf_counter(), time.process_time()
                parse_ics(new_body, window)
                whole = time.perf_counter() - started
                whole_cpu = time.process_time() - cpu_started
                clock.advance(STEP)
                feed.serve(new_body)
                if profile == name:
                    profiler.enable()
                started, cpu_started = time.perf_counter(), cpu()
                result = await sync()
                took, took_cpu = time.perf_counter() - started, cpu() - cpu_started
                if profile == name:
                    profiler.disable()
                assert getattr(result, "error", None) is None, result
                for key, value in (
                    ("sync", took),
                    ("whole", whole),
                    ("sync cpu", took_cpu),
                    ("whole cpu", whole_cpu),
                ):
                    samples[name].setdefault(key, []).append(value)

            for run in range(runs):
                body = edit(body, max(1, events // 100), rng, f"a{run}")
                await case(
                    "1 % edited", body, lambda: engine.sync_calendar(calendar.id)
                )
                body = edit(body, 1, rng, f"b{run}")
                await case("one event", body, lambda: engine.sync_calendar(calendar.id))
                await case(
                    "window slid",
                    body,
                    lambda: engine.sync_calendar(calendar.id, force=True),
                )
                await case("new ETag", body, lambda: engine.sync_calendar(calendar.id))
    finally:
        await feed.stop()
    if profile is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
    return samples


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a single-threaded process (/proc/<pid>/schedstat, in ns)."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0]) / 1e9


def spread(seconds: list[float]) -> str:
    low, middle, high = min(seconds), statistics.median(seconds), max(seconds)
    return f"{low * 1e3:.0f} / {middle * 1e3:.0f} / {high * 1e3:.0f}"


def table(name: str, runs: int, samples: Samples) -> None:
    print(
        f"\n{name}: re-sync through the Engine against a whole parse_ics of the "
        f"same body; wall ms (min / median / max of {runs}, interleaved), median "
        "CPU ms"
    )
    print(
        f"{'case':<13}{'re-sync':>20}{'whole parse':>22}{'ratio':>9}  target"
        f"{'':>14}{'cpu re-sync':>12}{'whole':>7}{'ratio':>9}"
    )
    for case, rows in samples.items():
        sync, whole = rows["sync"], rows["whole"]
        ratio = statistics.median(whole) / statistics.median(sync)
        verdict = "ok" if ratio >= TARGETS[case] else "BELOW"
        cpu, whole_cpu = (statistics.median(rows[k]) for k in ("sync cpu", "whole cpu"))
        target = f">= {TARGETS[case]:g}x {verdict}"
        print(
            f"{case:<13}{spread(sync):>20}{spread(whole):>22}{ratio:>8.1f}x  "
            f"{target:<12}{cpu * 1e3:>14.0f}{whole_cpu * 1e3:>7.0f}"
            f"{whole_cpu / cpu:>8.1f}x"
        )


async def drop_schema(url: str, schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("CALSYNC_TEST_POSTGRES_URL")
    )
    parser.add_argument("--profile", choices=sorted(TARGETS), default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(
        f"input: {GOOGLE.name}, window {PAST.days} days back, {HORIZON.days} ahead "
        f"of {START:%Y-%m-%d} (+15 min a sync)"
    )
    results = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as directory:
                store = SQLiteStore(str(Path(directory) / "bench-sync.db"))
                print("sqlite:", flush=True)
                results[backend] = await bench_backend(store, args.runs, args.profile)
        elif backend == "postgres" and args.postgres_url:
            schema = f"calsync_bench_{uuid.uuid4().hex[:8]}"
            try:
                print("postgres:", flush=True)
                results[backend] = await bench_backend(
                    PostgresStore(args.postgres_url, schema=schema),
                    args.runs,
                    args.profile,
                )
            finally:
                await drop_schema(args.postgres_url, schema)
    for backend, samples in results.items():
        table(backend, args.runs, samples)


if __name__ == "__main__":
    asyncio.run(main())
