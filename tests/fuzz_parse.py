"""Fuzz parse_ics with mutated corpus feeds: `nox -s fuzz`, or run it directly.

Every input must give a result or a `CalsyncError`, the same through a
`ParseCache` (warmed by the previous input made from the same corpus piece) as
whole, and both parses together within ``--timeout`` seconds of CPU time (so
that other work on the machine does not make an input slow; a worker is also
killed past ten times that in wall time). Inputs run in worker processes, one a
core; a worker past the timeout is killed and replaced, and a worker that dies
is a crash. Every failing input is saved to ``--out``;
replay one with ``--replay N`` (``--after M`` first warms the cache with the
input that warmed it in the run). Prints a table of the run and exits non-zero
on any failure.

    python tests/fuzz_parse.py [--inputs 100000] [--start 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection, wait
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import attrs

from _fuzzing import Mismatch, check, mutated, outcome, sources
from calsync import ParseCache

CHUNK = 40  # inputs a worker is handed at a time
POLL = 0.2  # seconds between looks at the workers' clocks
_TICKS = os.sysconf("SC_CLK_TCK")


@attrs.frozen
class Failure:
    """A failing input: what went wrong, and the input that warmed its cache."""

    number: int
    kind: str  # "crash", "mismatch" or "slow"
    detail: str
    warmed_by: int | None = None


@attrs.frozen
class Report:
    """What a worker sends back for a chunk of inputs."""

    done: int
    slowest: tuple[float, int]  # CPU seconds, input
    slowest_wall: tuple[float, int]
    failures: tuple[Failure, ...]


def _work(
    conn: Connection,
    pool: list[bytes],
    current: Synchronized[int],
    started: Synchronized[float],
    started_cpu: Synchronized[float],
    memory_mb: int,
) -> None:
    """Check every chunk of input numbers the parent sends, until it sends None."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    caches: dict[tuple[int, int], ParseCache] = {}
    warmed_by: dict[tuple[int, int], int] = {}
    parent = os.getppid()
    while (numbers := _next_task(conn, parent)) is not None:
        slowest, slowest_wall, failures = (0.0, -1), (0.0, -1), []
        for number in numbers:
            fuzz_input = mutated(number, pool)
            key = (fuzz_input.source, fuzz_input.max_occurrences)
            started_cpu.value = time.process_time()
            started.value, current.value = time.monotonic(), number
            try:
                check(fuzz_input, caches)
            except Mismatch as error:
                failures.append(
                    Failure(number, "mismatch", str(error), warmed_by.get(key))
                )
            except Exception:
                detail = traceback.format_exc(limit=-6)
                failures.append(Failure(number, "crash", detail, warmed_by.get(key)))
            wall = time.monotonic() - started.value
            cpu = time.process_time() - started_cpu.value
            current.value = -1
            warmed_by[key] = number
            slowest = max(slowest, (cpu, number))
            slowest_wall = max(slowest_wall, (wall, number))
        conn.send(Report(len(numbers), slowest, slowest_wall, tuple(failures)))


def _next_task(conn: Connection, parent: int) -> range | None:
    """Wait for the next chunk; None when told to stop or when the parent is gone.

    A forked worker holds copies of the parent's pipe ends, so it never sees
    end-of-file on its own: it looks for its parent instead.
    """
    while not conn.poll(1.0):
        if os.getppid() != parent:
            return None
    task: range | None = conn.recv()
    return task


