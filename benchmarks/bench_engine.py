"""The Engine at work: a sync_due cycle over 1,000 calendars, and its re-parse.

Section ``cycles``: one `Engine.sync_due` cycle over 1,000 calendars on a local
feed server.

Each feed holds ~100 generated events (95 single ones, 5 weekly series in
Europe/Berlin). A third of the calendars answer 304 (ETag, unchanged), a third
answer 200 with the same body and no validators, a third change 1 % of their
events before the cycle (ETag, new body). Cycles measured, each in a fresh
process (so its memory is the cycle's own; parse caches start cold):

  mixed      the mix above;
  unchanged  nothing changed: every calendar answers 304 or the same body;
  forced     ``sync_due(force=True)``: every body fetched and parsed again.

Reported: median of --runs for wall time, CPU time (``time.process_time`` of
the engine's process; the feed server runs in a process of its own) and peak
RSS (``ru_maxrss`` of the fresh process after the cycle, and in brackets its
growth during the cycle: after minus before). The ratio of forced to unchanged
wall time has a target of >= 20x.

Section ``reparse``: the Engine's parse step (what a sync runs between fetch and
diff; parses isolated in worker processes) on the Google export (4,778 VEVENTs,
5,500 occurrences in its window 2010-2020), against an in-process `parse_ics` of
the same body and window, interleaved:

  cold       a calendar parsed for the first time, against `parse_ics` with a
             new `ParseCache`;
  unchanged  the same body again, against `parse_ics` with that body's cache;
  one event  one event's summary edited (bodies alternate), likewise;
  window slid  the same body, the clock 15 minutes later each time, likewise.

Reported: wall time, min / median / max of --reparse-runs (cold: a third of
them), and the ratio of the medians, target <= 1.1x for each; and the median CPU
time (the Engine's: its parse workers' plus its own process's), steadier than
wall time on a loaded machine.

Section ``many``: many small feeds (10 events each) in one runner process, the
Engine in a fresh process per run, the feeds from a server process of their own:

  first      the first `sync_due` cycle of never-synced calendars (every feed
             fetched, parsed in the parse workers, its occurrences and
             reminders stored), target <= 120 s for 10,000 feeds;
  unchanged  a cycle later (the clock 16 minutes on, every calendar due):
             two thirds answer 304, a third the same body without validators;
  floor      what an unchanged cycle cannot do without: the same requests
             alone (the HttpFetcher, same validators, same concurrency), plus
             one durable commit per batch of ``sync_concurrency`` calendars
             (a commit timed alone on the same store). Target: unchanged <=
             2x floor. Unchanged cycles and the floor's requests alternate.

Reported: min / median / max of --many-runs (each a fresh store) for wall time,
CPU time of the Engine's process and of its parse workers.

    python benchmarks/bench_engine.py [--only cycles,reparse,many]
        [--calendars 1000] [--runs 3] [--reparse-runs 15]
        [--feeds 1000] [--many-runs 3] [--unchanged-runs 3] [--postgres-url URL]

Section ``cycles`` also keeps one runner process (a fresh one, then kept) across
--runner-cycles cycles (a forced one, which parses every feed, then mixed ones),
as a service runs: its memory with the parse caches
and kept results it holds (PSS of the service and its parse workers after each
cycle, and the caches' size from `Engine.status()`), against their budget.

PostgreSQL is measured when CALSYNC_TEST_POSTGRES_URL (or --postgres-url) is set;
a line says so when it is not.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import attrs

from benchkit import alternating, spread
from benchkit import table as table_of
from calsync import Engine, HttpFetcher, PostgresStore, Settings, SQLiteStore, Store
from calsync.core.incremental import ParseCache
from calsync.core.model import Window
from calsync.core.parse import parse_ics
from calsync.engine.parsepool import _ZYGOTE
from calsync.testing import FeedServer, ManualClock

EVENTS = 100
SERIES = 5
SMALL_EVENTS = 10
FIRST_TARGET = 120.0  # seconds for 10,000 feeds
FLOOR_TARGET = 2.0
CYCLES = ("mixed", "unchanged", "forced")
KINDS = ("304", "same 200", "1 % changed")
TARGET_RATIO = 20.0
REPARSE_TARGET = 1.1
GOOGLE = (
    Path(__file__).resolve().parent.parent
    / "tests/corpus/recurring-ical-events/benchmark-google-export-issue42.ics"
)
SPAWN = multiprocessing.get_context("spawn")
# Cycles run in processes forked from a small server started before the load:
# a child inherits its parent's RSS as ru_maxrss, so it must not be the loader.
FRESH = multiprocessing.get_context("forkserver")


def engine_settings(worker: str) -> Settings:
    return Settings(
        worker=worker,
        per_host_rate=None,
        per_host_concurrency=64,
        sync_concurrency=32,
    )


# -- the feeds, served from a process of their own ---------------------------


def kind_of(index: int) -> str:
    return KINDS[index % 3]


def feed_body(index: int, base: datetime, edition: int, events: int = EVENTS) -> str:
    """Calendar ``index``'s feed; each edition edits one more event's summary.

    Of ``events`` events, one in twenty (at least one) is a weekly series.
    """
    series = max(1, events * SERIES // EVENTS)
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:-//calsync bench//calendar {index}//EN",
        f"X-WR-CALNAME:Team {index}",
    ]
    for n in range(events - series):
        start = base + timedelta(hours=13 * n, minutes=index % 60)
        summary = f"Meeting {n} of team {index}"
        if n < edition:
            summary += " (moved to room 5)"
        lines += [
            "BEGIN:VEVENT",
            f"UID:c{index}-e{n}@bench.calsync",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
            f"DTEND:{start + timedelta(minutes=45):%Y%m%dT%H%M%SZ}",
            f"SUMMARY:{summary}",
            "LOCATION:Room 4",
            "DESCRIPTION:Agenda in the team wiki.",
            "END:VEVENT",
        ]
    for n in range(series):
        lines += [
            "BEGIN:VEVENT",
            f"UID:c{index}-s{n}@bench.calsync",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART;TZID=Europe/Berlin:{base:%Y%m%d}T{9 + n:02d}0000",
            f"DTEND;TZID=Europe/Berlin:{base:%Y%m%d}T{9 + n:02d}3000",
            "RRULE:FREQ=WEEKLY;COUNT=20",
            f"SUMMARY:Weekly {n} of team {index}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def serve(
    calendars: int, base: datetime, control: Connection, events: int = EVENTS
) -> None:
    """The feed server process: "edition" commands change the changing third."""
    asyncio.run(_serve(calendars, base, control, events))


async def _serve(
    calendars: int, base: datetime, control: Connection, events: int
) -> None:
    loop = asyncio.get_running_loop()
    async with FeedServer() as server:
        edition = 0

        def publish() -> None:
            for index in range(calendars):
                if edition and kind_of(index) != "1 % changed":
                    continue
                server.set(
                    f"/{index}.ics",
                    feed_body(index, base, edition, events),
                    validators=kind_of(index) != "same 200",
                )

        publish()
        control.send(server.url("/"))
        while True:
            command = await loop.run_in_executor(None, control.recv)
            if command == "stop":
                control.send("stopped")
                return
            edition += 1
            publish()
            control.send("published")


# -- one measured cycle, in a fresh process -----------------------------------


def open_store(spec: tuple[str, str, str | None]) -> Store:
    name, target, url = spec
    if name == "sqlite":
        return SQLiteStore(target)
    assert url is not None
    return PostgresStore(url, schema=target)


def measure_cycle(
    spec: tuple[str, str, str | None], cycle: str, result: Connection
) -> None:
    result.send(asyncio.run(_measure_cycle(spec, cycle)))


async def _measure_cycle(
    spec: tuple[str, str, str | None], cycle: str
) -> dict[str, Any]:
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    settings = engine_settings(f"bench-{cycle}-{os.getpid()}")
    async with Engine(open_store(spec), fetcher, settings=settings) as engine:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_started = time.process_time()
        started = time.perf_counter()
        done = await engine.sync_due(force=cycle == "forced")
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "wall": wall,
        "cpu": cpu,
        # ru_maxrss is in KiB on Linux.
        "base_mb": rss_before / 1024,
        "peak_mb": rss_after / 1024,
        "rss_mb": (rss_after - rss_before) / 1024,
        "counts": done.counts,
        "not_modified": sum(r.not_modified for r in done.results),
        "errors": [r.error for r in done.results if r.error][:3],
    }


def in_fresh_process(spec: tuple[str, str, str | None], cycle: str) -> dict[str, Any]:
    receive, send = FRESH.Pipe(duplex=False)
    process = FRESH.Process(target=measure_cycle, args=(spec, cycle, send))
    process.start()
    outcome: dict[str, Any] = receive.recv()
    process.join()
    return outcome


# -- a long-running runner: its memory with the caches it keeps -----------------


def pss_mb(pid: int) -> float:
    """A process's proportional set size in MB (shared pages split between sharers)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_runner(spec: tuple[str, str, str | None], commands: Connection) -> None:
    asyncio.run(_run_runner(spec, commands))


