"""Fuzz parse_ics with mutated corpus feeds: `nox -s fuzz`, or run it directly.

Every input must give a result or a `CalsyncError`, the same through a
`ParseCache` (which holds the previous input made from the same source) as
whole, each parse within ``--timeout`` seconds (under an alarm, in a pool of
worker processes); the slowest input's time covers both parses. Prints the
inputs, the time, the slowest input and every failure; a failing input is
saved to ``--out`` and replayed with ``--replay N``.

    python tests/fuzz_parse.py [--inputs 100000] [--start 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from _fuzzing import check, mutated, sources
from calsync import ParseCache

_POOL: list[bytes] = []
_CACHES: dict[int, ParseCache] = {}
_TIMEOUT = 10.0

Slowest = tuple[float, int, str]
Failure = tuple[int, str, str]


class _Timeout(BaseException):
    """Not an Exception: libraries that catch those must not swallow it."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def _start_worker(timeout: float) -> None:
    global _TIMEOUT
    _TIMEOUT = timeout
    _POOL.extend(sources())
    signal.signal(signal.SIGALRM, _alarm)


@contextlib.contextmanager
def _alarm_after_timeout() -> Iterator[None]:
    """Raise `_Timeout` in a parse that takes longer than the timeout."""
    signal.setitimer(signal.ITIMER_REAL, _TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _run(numbers: range) -> tuple[int, Slowest, list[Failure]]:
    slowest: Slowest = (0.0, -1, "")
    failures: list[Failure] = []
    for number in numbers:
        source, body, how = mutated(number, _POOL)
        cache = _CACHES.setdefault(source, ParseCache())
        started = time.perf_counter()
        try:
            check(body, cache, _alarm_after_timeout)
        except _Timeout:
            failures.append((number, how, f"a parse took over {_TIMEOUT:g} s"))
            _CACHES[source] = ParseCache()
        except Exception:
            failures.append((number, how, traceback.format_exc(limit=-4)))
            _CACHES[source] = ParseCache()
        elapsed = time.perf_counter() - started
        slowest = max(slowest, (elapsed, number, how))
    return len(numbers), slowest, failures


def _chunks(start: int, count: int, size: int) -> list[range]:
    stop = start + count
    return [range(low, min(low + size, stop)) for low in range(start, stop, size)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    parser.add_argument("--replay", type=int, default=None)
    args = parser.parse_args()
    if args.replay is not None:
        _, body, how = mutated(args.replay, sources())
        print(f"input {args.replay} ({how}), {len(body):,} bytes")
        check(body, ParseCache())
        print("passes")
        return 0
    started = time.monotonic()
    done, slowest, failures = 0, (0.0, -1, ""), []
    context = multiprocessing.get_context("fork")
    with context.Pool(args.workers, _start_worker, (args.timeout,)) as pool:
        for count, chunk_slowest, chunk_failures in pool.imap_unordered(
            _run, _chunks(args.start, args.inputs, 250)
        ):
            done += count
            slowest = max(slowest, chunk_slowest)
            failures += chunk_failures
            if done % 10_000 < count:
                print(
                    f"{done:,} inputs, {time.monotonic() - started:.0f} s, "
                    f"{len(failures)} failures, slowest {slowest[0]:.2f} s "
                    f"(input {slowest[1]})",
                    flush=True,
                )
    elapsed = time.monotonic() - started
    print(
        f"\ninputs: {done:,} from {len(sources())} corpus feeds, {args.workers} workers"
    )
    print(f"time: {elapsed:.0f} s ({done / elapsed:.0f} inputs/s)")
    print(f"slowest input: {slowest[1]} ({slowest[2]}), {slowest[0]:.2f} s")
    print(f"failures: {len(failures)}")
    if failures:
        args.out.mkdir(parents=True, exist_ok=True)
    pool_of_sources = sources()
    for number, how, error in sorted(failures)[:50]:
        (args.out / f"input-{number}.ics").write_bytes(
            mutated(number, pool_of_sources)[1]
        )
        print(f"\n--- input {number} ({how}), saved to {args.out}\n{error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