@attrs.define
class _Worker:
    process: Any
    conn: Connection
    current: Synchronized[int]
    started: Synchronized[float]
    started_cpu: Synchronized[float]
    task: range | None = None

    def cpu_seconds(self) -> float:
        """The worker's CPU time so far, read from /proc as time.process_time does."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")")[1]
        except OSError:
            return 0.0
        user, system = fields.split()[11:13]
        return (int(user) + int(system)) / _TICKS


class Run:
    """Hands chunks of inputs to worker processes and keeps the tally."""

    def __init__(self, args: argparse.Namespace, pool: list[bytes]) -> None:
        self.args = args
        self.pool = pool
        self.context = multiprocessing.get_context("fork")
        stop = args.start + args.inputs
        self.pending = collections.deque(
            range(low, min(low + CHUNK, stop)) for low in range(args.start, stop, CHUNK)
        )
        self.done = 0
        self.slowest = (0.0, -1)
        self.slowest_wall = (0.0, -1)
        self.failures: dict[int, Failure] = {}
        self.workers: list[_Worker] = []

    def start_worker(self) -> _Worker:
        parent, child = self.context.Pipe()
        current = self.context.Value("q", -1, lock=False)
        started = self.context.Value("d", 0.0, lock=False)
        started_cpu = self.context.Value("d", 0.0, lock=False)
        process = self.context.Process(
            target=_work,
            args=(child, self.pool, current, started, started_cpu, self.args.memory),
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, parent, current, started, started_cpu)

    def assign(self, worker: _Worker) -> None:
        worker.task = self.pending.popleft() if self.pending else None
        if worker.task is not None:
            worker.conn.send(worker.task)

    def run(self) -> float:
        """Check every input; return the seconds it took."""
        began = time.monotonic()
        next_progress = 10_000
        self.workers = [self.start_worker() for _ in range(self.args.workers)]
        try:
            for worker in self.workers:
                self.assign(worker)
            while any(worker.task is not None for worker in self.workers):
                busy = [w for w in self.workers if w.task is not None]
                for conn in wait([w.conn for w in busy], timeout=POLL):
                    worker = next(w for w in busy if w.conn is conn)
                    self.collect(worker)
                for index, worker in enumerate(self.workers):
                    if worker.task is not None and self.stuck(worker):
                        self.workers[index] = self.replace(worker)
                if self.done >= next_progress:
                    print(
                        f"{self.done:,} inputs, {time.monotonic() - began:.0f} s, "
                        f"{len(self.failures)} failures",
                        flush=True,
                    )
                    next_progress += 10_000
        finally:
            for worker in self.workers:
                worker.process.kill()
                worker.process.join()
        return time.monotonic() - began

    def collect(self, worker: _Worker) -> None:
        try:
            report: Report = worker.conn.recv()
        except (EOFError, OSError):
            return  # it died; stuck() sees to it
        self.done += report.done
        self.slowest = max(self.slowest, report.slowest)
        self.slowest_wall = max(self.slowest_wall, report.slowest_wall)
        for failure in report.failures:
            self.failures.setdefault(failure.number, failure)
        self.assign(worker)

    def stuck(self, worker: _Worker) -> bool:
        """Whether a worker died or overran the timeout; records its input."""
        number = worker.current.value
        alive = worker.process.is_alive()
        if alive and number < 0:
            return False
        if alive:
            wall = time.monotonic() - worker.started.value
            cpu = worker.cpu_seconds() - worker.started_cpu.value
            timeout = self.args.timeout
            if cpu <= timeout and wall <= 10 * timeout:
                return False
            detail = f"over {timeout:g} s ({cpu:.1f} s CPU, {wall:.1f} s); killed"
            self.failures.setdefault(number, Failure(number, "slow", detail))
            self.slowest = max(self.slowest, (cpu, number))
        elif number >= 0:
            code = worker.process.exitcode
            failure = Failure(number, "crash", f"the worker died (exit code {code})")
            self.failures.setdefault(number, failure)
        task = worker.task
        assert task is not None
        if number >= 0:  # the chunk's report is lost: redo all but this input
            self.done += 1
            rest = (range(number + 1, task.stop), range(task.start, number))
            self.pending.extendleft(r for r in rest if r)
        else:  # died between inputs
            self.pending.appendleft(task)
        return True

    def replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        fresh = self.start_worker()
        self.assign(fresh)
        return fresh


def _save(failure: Failure, pool: list[bytes], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"input-{failure.number}.ics"
    path.write_bytes(mutated(failure.number, pool).body)
    if failure.warmed_by is not None:
        warm = out / f"input-{failure.number}-cache-warmed-by-{failure.warmed_by}.ics"
        warm.write_bytes(mutated(failure.warmed_by, pool).body)
    return path


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def replay(number: int, after: int | None, pool: list[bytes]) -> int:
    """Check one input in this process, its cache first warmed by ``after``."""
    fuzz_input = mutated(number, pool)
    print(
        f"input {number} ({fuzz_input.how}), {len(fuzz_input.body):,} bytes, "
        f"max_occurrences {fuzz_input.max_occurrences}"
    )
    key = (fuzz_input.source, fuzz_input.max_occurrences)
    caches = {key: ParseCache()}
    if after is not None:  # made from the same piece, with the same limit
        outcome(mutated(after, pool).body, fuzz_input.max_occurrences, caches[key])
    started = time.monotonic()
    check(fuzz_input, caches)
    print(f"passes in {time.monotonic() - started:.2f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--memory", type=int, default=2048, help="MiB a worker")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    parser.add_argument("--replay", type=int, default=None)
    parser.add_argument("--after", type=int, default=None)
    args = parser.parse_args()
    pool = sources()
    if args.replay is not None:
        return replay(args.replay, args.after, pool)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # workers die too
    run = Run(args, pool)
    elapsed = run.run()
    kinds = collections.Counter(f.kind for f in run.failures.values())
    seconds, number = run.slowest
    wall, wall_number = run.slowest_wall
    print()
    print(
        _table(
            [
                ("inputs", f"{run.done:,} (from {len(pool)} corpus pieces)"),
                ("workers", f"{args.workers} (on {os.cpu_count()} cores)"),
                ("time", f"{elapsed:.0f} s"),
                ("inputs/s", f"{run.done / elapsed:.0f}"),
                ("crashes", str(kinds["crash"])),
                ("cached != whole", str(kinds["mismatch"])),
                (f"slow inputs (> {args.timeout:g} s)", str(kinds["slow"])),
                ("max CPU time per input", f"{seconds:.2f} s (input {number})"),
                ("max wall time per input", f"{wall:.2f} s (input {wall_number})"),
            ]
        )
    )
    for failure in sorted(run.failures.values(), key=lambda f: f.number)[:50]:
        path = _save(failure, pool, args.out)
        after = "" if failure.warmed_by is None else f" --after {failure.warmed_by}"
        print(
            f"\n--- input {failure.number}: {failure.kind}, saved to {path}; "
            f"replay: python tests/fuzz_parse.py --replay {failure.number}{after}\n"
            f"{failure.detail}"
        )
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