async def _run_runner(spec: tuple[str, str, str | None], commands: Connection) -> None:
    """One Engine kept across cycles, as a runner is: report its memory after each."""
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    settings = engine_settings(f"bench-runner-{os.getpid()}")
    async with Engine(open_store(spec), fetcher, settings=settings) as engine:
        while (cycle := commands.recv()) != "stop":
            started = time.perf_counter()
            done = await engine.sync_due(force=cycle == "forced")
            wall = time.perf_counter() - started
            status = await engine.status()
            pool = engine._syncer.parse_pool
            helpers = [*(pool.pids() if pool else []), _ZYGOTE.pid]
            commands.send(
                {
                    "cycle": cycle,
                    "wall": wall,
                    "counts": done.counts,
                    "errors": [r.error for r in done.results if r.error][:3],
                    "service_mb": pss_mb(os.getpid()),
                    "workers_mb": sum(pss_mb(pid) for pid in helpers if pid),
                    "cache_mb": status.parse_cache_bytes / 2**20,
                    "budget_mb": status.parse_cache_budget / 2**20,
                    "cached": status.parse_cached,
                }
            )


async def bench_runner(
    spec: tuple[str, str, str | None],
    engine: Engine,
    server: Connection,
    ids: list[str],
    cycles: int,
) -> list[dict[str, Any]]:
    """Cycles in one long-running process (caches kept): forced, then mixed ones.

    The forced one parses every feed (as days of service would), filling the
    caches; each mixed one follows a new edition of the changing third.
    """
    commands, child_end = FRESH.Pipe()
    runner = FRESH.Process(target=run_runner, args=(spec, child_end))
    runner.start()
    rows = []
    try:
        for number in range(cycles):
            server.send("edition")
            assert server.recv() == "published"
            for calendar_id in ids:
                await engine.request_sync(calendar_id)
            commands.send("forced" if number == 0 else "mixed")
            row = await asyncio.to_thread(commands.recv)
            assert not row["errors"], row["errors"]
            rows.append(row)
            print(
                f"  {spec[0]} runner cycle {len(rows)} {row['cycle']}: "
                f"{row['wall']:.2f} s, "
                f"{row['service_mb'] + row['workers_mb']:.0f} MB",
                flush=True,
            )
    finally:
        commands.send("stop")
        runner.join()
    return rows


