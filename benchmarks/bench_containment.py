"""Containment of hostile and huge feeds, and what parse isolation costs.

Each scenario runs in a fresh Python process (a service of its own: an Engine
over a SQLite file and a local feed server), with parse isolation on (``on``,
the default: parses in worker processes) or off (``off``: parses in threads of
the service, as before issue 13). Memory is read from /proc: RSS of the service
process plus its parse workers and their launcher (pages they share are
counted in each), sampled every 10 ms for the peak.

  bomb       a 500-byte feed whose VTIMEZONE recurs every second; parse_timeout
             3 s. Time until the sync fails, and the service's memory 10 s
             after, against before (target: < 5 s, within 50 MB).
  timeouts   three syncs in a row of a 20 MiB feed (140,000 small events) that
             time out (parse_timeout 5 s); peak and final memory (target
             <= 400 MB). Isolation on only: off leaves three parses running,
             gigabytes on a shared machine.
  big        one sync of the 20 MiB feed with the default limits; its outcome,
             time and peak memory (target <= 400 MB).
  google     the Google export (4,778 VEVENTs, 5,660 occurrences 2010-2021):
             the Engine's parse through the pool (cold: a new calendar, whose
             ParseCache is filled; warm: the same body again through it)
             against parse_ics in-process, plain and with a new ParseCache as
             the Engine parsed before (target <= 1.1x); parse_ics against raw
             icalendar + recurring-ical-events (target <= 1.0x); and a
             one-event feed. Wall and CPU time (worker + service for the pool).
  cache      what a ParseCache holds after a parse (tracemalloc), against the
             size of the body: the Google export and the 20 MiB feed.
  unchanged  an Engine.sync_calendar of an unchanged feed (304, no parse).

    python benchmarks/bench_containment.py [--runs 3] [--only bomb,google,...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import icalendar
import recurring_ical_events

import calsync
from benchkit import alternating, spread
from calsync import Engine, HttpFetcher, Settings, SQLiteStore
from calsync.core.parse import parse_ics
from calsync.engine.parsepool import _ZYGOTE, ParsePool
from calsync.testing import FeedServer, ManualClock

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus"
GOOGLE = CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MB = 2**20

BOMB = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\n"
    "BEGIN:VTIMEZONE\r\nTZID:Bomb\r\n"
    "BEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nRRULE:FREQ=SECONDLY\r\n"
    "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n"
    "BEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\n"
    "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
    "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"
    "BEGIN:VEVENT\r\nUID:bomb\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART;TZID=Bomb:20260302T100000\r\nDTEND;TZID=Bomb:20260302T110000\r\n"
    "SUMMARY:bomb\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
SMALL = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n"
    "BEGIN:VEVENT\r\nUID:one\r\nDTSTAMP:20260101T000000Z\r\n"
    "DTSTART:20260302T100000Z\r\nDTEND:20260302T110000Z\r\nSUMMARY:one\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def big_feed(size: int = 20 * MB) -> str:
    """A feed of ~140,000 small VEVENTs, about ``size`` bytes."""
    head = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n"
    parts = [head]
    total = len(head)
    index = 0
    while total < size - 200:
        start = NOW + timedelta(minutes=17 * index)
        block = (
            f"BEGIN:VEVENT\r\nUID:event-{index}@bench\r\n"
            "DTSTAMP:20260101T000000Z\r\n"
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\n"
            f"DTEND:{start + timedelta(minutes=30):%Y%m%dT%H%M%SZ}\r\n"
            f"SUMMARY:Event {index}\r\nEND:VEVENT\r\n"
        )
        parts.append(block)
        total += len(block)
        index += 1
    parts.append("END:VCALENDAR\r\n")
    return "".join(parts)


# -- memory -----------------------------------------------------------------------


def rss(pid: int) -> int:
    """VmRSS of a process in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def workers() -> list[int]:
    """The parse workers of this process: the zygote's children."""
    zygote = _ZYGOTE.pid
    if zygote is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if parent == zygote:
                found.append(int(entry))
    return found


