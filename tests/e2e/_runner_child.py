"""The bundled runner in its own OS process, for the end-to-end tests.

Usage: python _runner_child.py (--sqlite PATH | --postgres URL --schema NAME)
    --deliveries FILE [--worker NAME] [--late-grace S] [--lease-ttl S]
    [--dispatch-concurrency N] [--handler-delay S] [--clock-file FILE]

It runs `Runner.run(install_signal_handlers=True)` over a real `Engine`, with
every job triggered each second. The handler appends ``"<id> <pid> <time>\\n"``
to FILE and fsyncs before it returns, so a test reads what was delivered even
after a SIGKILL. It logs to stderr. With ``--clock-file`` the Engine and the
Runner run on the test's `FileClock` instead of the real clock.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta

from _clock import FileClock  # this file's folder is first on sys.path

from calsync import (
    Delivery,
    Engine,
    HttpFetcher,
    PostgresStore,
    Runner,
    Settings,
    SQLiteStore,
    Store,
    Triggers,
)

EVERY_SECOND = Triggers(
    sync_due="every 1s",
    check_notifications="every 1s",
    dispatch_notifications="every 1s",
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", help="path of the SQLite file")
    where.add_argument("--postgres", help="PostgreSQL URL (with --schema)")
    parser.add_argument("--schema", default="calsync")
    parser.add_argument("--deliveries", required=True)
    parser.add_argument("--worker", default=f"e2e:{os.getpid()}")
    # Ten minutes: a runner that starts late on a busy machine still delivers
    # what fell due meanwhile; a test about the grace passes its own.
    parser.add_argument("--late-grace", type=float, default=600.0)
    parser.add_argument("--lease-ttl", type=float, default=4.0)
    parser.add_argument("--dispatch-concurrency", type=int, default=10)
    parser.add_argument("--handler-delay", type=float, default=0.0)
    parser.add_argument("--clock-file", help="run on the test's shared clock")
    return parser.parse_args()


def open_store(args: argparse.Namespace) -> Store:
    if args.sqlite:
        return SQLiteStore(args.sqlite)
    return PostgresStore(args.postgres, schema=args.schema)


def settings(args: argparse.Namespace) -> Settings:
    """Short leases, so that a killed runner's claims come back within seconds."""
    lease_ttl = timedelta(seconds=args.lease_ttl)
    return Settings(
        worker=args.worker,
        per_host_rate=None,
        late_grace=timedelta(seconds=args.late_grace),
        lease_ttl=lease_ttl,
        parse_timeout=lease_ttl * 0.8,
        handler_timeout=min(timedelta(seconds=30), lease_ttl / 2),
        dispatch_concurrency=args.dispatch_concurrency,
    )


class FileHandler:
    """Record each delivery as one fsynced line: id, pid, and when it was called."""

    def __init__(self, path: str, delay: float, clock: Callable[[], datetime]) -> None:
        self._path = path
        self._delay = delay
        self._clock = clock

    async def __call__(self, delivery: Delivery) -> None:
        line = f"{delivery.id} {os.getpid()} {self._clock().isoformat()}\n"
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._delay:
            # Recorded but not yet marked delivered: a kill now makes a duplicate.
            await asyncio.sleep(self._delay)


async def main() -> None:
    args = arguments()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    clock = FileClock(args.clock_file) if args.clock_file else None
    store = open_store(args)
    async with Engine(store, fetcher, settings=settings(args), clock=clock) as engine:
        handler = FileHandler(args.deliveries, args.handler_delay, engine.now)
        if clock is None:
            runner = Runner(engine, handler, triggers=EVERY_SECOND)
        else:
            runner = Runner(
                engine,
                handler,
                triggers=EVERY_SECOND,
                sleep=clock.sleep,
                monotonic=clock.monotonic,
            )
        await runner.run(install_signal_handlers=True)


if __name__ == "__main__":
    asyncio.run(main())