def runner_table(name: str, calendars: int, rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{name}: one runner process kept across {len(rows)} cycles over "
        f"{calendars:,} calendars (parse caches kept; budget "
        f"{rows[0]['budget_mb']:.0f} MiB); memory as PSS after each cycle, MB"
    )
    table_of(
        ["cycle", "wall s", "service", "parse workers", "runner", "caches", "cached"],
        [
            [
                f"{number} {row['cycle']}",
                f"{row['wall']:.2f}",
                f"{row['service_mb']:.0f}",
                f"{row['workers_mb']:.0f}",
                f"{row['service_mb'] + row['workers_mb']:.0f}",
                f"{row['cache_mb']:.1f}",
                str(row["cached"]),
            ]
            for number, row in enumerate(rows, 1)
        ],
    )


# -- driving ------------------------------------------------------------------


async def load(engine: Engine, base_url: str, calendars: int) -> list[str]:
    """Subscribe to every feed and sync them all once (not measured)."""
    ids = []
    for index in range(calendars):
        calendar = await engine.add_calendar(
            f"{base_url}{index}.ics", name=f"team {index}"
        )
        ids.append(calendar.id)
    started = time.perf_counter()
    done = await engine.sync_due()
    took = time.perf_counter() - started
    assert not done.failed, done.failed[:3]
    print(f"  loaded {calendars:,} calendars, first sync {took:.1f} s", flush=True)
    return ids


