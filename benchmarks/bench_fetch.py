"""Benchmark: calsync.HttpFetcher against a bare aiohttp session loop.

A local aiohttp server (in its own process, so it does not share the client's
event loop) answers 200 with a 200 KB calendar body, or 304 to a matching
If-None-Match. Each run sends N requests at concurrency C with each client:

  raw      one aiohttp.ClientSession, `async with session.get(...)`, `read()`
  calsync  one HttpFetcher (SSRF guard, caps, manual redirects, body check)

N is set per response kind from the warm-up so a run lasts about --seconds.
The two clients alternate, and which goes first alternates run by run, so
machine noise hits both alike. Reported per response kind and client:
requests/s and client CPU per request (``time.process_time``; the server's is
not counted), min / median / max over the runs, the ratio of the medians and
the run-by-run ratios' spread. Target: calsync >= 0.9x raw's requests/s.

    python benchmarks/bench_fetch.py [--seconds 3] [--concurrency 64] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

import calsync
from benchkit import Samples, alternating, spread, table

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


async def drive(request: Request, total: int, concurrency: int) -> tuple[float, float]:
    """Send *total* requests from *concurrency* workers; return wall and CPU seconds."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await request()

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, time.process_time() - cpu


CASES = {"200 (200 KB)": None, "304": ETAG}
CLIENTS = ("raw", "calsync")
TARGET = 0.9


async def measure(url: str, seconds: float, concurrency: int, runs: int) -> Samples:
    samples = Samples()
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

        makers = {"raw": raw, "calsync": ours}
        totals = {}
        for case, etag in CASES.items():  # warm both pools; size the runs
            await drive(ours(etag), concurrency * 4, concurrency)
            wall, _ = await drive(raw(etag), concurrency * 8, concurrency)
            totals[case] = max(concurrency, round(seconds * concurrency * 8 / wall))
        for _, order in alternating(CLIENTS, runs):
            for case, etag in CASES.items():
                for name in order:
                    total = totals[case]
                    wall, cpu = await drive(makers[name](etag), total, concurrency)
                    samples.add(f"{case} {name} rate", total / wall)
                    samples.add(f"{case} {name} cpu", cpu / total)
                    samples.add(f"{case} {name} wall", wall)
    samples.values["totals"] = [float(totals[case]) for case in CASES]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(timeout=30):
            raise SystemExit("the benchmark server did not start")
        url = f"http://127.0.0.1:{port}/cal.ics"
        samples = asyncio.run(measure(url, args.seconds, args.concurrency, args.runs))
    finally:
        server.terminate()
        server.join()

    totals = dict(zip(CASES, samples.values["totals"], strict=True))
    print(
        f"HttpFetcher vs bare aiohttp at concurrency {args.concurrency}, "
        f"{args.runs} runs each, alternating (server in its own process); "
        "min / median / max"
    )
    print()
    rows = []
    for case in CASES:
        walls = (
            samples.values[f"{case} raw wall"] + samples.values[f"{case} calsync wall"]
        )
        for name in CLIENTS:
            rows.append(
                [
                    f"{case}, {name}",
                    f"{totals[case]:,.0f} in {spread(walls, digits=2)} s",
                    samples.spread(f"{case} {name} rate"),
                    samples.spread(f"{case} {name} cpu", 1e6),
                ]
            )
    table(["response, client", "requests per run", "req/s", "CPU us/req"], rows)
    print()
    rows = []
    for case in CASES:
        rate = samples.ratio(f"{case} calsync rate", f"{case} raw rate")
        cpu = samples.ratio(f"{case} calsync cpu", f"{case} raw cpu")
        paired = samples.paired(f"{case} calsync rate", f"{case} raw rate")
        verdict = "ok" if rate >= TARGET else "BELOW TARGET"
        rows.append(
            [
                case,
                f"{rate:.2f}x",
                spread(paired, digits=2),
                f"{cpu:.2f}x",
                f">= {TARGET}x: {verdict}",
            ]
        )
    table(
        [
            "response",
            "calsync/raw req/s",
            "run by run",
            "calsync/raw CPU per req",
            "target",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
