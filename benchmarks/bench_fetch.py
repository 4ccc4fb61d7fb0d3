"""Benchmark: calsync.HttpFetcher against a bare aiohttp session loop.

A local aiohttp server (in its own process, so it does not share the client's
event loop) answers 200 with a 200 KB calendar body, or 304 to a matching
If-None-Match. Each run sends N requests at concurrency C with each client:

  raw      one aiohttp.ClientSession, `async with session.get(...)`, `read()`
  calsync  one HttpFetcher (SSRF guard, caps, manual redirects, body check)

Runs alternate between the two so machine noise hits both alike; the table shows
the median requests/s over the runs and calsync/raw. Target: ratio >= 0.75.

    python benchmarks/bench_fetch.py [--requests 2000] [--concurrency 64] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

import calsync

ETAG = '"bench-v1"'
BODY_SIZE = 200 * 1024


def calendar_body(size: int) -> bytes:
    head = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calsync//bench//EN\r\n"
    line = b"X-FILLER:" + b"x" * 60 + b"\r\n"
    filler = line * ((size - len(head)) // len(line))
    return head + filler + b"END:VCALENDAR\r\n"


def serve(port: int, ready: multiprocessing.synchronize.Event) -> None:
    body = calendar_body(BODY_SIZE)

    async def feed(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers={"ETag": ETAG})
        return web.Response(
            body=body, headers={"Content-Type": "text/calendar", "ETag": ETAG}
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/cal.ics", feed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Request = Callable[[], Awaitable[int]]


async def drive(request: Request, total: int, concurrency: int) -> float:
    """Send *total* requests from *concurrency* workers; return requests per second."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await request()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def measure(
    url: str, total: int, concurrency: int, runs: int
) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    async with (
        aiohttp.ClientSession() as session,
        calsync.HttpFetcher(allow=["127.0.0.1"]) as fetcher,
    ):

        def raw(etag: str | None) -> Request:
            headers = {"If-None-Match": etag} if etag else {}

            async def request() -> int:
                async with session.get(url, headers=headers) as response:
                    return len(await response.read())

            return request

        def ours(etag: str | None) -> Request:
            async def request() -> int:
                result = await fetcher.fetch(url, etag=etag)
                return len(result.body or b"")

            return request

        cases = {"200 (200 KB)": None, "304": ETAG}
        for etag in cases.values():  # warm both pools and caches
            await drive(raw(etag), concurrency * 2, concurrency)
            await drive(ours(etag), concurrency * 2, concurrency)
        for _ in range(runs):
            for case, etag in cases.items():
                for name, make in (("raw", raw), ("calsync", ours)):
                    rate = await drive(make(etag), total, concurrency)
                    results.setdefault((case, name), []).append(rate)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(timeout=30):
            raise SystemExit("the benchmark server did not start")
        url = f"http://127.0.0.1:{port}/cal.ics"
        results = asyncio.run(measure(url, args.requests, args.concurrency, args.runs))
    finally:
        server.terminate()
        server.join()

    print(
        f"HttpFetcher vs bare aiohttp: {args.requests} requests at concurrency "
        f"{args.concurrency}, median of {args.runs} runs (server in its own process)"
    )
    print()
    print(f"| {'response':<13} | {'raw req/s':>10} | {'calsync req/s':>13} | ratio |")
    print(f"| {'-' * 13} | {'-' * 9}: | {'-' * 12}: | ----: |")
    for case in ("200 (200 KB)", "304"):
        raw = statistics.median(results[(case, "raw")])
        ours = statistics.median(results[(case, "calsync")])
        print(f"| {case:<13} | {raw:>10,.0f} | {ours:>13,.0f} | {ours / raw:.2f} |")


if __name__ == "__main__":
    main()
