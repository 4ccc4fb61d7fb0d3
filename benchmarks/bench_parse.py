"""Benchmark: calsync.parse_ics against raw icalendar + recurring-ical-events.

Both sides parse the same 1.6 MB Google export (4,778 VEVENTs) and expand the same
one-year window; runs alternate so machine noise hits both alike. Also prints the
cost of the body fingerprint the sync path uses to skip unchanged feeds.

    python benchmarks/bench_parse.py [--runs 7] [--file PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import icalendar
import recurring_ical_events

import calsync

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
DEFAULT_FILE = CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"
START = datetime(2019, 1, 1, tzinfo=UTC)
END = datetime(2020, 1, 1, tzinfo=UTC)


def raw(body: bytes) -> int:
    calendar = icalendar.Calendar.from_ical(body)
    return len(recurring_ical_events.of(calendar).between(START, END))


def ours(body: bytes) -> int:
    return len(calsync.parse_ics(body, calsync.Window(START, END)).occurrences)


def fingerprint(body: bytes) -> int:
    return len(hashlib.sha256(body).hexdigest())


def timed(function: Callable[[bytes], int], body: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    result = function(body)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    body = args.file.read_bytes()
    samples: dict[str, list[float]] = {"raw": [], "calsync": [], "sha256": []}
    counts: dict[str, int] = {}
    for _ in range(args.runs):
        for name, function in (
            ("raw", raw),
            ("calsync", ours),
            ("sha256", fingerprint),
        ):
            elapsed, counts[name] = timed(function, body)
            samples[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    span = f"{START:%Y-%m-%d}..{END:%Y-%m-%d}"
    print(f"input: {args.file.name}, {len(body):,} bytes, window {span}")
    print(f"runs: {args.runs} (alternating), medians in seconds\n")
    print(f"{'what':<48} {'median s':>9} {'min s':>8} {'result':>8}")
    rows = (
        ("raw: icalendar.from_ical + rie.of().between()", "raw"),
        ("calsync.parse_ics", "calsync"),
        ("body fingerprint (sha256)", "sha256"),
    )
    for label, name in rows:
        median, fastest = medians[name], min(samples[name])
        print(f"{label:<48} {median:>9.4f} {fastest:>8.4f} {counts[name]:>8}")
    ratio = medians["calsync"] / medians["raw"]
    share = medians["sha256"] / medians["calsync"]
    print()
    print(f"ratio calsync / raw:    {ratio:.3f}  (target <= 1.2)")
    print(f"ratio sha256 / calsync: {share:.5f}  (cost of skipping an unchanged body)")


if __name__ == "__main__":
    main()
