"""Benchmark: parse_ics through a ParseCache against a whole parse_ics.

On the 1.6 MB Google export (4,778 VEVENTs), window 2019: a whole parse of the
edited body against a parse through a cache that holds the body before the
edit. Edits: 1 % of the events (random, seeded), one event, none. The Engine
never parses in the very window of its last parse (its clock moves between
syncs), so each edit is timed with the window slid by 15 minutes, as a sync
every 15 minutes does, and also in the same window (the parser alone); plus no
edit with the window slid by a day (a daily re-parse). This times the parser
only: `bench_sync.py` times a whole re-sync through the Engine. Runs alternate
so machine noise hits both alike; printed: min / median / max and the ratio of
the medians. Also prints what the cache holds after a parse of the body
(tracemalloc), and the peak while it is filled.

    python benchmarks/bench_incremental.py [--runs 5] [--file PATH]
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import time
import tracemalloc
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import calsync

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"
DEFAULT_FILE = CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"
WINDOW = calsync.Window(
    datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
)
QUARTER = timedelta(minutes=15)
SLID = calsync.Window(WINDOW.start + QUARTER, WINDOW.end + QUARTER)
DAY = calsync.Window(WINDOW.start + timedelta(days=1), WINDOW.end + timedelta(days=1))
TARGETS = {"1 %, slid 15 min": 10.0, "one event, slid 15 min": 30.0}


def edit_events(body: bytes, share: float, seed: int) -> bytes:
    """Change the SUMMARY of a seeded random ``share`` of the events (at least 1)."""
    summaries = [m.start() for m in re.finditer(rb"(?m)^SUMMARY", body)]
    count = max(1, round(len(summaries) * share))
    chosen = sorted(random.Random(seed).sample(summaries, count))
    for start in reversed(chosen):
        end = body.index(b":", start) + 1
        body = body[:end] + b"edited " + body[end:]
    return body


def time_once(
    body: bytes, window: calsync.Window, cache: calsync.ParseCache | None
) -> float:
    started = time.perf_counter()
    calsync.parse_ics(body, window, cache=cache)
    return time.perf_counter() - started


def measure(body: bytes, runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per case, the whole-parse and cached-parse times, interleaved run by run."""
    one_percent = edit_events(body, 0.01, seed=1)
    one_event = edit_events(body, 0.0, seed=2)
    cases = {
        "1 %, slid 15 min": (one_percent, SLID),
        "one event, slid 15 min": (one_event, SLID),
        "none, slid 15 min": (body, SLID),
        "none, slid a day": (body, DAY),
        "1 %, same window": (one_percent, WINDOW),
        "one event, same window": (one_event, WINDOW),
    }
    results: dict[str, tuple[list[float], list[float]]] = {}
    cache = calsync.ParseCache()
    for _ in range(runs):
        for name, (edited, window) in cases.items():
            whole = time_once(edited, window, None)
            calsync.parse_ics(body, WINDOW, cache=cache)  # back to the unedited body
            cached = time_once(edited, window, cache)
            samples = results.setdefault(name, ([], []))
            samples[0].append(whole)
            samples[1].append(cached)
    return results


def spread(seconds: list[float]) -> str:
    low, middle, high = min(seconds), statistics.median(seconds), max(seconds)
    return f"{low * 1e3:.0f} / {middle * 1e3:.0f} / {high * 1e3:.0f}"


def footprint(body: bytes) -> tuple[float, float]:
    """Return (MB the cache holds after a parse, MB at the peak of that parse)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = calsync.ParseCache()
    calsync.parse_ics(body, WINDOW, cache=cache)
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del cache
    return (held - before) / 1e6, (peak - before) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    body = args.file.read_bytes()
    results = measure(body, args.runs)
    held, peak = footprint(body)
    print(f"input: {args.file.name}, {len(body):,} bytes, window 2019")
    print(f"runs: {args.runs} (interleaved), ms: min / median / max\n")
    print(
        f"{'case (edit, window)':<24}{'whole ms':>22}{'cached ms':>20}"
        f"{'ratio':>9}  target"
    )
    for name, (whole, cached) in results.items():
        ratio = statistics.median(whole) / statistics.median(cached)
        target = f">= {TARGETS[name]:.0f}x" if name in TARGETS else "-"
        print(
            f"{name:<24}{spread(whole):>22}{spread(cached):>20}{ratio:>8.1f}x  {target}"
        )
    print(f"\ncache held after parsing the body (tracemalloc): {held:6.1f} MB")
    print(f"peak while parsing the body into an empty cache:  {peak:6.1f} MB")


if __name__ == "__main__":
    main()
