"""Benchmark: calsync.parse_ics against its peers on a 4,778-event Google export.

Every contender parses the same body and expands the same window:

- ``calsync``: ``calsync.parse_ics`` (no cache: a whole parse);
- ``ical``: the library Home Assistant uses, as it uses it
  (``enable_compat_mode``, ``IcsCalendarStream.calendar_from_ics``,
  ``timeline_tz(UTC).overlapping``);
- ``icalevents``: ``icalevents.events``;
- ``raw``: ``icalendar.Calendar.from_ical`` + ``recurring_ical_events.between``.

The export has one ``CREATED:00001231T000000Z`` (year 0), which ical and
icalevents refuse, so every contender reads the export without that line (it
changes no occurrence). Runs alternate the order of the contenders (rotated and
reversed), so that machine noise hits all alike; the table gives min, median
and max, the ratios are of medians from the same run. Two windows: the issue's
one year (2019), and 2010-2021, which holds nearly every event.

``--cold N`` also times N fresh processes per contender (interleaved): the
import, and the first parse, which pays for lazy set-ups (zone data, pydantic
models) that a long-running service pays once.

    python benchmarks/bench_parse.py [--runs 7] [--cold 3] [--file PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import calsync

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"
DEFAULT_FILE = CORPUS / "recurring-ical-events" / "benchmark-google-export-issue42.ics"
WINDOWS = {
    "2019": (datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)),
    "2010-2021": (datetime(2010, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)),
}
# The one line ical and icalevents refuse (a year 0); no contender needs it.
_YEAR_ZERO = re.compile(rb"\r?\nCREATED:0000[0-9]{4}T[0-9]{6}Z")

Measured = Callable[[bytes, datetime, datetime], int]


def run_calsync(body: bytes, start: datetime, end: datetime) -> int:
    return len(calsync.parse_ics(body, calsync.Window(start, end)).occurrences)


def run_raw(body: bytes, start: datetime, end: datetime) -> int:
    import icalendar
    import recurring_ical_events

    calendar = icalendar.Calendar.from_ical(body)
    return len(recurring_ical_events.of(calendar).between(start, end))


def run_ical(body: bytes, start: datetime, end: datetime) -> int:
    from ical.calendar_stream import IcsCalendarStream
    from ical.compat import enable_compat_mode

    with enable_compat_mode(body.decode()) as text:
        calendar = IcsCalendarStream.calendar_from_ics(text)
    return len(list(calendar.timeline_tz(UTC).overlapping(start, end)))


def run_icalevents(body: bytes, start: datetime, end: datetime) -> int:
    from icalevents.icalevents import events

    return len(events(string_content=body, start=start, end=end))


CONTENDERS: dict[str, Measured] = {
    "calsync": run_calsync,
    "ical": run_ical,
    "icalevents": run_icalevents,
    "raw": run_raw,
}
LABELS = {
    "calsync": "calsync.parse_ics",
    "ical": "ical (Home Assistant's)",
    "icalevents": "icalevents.events",
    "raw": "icalendar + recurring-ical-events",
    "sha256": "body fingerprint (sha256)",
}


def order(run: int) -> list[str]:
    """The contenders in a different order each run: rotated, every other reversed."""
    names = list(CONTENDERS)
    shift = run % len(names)
    rotated = names[shift:] + names[:shift]
    return rotated[::-1] if run % 2 else rotated


def measure(runs: int, body: bytes) -> dict[tuple[str, str], tuple[list[float], int]]:
    """Time every (contender, window) pair ``runs`` times, interleaved."""
    results: dict[tuple[str, str], tuple[list[float], int]] = {}
    for run in range(runs):
        for window_name, (start, end) in WINDOWS.items():
            for name in order(run):
                started = time.perf_counter()
                count = CONTENDERS[name](body, start, end)
                elapsed = time.perf_counter() - started
                samples, _ = results.setdefault((name, window_name), ([], count))
                samples.append(elapsed)
        started = time.perf_counter()
        hashlib.sha256(body).hexdigest()
        samples, _ = results.setdefault(("sha256", "-"), ([], 64))
        samples.append(time.perf_counter() - started)
    return results


def cold(runs: int, path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Time the import and the first parse (2019) in fresh processes, interleaved."""
    results: dict[str, tuple[list[float], list[float]]] = {}
    for run in range(runs):
        for name in order(run):
            command = [sys.executable, __file__, "--child", name, "--file", str(path)]
            output = subprocess.run(command, capture_output=True, check=True, text=True)
            imported, parsed = json.loads(output.stdout)
            samples = results.setdefault(name, ([], []))
            samples[0].append(imported)
            samples[1].append(parsed)
    return results