async def bench_backend(
    spec: tuple[str, str, str | None],
    server: Connection,
    base_url: str,
    calendars: int,
    runs: int,
    runner_cycles: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    results: dict[str, list[dict[str, Any]]] = {cycle: [] for cycle in CYCLES}
    async with Engine(
        open_store(spec), fetcher, settings=engine_settings("bench-loader")
    ) as engine:
        ids = await load(engine, base_url, calendars)
        for run, order in alternating(CYCLES, runs):
            for cycle in order:
                if cycle == "mixed":
                    server.send("edition")
                    assert server.recv() == "published"
                for calendar_id in ids:
                    await engine.request_sync(calendar_id)
                outcome = await asyncio.to_thread(in_fresh_process, spec, cycle)
                assert not outcome["errors"], outcome["errors"]
                assert outcome["counts"]["synced"] == calendars, outcome["counts"]
                results[cycle].append(outcome)
                print(
                    f"  {spec[0]} run {run + 1} {cycle}: {outcome['wall']:.2f} s "
                    f"{outcome['counts']}",
                    flush=True,
                )
        if runner_cycles:
            results["runner"] = await bench_runner(
                spec, engine, server, ids, runner_cycles
            )
    return results


def table(name: str, calendars: int, results: dict[str, list[dict[str, Any]]]) -> None:
    runs = len(results["mixed"])
    print(
        f"\n{name}: one sync_due cycle over {calendars:,} calendars "
        f"(~{EVENTS} events each), {runs} runs in turn (wall: min / median / max; "
        "the rest: medians)"
    )
    print(
        f"{'cycle':<11}{'wall s':>18}{'cpu s':>9}{'peak RSS MB':>13}{'(+cycle)':>10}"
        f"{'changed':>9}{'unchanged':>11}{'304':>6}"
    )
    for cycle in CYCLES:
        rows = results[cycle]
        wall = spread([row["wall"] for row in rows])
        cpu = statistics.median(row["cpu"] for row in rows)
        rss = statistics.median(row["rss_mb"] for row in rows)
        peak = statistics.median(row["peak_mb"] for row in rows)
        counts = rows[-1]["counts"]
        print(
            f"{cycle:<11}{wall:>18}{cpu:>9.2f}{peak:>13.1f}{rss:>+10.1f}"
            f"{counts.get('changed', 0):>9}{counts.get('unchanged', 0):>11}"
            f"{rows[-1]['not_modified']:>6}"
        )
    wall_ratio = _median_ratio(results, "wall")
    cpu_ratio = _median_ratio(results, "cpu")
    verdict = "ok" if wall_ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"forced / unchanged: {wall_ratio:.1f}x wall, {cpu_ratio:.1f}x cpu "
        f"(target >= {TARGET_RATIO:g}x wall: {verdict})"
    )


def _median_ratio(results: dict[str, list[dict[str, Any]]], key: str) -> float:
    forced = statistics.median(row[key] for row in results["forced"])
    unchanged = statistics.median(row[key] for row in results["unchanged"])
    return forced / unchanged