def service_rss() -> int:
    """RSS of this process, its parse workers and their launcher."""
    zygote = _ZYGOTE.pid
    launcher = rss(zygote) if zygote is not None else 0
    return rss(os.getpid()) + launcher + sum(rss(pid) for pid in workers())


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Sample `service_rss` every 10 ms; yields [the peak]."""
    peak = [service_rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], service_rss())
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join()


# -- scenarios (each in a fresh process) --------------------------------------------


def engine_of(directory: str, isolation: bool, **changes: Any) -> Engine:
    settings = Settings(
        worker="bench", per_host_rate=None, parse_isolation=isolation, **changes
    )
    store = SQLiteStore(Path(directory) / "calsync.db")
    fetcher = HttpFetcher(
        allow=["127.0.0.1"], max_body_bytes=25 * MB, max_decompressed_bytes=25 * MB
    )
    return Engine(store, fetcher, settings=settings, clock=ManualClock(NOW))


async def bomb(isolation: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        engine = engine_of(directory, isolation, parse_timeout=timedelta(seconds=3))
        async with FeedServer() as feeds, engine:
            feeds.set("/bomb.ics", SMALL)
            calendar = await engine.add_calendar(feeds.url("/bomb.ics"))
            await engine.sync_calendar(calendar.id)
            before, main_before = service_rss(), rss(os.getpid())
            feeds.set("/bomb.ics", BOMB)
            started = time.perf_counter()
            result = await engine.sync_calendar(calendar.id)
            elapsed = time.perf_counter() - started
            await asyncio.sleep(10)
            after, main_after = service_rss(), rss(os.getpid())
            return {
                "seconds": elapsed,
                "outcome": result.outcome.value,
                "before_mb": before / MB,
                "after_mb": after / MB,
                "growth_mb": (after - before) / MB,
                "main_growth_mb": (main_after - main_before) / MB,
            }


async def timeouts(isolation: bool) -> dict[str, Any]:
    body = big_feed()
    with tempfile.TemporaryDirectory() as directory:
        engine = engine_of(directory, isolation, parse_timeout=timedelta(seconds=5))
        async with FeedServer() as feeds, engine:
            feeds.set("/big.ics", body)
            del body
            calendar = await engine.add_calendar(feeds.url("/big.ics"))
            before = service_rss()
            with peak_rss() as peak:
                outcomes = []
                for _ in range(3):
                    result = await engine.sync_calendar(calendar.id, force=True)
                    outcomes.append(result.outcome.value)
            return {
                "outcome": ",".join(sorted(set(outcomes))),
                "before_mb": before / MB,
                "peak_mb": peak[0] / MB,
                "after_mb": service_rss() / MB,
            }


async def big(isolation: bool) -> dict[str, Any]:
    body = big_feed()
    with tempfile.TemporaryDirectory() as directory:
        engine = engine_of(directory, isolation)
        async with FeedServer() as feeds, engine:
            feeds.set("/big.ics", body)
            del body
            calendar = await engine.add_calendar(feeds.url("/big.ics"))
            before = service_rss()
            with peak_rss() as peak:
                started = time.perf_counter()
                result = await engine.sync_calendar(calendar.id)
                elapsed = time.perf_counter() - started
            return {
                "outcome": result.outcome.value,
                "seconds": elapsed,
                "error": (result.error or "")[:160],
                "before_mb": before / MB,
                "peak_mb": peak[0] / MB,
            }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def google(runs: int) -> dict[str, Any]:
    """Alternate pool and in-process parses of the same bodies; wall and CPU time.

    The pool's CPU time is its worker's plus this process's (sending the body,
    reading the result): on a loaded machine it is the steadier figure.
    """
    window = calsync.Window(
        datetime(2010, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)
    )
    body = GOOGLE.read_bytes()
    pool = ParsePool(
        workers=1, memory_limit=Settings().parse_memory_limit, cache_size=256
    )
    timings: dict[str, list[float]] = {}

    def record(name: str, wall: float, cpu: float) -> None:
        timings.setdefault(f"{name} wall", []).append(wall)
        timings.setdefault(f"{name} cpu", []).append(cpu)

    async def in_pool(name: str, calendar_id: str, data: bytes) -> None:
        [worker] = pool.pids()
        cpu = cpu_seconds(worker) + time.process_time()
        started = time.perf_counter()
        await pool.parse(
            calendar_id,
            data,
            window,
            default_tz="UTC",
            max_occurrences=20_000,
            timeout=600,
        )
        wall = time.perf_counter() - started
        record(name, wall, cpu_seconds(worker) + time.process_time() - cpu)

    def in_process(name: str, data: bytes, cache: Any = None) -> None:
        cpu = time.process_time()
        started = time.perf_counter()
        parse_ics(data, window, cache=cache)
        record(name, time.perf_counter() - started, time.process_time() - cpu)

    def raw(name: str, data: bytes) -> None:
        cpu = time.process_time()
        started = time.perf_counter()
        calendar = icalendar.Calendar.from_ical(data)
        recurring_ical_events.of(calendar).between(window.start, window.end)
        record(name, time.perf_counter() - started, time.process_time() - cpu)

    small = SMALL.encode()
    await pool.parse(
        "warm-up", small, window, default_tz="UTC", max_occurrences=9, timeout=60
    )
    try:
        for run in range(runs):
            calendar = f"google-{run}"
            await in_pool("google cold, pool", calendar, body)
            in_process("google cold, in-process", body)
            raw("google cold, raw icalendar + rie", body)
            in_process("google cold, in-process, new cache", body, calsync.ParseCache())
            await in_pool("google warm, pool", calendar, body)
            cache = calsync.ParseCache()
            parse_ics(body, window, cache=cache)
            in_process("google warm, in-process", body, cache)
            for _ in range(20):
                await in_pool("one event, pool", "small", small)
                in_process("one event, in-process", small)
    finally:
        await pool.close()
    return timings


def held_by_cache(body: bytes, window: calsync.Window) -> dict[str, float]:
    """MB a ParseCache holds after a parse of ``body``, and the parse's peak."""
    cache = calsync.ParseCache()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    parse_ics(body, window, cache=cache)
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "body_mb": len(body) / MB,
        "cache_mb": (held - before) / MB,
        "estimate_mb": cache.nbytes / MB,
        "peak_mb": (peak - before) / MB,
        "groups": len(cache),
    }


