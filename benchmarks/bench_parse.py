"""Benchmark: calsync.parse_ics against raw icalendar + recurring-ical-events.

Both sides parse the same 1.6 MB Google export (4,778 VEVENTs) and expand the
same window; runs alternate so machine noise hits both alike. Two windows: the
issue's one year (2019), and 2010-2021, which holds nearly every event and so is
the worst case for calsync's own work per occurrence. Also prints the cost of the
body fingerprint the sync path uses to skip unchanged feeds.

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

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"
DEFAULT_FILE = CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"
WINDOWS = {
    "2019": calsync.Window(
        datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    ),
    "2010-2021": calsync.Window(
        datetime(2010, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)
    ),
}

Measured = Callable[[bytes, calsync.Window], int]


def raw(body: bytes, window: calsync.Window) -> int:
    calendar = icalendar.Calendar.from_ical(body)
    return len(recurring_ical_events.of(calendar).between(window.start, window.end))


def ours(body: bytes, window: calsync.Window) -> int:
    return len(calsync.parse_ics(body, window).occurrences)


def fingerprint(body: bytes, window: calsync.Window) -> int:
    return len(hashlib.sha256(body).hexdigest())


def measure(runs: int, body: bytes) -> dict[tuple[str, str], tuple[list[float], int]]:
    """Time every (function, window) pair ``runs`` times, interleaved."""
    results: dict[tuple[str, str], tuple[list[float], int]] = {}
    functions: dict[str, Measured] = {"raw": raw, "calsync": ours}
    for _ in range(runs):
        for window_name, window in WINDOWS.items():
            for name, function in functions.items():
                started = time.perf_counter()
                count = function(body, window)
                elapsed = time.perf_counter() - started
                samples, _ = results.setdefault((name, window_name), ([], count))
                samples.append(elapsed)
        started = time.perf_counter()
        fingerprint(body, WINDOWS["2019"])
        samples, _ = results.setdefault(("sha256", "-"), ([], 64))
        samples.append(time.perf_counter() - started)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    body = args.file.read_bytes()
    results = measure(args.runs, body)
    median = {key: statistics.median(samples) for key, (samples, _) in results.items()}
    print(f"input: {args.file.name}, {len(body):,} bytes")
    print(f"runs: {args.runs} (interleaved), times in seconds\n")
    print(f"{'what':<46} {'window':<10} {'median':>8} {'min':>8} {'occurrences':>12}")
    labels = {
        "raw": "raw: icalendar.from_ical + rie.of().between()",
        "calsync": "calsync.parse_ics",
        "sha256": "body fingerprint (sha256)",
    }
    for (name, window_name), (samples, count) in results.items():
        print(
            f"{labels[name]:<46} {window_name:<10} {median[name, window_name]:>8.4f} "
            f"{min(samples):>8.4f} {count:>12}"
        )
    print()
    for window_name in WINDOWS:
        ratio = median["calsync", window_name] / median["raw", window_name]
        print(f"ratio calsync / raw, {window_name:<10} {ratio:6.3f}  (target <= 1.2)")
    share = median["sha256", "-"] / median["calsync", "2019"]
    print(f"ratio sha256 / calsync, 2019  {share:8.5f}  (skipping an unchanged body)")


if __name__ == "__main__":
    main()