def child(name: str, path: Path) -> None:
    """In a fresh process: import the contender, parse once, print both times."""
    warnings.simplefilter("ignore")
    body = readable(path.read_bytes())
    start, end = WINDOWS["2019"]
    started = time.perf_counter()
    imports = {
        "calsync": ["calsync.core.parse"],
        "raw": ["icalendar", "recurring_ical_events"],
        "ical": ["ical.calendar_stream", "ical.compat"],
        "icalevents": ["icalevents.icalevents"],
    }
    for module in imports[name]:
        __import__(module)
    imported = time.perf_counter() - started
    started = time.perf_counter()
    CONTENDERS[name](body, start, end)
    print(json.dumps([imported, time.perf_counter() - started]))


def readable(body: bytes) -> bytes:
    """The body without the year-0 CREATED line that ical and icalevents refuse."""
    return _YEAR_ZERO.sub(b"", body)


def spread(samples: list[float]) -> str:
    return (
        f"{min(samples):>8.4f} {statistics.median(samples):>8.4f} {max(samples):>8.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cold", type=int, default=0, metavar="N")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.file)
        return
    warnings.simplefilter("ignore")
    original = args.file.read_bytes()
    body = readable(original)
    for function in CONTENDERS.values():  # imports and lazy set-ups
        function(body, *WINDOWS["2019"])
    results = measure(args.runs, body)
    median = {key: statistics.median(samples) for key, (samples, _) in results.items()}
    print(f"input: {args.file.name}, {len(original):,} bytes, ", end="")
    print(f"{len(original) - len(body)} bytes dropped (the year-0 CREATED line)")
    print(f"runs: {args.runs} (interleaved, order rotated), times in seconds\n")
    header = f"{'what':<36} {'window':<10} {'min':>8} {'median':>8} {'max':>8}"
    print(f"{header} {'occurrences':>12}")
    for (name, window_name), (samples, count) in sorted(results.items()):
        print(f"{LABELS[name]:<36} {window_name:<10} {spread(samples)} {count:>12}")
    print()
    for window_name in WINDOWS:
        ours = median["calsync", window_name]
        for peer in ("ical", "icalevents", "raw"):
            ratio = ours / median[peer, window_name]
            goal = "  (goal <= 1.0)" if (peer, window_name) == ("ical", "2019") else ""
            print(f"ratio calsync / {peer:<10} {window_name:<10} {ratio:6.3f}{goal}")
    share = median["sha256", "-"] / median["calsync", "2019"]
    print(f"ratio sha256 / calsync, 2019  {share:8.5f}  (skipping an unchanged body)")
    if args.cold:
        print(f"\ncold: {args.cold} fresh processes each (interleaved), window 2019")
        print(f"{'what':<36} {'step':<10} {'min':>8} {'median':>8} {'max':>8}")
        timed = cold(args.cold, args.file)
        for name, (imports, parses) in sorted(timed.items()):
            print(f"{LABELS[name]:<36} {'import':<10} {spread(imports)}")
            print(f"{LABELS[name]:<36} {'1st parse':<10} {spread(parses)}")
        first = {name: statistics.median(parses) for name, (_, parses) in timed.items()}
        for peer in ("ical", "icalevents", "raw"):
            ratio = first["calsync"] / first[peer]
            print(f"ratio calsync / {peer:<10} 1st parse  {ratio:6.3f}")


if __name__ == "__main__":
    main()
