"""Benchmark: the dashboard and the JSON API with many calendars on SQLite.

Adds --calendars calendars (each URL with a token, so every row is redacted for
display) to a fresh SQLite store, serves `calsync.web.create_app` on 127.0.0.1
and times each request --runs times, the requests taking turns run by run.
Prints min / median / max per request.

    python benchmarks/bench_web.py [--calendars 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from benchkit import Samples, alternating, table
from calsync import Engine, HttpFetcher, Settings, SQLiteStore
from calsync.web import create_app

REQUESTS = {
    "GET /?page=3 (dashboard)": "/?page=3",
    "GET /?q=c+04242 (dashboard search)": "/?q=c+04242",
    "GET /api/calendars?limit=50": "/api/calendars?limit=50",
    "GET /api/status": "/api/status",
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calendars", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    store = SQLiteStore(folder / "web.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    settings = Settings(parse_isolation=False)
    samples = Samples()
    async with Engine(store, fetcher, settings=settings) as engine:
        await asyncio.gather(
            *(
                engine.add_calendar(
                    f"http://127.0.0.1/{n}.ics?token=secret", name=f"c {n:05}"
                )
                for n in range(args.calendars)
            )
        )
        runner = web.AppRunner(create_app(engine), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http:
            for _, order in alternating(list(REQUESTS), args.runs):
                for name in order:
                    started = time.perf_counter()
                    async with http.get(base + REQUESTS[name]) as response:
                        await response.read()
                        assert response.status == 200, response.status
                    samples.add(name, time.perf_counter() - started)
        await runner.cleanup()
    print(
        f"calsync.web with {args.calendars:,} calendars on SQLite, "
        f"{args.runs} runs each; min / median / max"
    )
    table(
        ["request", "ms"],
        [[name, samples.spread(name, scale=1000)] for name in REQUESTS],
    )


if __name__ == "__main__":
    asyncio.run(main())