async def cache_sizes(runs: int) -> dict[str, Any]:
    """What a ParseCache holds for the Google export and for the 20 MiB feed."""
    google_window = calsync.Window(
        datetime(2010, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)
    )
    big_window = calsync.Window(NOW - timedelta(days=1), NOW + timedelta(days=90))
    return {
        "google export, 2010-2021": held_by_cache(GOOGLE.read_bytes(), google_window),
        "20 MiB feed, 91 days": held_by_cache(big_feed().encode(), big_window),
    }


async def unchanged(isolation: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        engine = engine_of(directory, isolation)
        async with FeedServer() as feeds, engine:
            feeds.set("/a.ics", GOOGLE.read_text())
            calendar = await engine.add_calendar(feeds.url("/a.ics"))
            await engine.sync_calendar(calendar.id)
            times = []
            for _ in range(20):
                started = time.perf_counter()
                result = await engine.sync_calendar(calendar.id)
                times.append(time.perf_counter() - started)
                assert result.not_modified, result
            return {"seconds": statistics.median(times)}


SCENARIOS: dict[str, Callable[..., Any]] = {
    "bomb": bomb,
    "timeouts": timeouts,
    "big": big,
    "unchanged": unchanged,
}


def in_fresh_process(*args: str) -> Any:
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the table ----------------------------------------------------------------------


def report_ab(name: str, keys: list[str], runs: int, modes: list[str]) -> None:
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _, order in alternating(modes, runs):  # A/B, then B/A
        for mode in order:
            results[mode].append(in_fresh_process(name, mode))
    print(f"\n{name}  (min / median / max of {runs} runs)")
    for mode in modes:
        rows = results[mode]
        cells = []
        for key in keys:
            values = [row[key] for row in rows]
            if isinstance(values[0], str):
                cells.append(f"{key} {sorted(set(values))}")
            else:
                cells.append(f"{key} {spread(values)}")
        print(f"  isolation {mode:3}  " + "  ".join(cells))
    if len(modes) == 2 and "seconds" in keys:
        ratios = [
            a["seconds"] / b["seconds"]
            for a, b in zip(results["on"], results["off"], strict=True)
        ]
        print(f"  on/off time ratio, per run: {spread(ratios)}x")


def report_google(runs: int) -> None:
    timings = in_fresh_process("google", str(runs))
    print(f"\ngoogle export and a one-event feed (min / median / max, {runs} runs)")
    for name, values in timings.items():
        print(f"  {name:41} {spread(values, 1000)} ms")
    for measure in ("wall", "cpu"):
        ours = timings[f"google cold, in-process {measure}"]
        theirs = timings[f"google cold, raw icalendar + rie {measure}"]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True) if b > 0]
        print(
            f"  google cold ({measure}): parse_ics/raw icalendar + rie "
            f"{spread(ratios)}x (target <= 1.0x)"
        )
    cases = [
        ("google cold", "in-process"),
        ("google cold", "in-process, new cache"),
        ("google warm", "in-process"),
        ("one event", "in-process"),
    ]
    for case, baseline in cases:
        for measure in ("wall", "cpu"):
            pool = timings[f"{case}, pool {measure}"]
            here = timings[f"{case}, {baseline} {measure}"]
            ratios = [a / b for a, b in zip(pool, here, strict=True) if b > 0]
            extra = statistics.median(pool) - statistics.median(here)
            print(
                f"  {case} ({measure}): pool/{baseline} {spread(ratios)}x, "
                f"median difference {extra * 1000:+.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="bomb,timeouts,big,google,cache,unchanged")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        name, argument = args.child
        loop = asyncio.new_event_loop()
        warnings.simplefilter("ignore")
        if name == "google":
            result = loop.run_until_complete(google(int(argument)))
        elif name == "cache":
            result = loop.run_until_complete(cache_sizes(int(argument)))
        else:
            result = loop.run_until_complete(SCENARIOS[name](argument == "on"))
        print(json.dumps(result), flush=True)
        # Without isolation an abandoned parse thread runs on: do not wait for it.
        os._exit(0)
    only = args.only.split(",")
    print(f"bench_containment: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    if "bomb" in only:
        keys = ["outcome", "seconds", "before_mb", "after_mb", "growth_mb"]
        keys.append("main_growth_mb")
        report_ab("bomb", keys, args.runs, ["on", "off"])
    if "timeouts" in only:
        keys = ["outcome", "before_mb", "peak_mb", "after_mb"]
        report_ab("timeouts", keys, args.runs, ["on"])
    if "big" in only:
        keys = ["outcome", "seconds", "before_mb", "peak_mb", "error"]
        report_ab("big", keys, args.runs, ["on"])
    if "google" in only:
        report_google(args.runs)
    if "cache" in only:
        sizes = in_fresh_process("cache", "1")
        print("\nParseCache after a parse (tracemalloc)")
        for name, row in sizes.items():
            print(
                f"  {name:26} body {row['body_mb']:.1f} MB, {row['groups']:,} groups: "
                f"cache holds {row['cache_mb']:.1f} MB "
                f"({row['cache_mb'] / row['body_mb']:.1f}x the body; its nbytes "
                f"estimate {row['estimate_mb']:.1f} MB), "
                f"parse peak {row['peak_mb']:.0f} MB"
            )
    if "unchanged" in only:
        report_ab("unchanged", ["seconds"], args.runs, ["on", "off"])


if __name__ == "__main__":
    main()