def backends(
    directory: Path, postgres_url: str | None
) -> Iterator[tuple[str, str, str | None]]:
    yield ("sqlite", str(directory / "bench-engine.db"), None)
    if not postgres_url:
        print("skipped PostgreSQL: CALSYNC_TEST_POSTGRES_URL is not set (nor given)")
    else:
        yield ("postgres", f"calsync_bench_{uuid.uuid4().hex[:8]}", postgres_url)


async def drop_schema(url: str, schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the re-parse of one big feed ----------------------------------------------


async def bench_reparse(runs: int) -> dict[str, list[float]]:
    """Alternate the Engine's parse and an in-process parse_ics; seconds by name."""
    body = GOOGLE.read_bytes()
    marker = b"SUMMARY:"
    at = body.index(marker) + len(marker)
    edited = body[:at] + b"edited " + body[at:]
    now = datetime(2011, 1, 1, tzinfo=UTC)
    past, horizon = timedelta(days=366), timedelta(days=3650)
    timings: dict[str, list[float]] = {}

    def timed(name: str, started: float, cpu: float) -> None:
        timings.setdefault(name, []).append(time.perf_counter() - started)
        timings.setdefault(f"{name} cpu", []).append(cpu)

    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(str(Path(directory) / "reparse.db"))
        fetcher = HttpFetcher(allow=["127.0.0.1"])
        settings = Settings(worker="bench-reparse", parse_isolation=True)
        engine = Engine(store, fetcher, settings=settings, clock=ManualClock(now))
        async with FeedServer() as feeds, engine:
            feeds.set("/google.ics", body)
            url = feeds.url("/google.ics")
            fetched = await fetcher.fetch(url)
            bodies = [fetched, attrs.evolve(fetched, body=edited)]
            syncer = engine._syncer
            syncer.prepare()

            def engine_cpu() -> float:
                pool = syncer.parse_pool
                assert pool is not None
                workers = sum(cpu_seconds(pid) for pid in pool.pids())
                return workers + time.process_time()

            async def engine_parse(
                name: str, calendar: Any, result: Any, at: datetime = now
            ) -> None:
                cpu = engine_cpu()
                started = time.perf_counter()
                parsed = await syncer._parse(calendar, result, at)
                timed(name, started, engine_cpu() - cpu)
                assert len(parsed.occurrences) > 5000, len(parsed.occurrences)

            def in_process(
                name: str, data: bytes, cache: ParseCache, at: datetime = now
            ) -> None:
                cpu = time.process_time()
                started = time.perf_counter()
                parse_ics(data, Window(at - past, at + horizon), cache=cache)
                timed(name, started, time.process_time() - cpu)

            async def calendar_named(name: str) -> Any:
                return await engine.add_calendar(
                    url, name=name, owner=name, window_past=past, horizon=horizon
                )

            steady = await calendar_named("steady")
            cache = ParseCache()

            async def both(
                run: int, ours: Callable[[], Awaitable[None]], alone: Callable[[], None]
            ) -> None:
                """One of each; the Engine goes first on even runs (A/B, then B/A)."""
                if run % 2:
                    alone()
                await ours()
                if not run % 2:
                    alone()

            for run in range(max(1, runs // 3)):
                fresh = await calendar_named(f"cold {run}")
                await both(
                    run,
                    partial(engine_parse, "cold engine", fresh, fetched),
                    partial(in_process, "cold in-process", body, ParseCache()),
                )
            await engine_parse("warm-up", steady, fetched)  # also starts both workers
            await engine_parse("warm-up", await calendar_named("other"), fetched)
            in_process("warm-up", body, cache)
            for run in range(runs):
                await both(
                    run,
                    partial(engine_parse, "unchanged engine", steady, fetched),
                    partial(in_process, "unchanged in-process", body, cache),
                )
            for run in range(runs):
                edition = bodies[(run + 1) % 2]
                await both(
                    run,
                    partial(engine_parse, "one event engine", steady, edition),
                    partial(in_process, "one event in-process", edition.body, cache),
                )
            for run in range(runs):
                later = now + (run + 1) * timedelta(minutes=15)
                await both(
                    run,
                    partial(engine_parse, "window slid engine", steady, fetched, later),
                    partial(in_process, "window slid in-process", body, cache, later),
                )
    return timings


def reparse_table(timings: dict[str, list[float]]) -> None:
    runs = len(timings["unchanged engine"])
    print(
        f"\nreparse: the Google export through the Engine (isolation on) against "
        f"in-process parse_ics, ms (min / median / max of {runs}, cold "
        f"{len(timings['cold engine'])})"
    )
    print(
        f"{'case':<12}{'engine':>22}{'in-process':>22}{'ratio':>8}"
        f"{'cpu engine':>12}{'in-process':>11}{'ratio':>8}  target (wall)"
    )
    for case in ("cold", "unchanged", "one event", "window slid"):
        engine = timings[f"{case} engine"]
        alone = timings[f"{case} in-process"]
        ratio = statistics.median(engine) / statistics.median(alone)
        cpu = statistics.median(timings[f"{case} engine cpu"])
        cpu_alone = statistics.median(timings[f"{case} in-process cpu"])
        verdict = "ok" if ratio <= REPARSE_TARGET else "ABOVE TARGET"
        print(
            f"{case:<12}{_spread(engine):>22}{_spread(alone):>22}{ratio:>7.2f}x"
            f"{cpu * 1e3:>12.0f}{cpu_alone * 1e3:>11.0f}{cpu / cpu_alone:>7.2f}x"
            f"  <= {REPARSE_TARGET:g}x {verdict}"
        )


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a single-threaded process, in ns (/proc/<pid>/schedstat)."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0]) / 1e9


def _spread(seconds: list[float]) -> str:
    low, middle, high = min(seconds), statistics.median(seconds), max(seconds)
    return f"{low * 1e3:.0f} / {middle * 1e3:.0f} / {high * 1e3:.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="cycles,reparse,many")
    parser.add_argument("--calendars", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reparse-runs", type=int, default=15)
    parser.add_argument("--runner-cycles", type=int, default=4)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--many-runs", type=int, default=3)
    parser.add_argument("--unchanged-runs", type=int, default=3)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("CALSYNC_TEST_POSTGRES_URL")
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if "reparse" in only:
        reparse_table(await bench_reparse(args.reparse_runs))
    if "cycles" in only:
        await bench_cycles(args)
    if "many" in only:
        await bench_many(args)


async def bench_cycles(args: argparse.Namespace) -> None:
    FRESH.set_forkserver_preload(["calsync"])
    multiprocessing.forkserver.ensure_running()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    base += timedelta(hours=2)
    control, server_end = SPAWN.Pipe()
    server = SPAWN.Process(target=serve, args=(args.calendars, base, server_end))
    server.start()
    base_url = control.recv()
    all_results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for spec in backends(Path(tmp), args.postgres_url):
                try:
                    all_results[spec[0]] = await bench_backend(
                        spec,
                        control,
                        base_url,
                        args.calendars,
                        args.runs,
                        args.runner_cycles,
                    )
                finally:
                    if spec[0] == "postgres":
                        assert spec[2] is not None
                        await drop_schema(spec[2], spec[1])
    finally:
        control.send("stop")
        control.recv()
        server.join()
    for name, results in all_results.items():
        if results["mixed"]:
            table(name, args.calendars, results)
        if results.get("runner"):
            runner_table(name, args.calendars, results["runner"])


# -- many small feeds: the first cycle, and the unchanged one against its floor --


def measure_many(
    spec: tuple[str, str, str | None], unchanged_runs: int, result: Connection
) -> None:
    result.send(asyncio.run(_measure_many(spec, unchanged_runs)))


async def _measure_many(
    spec: tuple[str, str, str | None], unchanged_runs: int
) -> dict[str, Any]:
    """The first cycle, then unchanged cycles alternating with their floor."""
    offset = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + offset[0]

    fetcher = HttpFetcher(allow=["127.0.0.1"])
    settings = engine_settings(f"bench-many-{os.getpid()}")
    outcome: dict[str, Any] = {"unchanged": [], "requests": []}
    async with Engine(
        open_store(spec), fetcher, settings=settings, clock=clock
    ) as engine:
        syncer = engine._syncer

        def worker_cpu() -> float:
            pool = syncer.parse_pool
            return sum(cpu_seconds(pid) for pid in pool.pids()) if pool else 0.0

        cpu = time.process_time()
        started = time.perf_counter()
        done = await engine.sync_due()
        outcome["first"] = time.perf_counter() - started
        outcome["first cpu"] = time.process_time() - cpu
        outcome["first workers"] = worker_cpu()
        outcome["first counts"] = done.counts
        outcome["errors"] = [r.error for r in done.results if r.error][:3]
        calendars = len(done.results)
        for run in range(unchanged_runs):
            offset[0] = (run + 1) * timedelta(minutes=16)  # every calendar due
            cpu = time.process_time()
            started = time.perf_counter()
            done = await engine.sync_due()
            outcome["unchanged"].append(time.perf_counter() - started)
            outcome.setdefault("unchanged cpu", []).append(time.process_time() - cpu)
            outcome["unchanged counts"] = done.counts
            outcome["errors"] += [r.error for r in done.results if r.error][:3]
            states = [c.state for c in await engine.list_calendars()]
            urls = [c.url for c in await engine.list_calendars()]
            outcome["requests"].append(
                await requests_alone(fetcher, urls, states, settings.sync_concurrency)
            )
        outcome["commit"] = await one_commit(engine.store)
        outcome["calendars"] = calendars
    return outcome


async def requests_alone(
    fetcher: HttpFetcher, urls: list[str], states: list[Any], concurrency: int
) -> float:
    """Seconds for the cycle's requests alone, as the cycle makes them."""
    pending = list(zip(urls, states, strict=True))

    async def work() -> None:
        while pending:
            url, state = pending.pop()
            await fetcher.fetch(url, etag=state.etag, last_modified=state.last_modified)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(work())
    return time.perf_counter() - started


async def one_commit(store: Store, runs: int = 50) -> float:
    """Median seconds of one durable write transaction (a job run recorded)."""
    from calsync.stores import JobRun

    seconds = []
    for _ in range(runs):
        now = datetime.now(UTC)
        started = time.perf_counter()
        await store.record_job_run(JobRun("bench", now, now, "ok"))
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def many_in_fresh_process(
    spec: tuple[str, str, str | None], unchanged_runs: int
) -> dict[str, Any]:
    receive, send = FRESH.Pipe(duplex=False)
    process = FRESH.Process(target=measure_many, args=(spec, unchanged_runs, send))
    process.start()
    outcome: dict[str, Any] = receive.recv()
    process.join()
    return outcome


async def add_calendars(
    spec: tuple[str, str, str | None], base_url: str, feeds: int
) -> None:
    """Subscribe a fresh store to every feed (not synced, not measured)."""
    settings = engine_settings("bench-many-loader")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(open_store(spec), fetcher, settings=settings) as engine:
        for index in range(feeds):
            await engine.add_calendar(f"{base_url}{index}.ics", name=f"team {index}")


async def bench_many(args: argparse.Namespace) -> None:
    FRESH.set_forkserver_preload(["calsync"])
    multiprocessing.forkserver.ensure_running()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    base += timedelta(hours=2)
    control, server_end = SPAWN.Pipe()
    server = SPAWN.Process(
        target=serve, args=(args.feeds, base, server_end, SMALL_EVENTS)
    )
    server.start()
    base_url = control.recv()
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            template = Path(tmp) / "template.db"
            started = time.perf_counter()
            await add_calendars(("sqlite", str(template), None), base_url, args.feeds)
            print(
                f"  subscribed {args.feeds:,} calendars in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            for run in range(args.many_runs):
                for spec in backends(Path(tmp), args.postgres_url):
                    if spec[0] == "sqlite":  # a copy of the never-synced template
                        shutil.copyfile(template, spec[1])
                    else:
                        await add_calendars(spec, base_url, args.feeds)
                    try:
                        outcome = await asyncio.to_thread(
                            many_in_fresh_process, spec, args.unchanged_runs
                        )
                    finally:
                        if spec[0] == "postgres":
                            assert spec[2] is not None
                            await drop_schema(spec[2], spec[1])
                        else:
                            Path(spec[1]).unlink()
                    assert not outcome["errors"], outcome["errors"]
                    assert outcome["calendars"] == args.feeds, outcome["first counts"]
                    results.setdefault(spec[0], []).append(outcome)
                    print(
                        f"  {spec[0]} run {run + 1}: first {outcome['first']:.1f} s, "
                        f"unchanged {_seconds(outcome['unchanged'])} s, requests "
                        f"alone {_seconds(outcome['requests'])} s",
                        flush=True,
                    )
    finally:
        control.send("stop")
        control.recv()
        server.join()
    concurrency = engine_settings("bench").sync_concurrency
    for name, outcomes in results.items():
        many_table(name, args.feeds, outcomes, concurrency)


def many_table(
    name: str, feeds: int, outcomes: list[dict[str, Any]], concurrency: int
) -> None:
    first = [o["first"] for o in outcomes]
    unchanged = [t for o in outcomes for t in o["unchanged"]]
    requests = [t for o in outcomes for t in o["requests"]]
    commit = statistics.median(o["commit"] for o in outcomes)
    batches = -(-feeds // concurrency)
    floors = [t + batches * commit for t in requests]
    print(
        f"\n{name}: {feeds:,} feeds of {SMALL_EVENTS} events, one Engine process "
        f"(sync_concurrency {concurrency}); s, min / median / max of "
        f"{len(first)} first and {len(unchanged)} unchanged cycles"
    )
    print(f"{'':<24}{'wall s':>26}{'ms/feed':>10}{'cpu s':>9}{'workers s':>11}")
    rows = [
        (
            "first cycle",
            first,
            [o["first cpu"] for o in outcomes],
            [o["first workers"] for o in outcomes],
        ),
        (
            "unchanged cycle",
            unchanged,
            [t for o in outcomes for t in o["unchanged cpu"]],
            None,
        ),
        ("requests alone", requests, None, None),
        (f"floor (+{batches} commits)", floors, None, None),
    ]
    for label, walls, cpus, workers in rows:
        middle = statistics.median(walls)
        cpu = f"{statistics.median(cpus):.2f}" if cpus else "-"
        worker = f"{statistics.median(workers):.2f}" if workers else "-"
        print(
            f"{label:<24}{_seconds(walls):>26}{middle / feeds * 1e3:>10.3f}"
            f"{cpu:>9}{worker:>11}"
        )
    print(f"one durable commit: {commit * 1e3:.2f} ms (median of 50)")
    first_scaled = statistics.median(first) * 10_000 / feeds
    verdict = "ok" if first_scaled <= FIRST_TARGET else "ABOVE TARGET"
    print(
        f"first cycle scaled to 10,000 feeds: {first_scaled:.0f} s "
        f"(target <= {FIRST_TARGET:g} s: {verdict})"
    )
    ratio = statistics.median(unchanged) / statistics.median(floors)
    verdict = "ok" if ratio <= FLOOR_TARGET else "ABOVE TARGET"
    print(f"unchanged / floor: {ratio:.2f}x (target <= {FLOOR_TARGET:g}x: {verdict})")


def _seconds(values: list[float]) -> str:
    return " / ".join(
        f"{value:.2f}"
        for value in (min(values), statistics.median(values), max(values))
    )


if __name__ == "__main__":
    asyncio.run(main())
