"""A real aiohttp feed server on 127.0.0.1 that injects faults on demand.

Use it from a test module with ``pytest_plugins = ["_feed_server"]`` and the
``feed_server`` fixture. Every request is recorded (path, query, headers) so a
test can assert what the fetcher sent. Test modules also import its helpers,
so pytest must not try to rewrite it again: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

CORPUS = Path(__file__).resolve().parent / "corpus"
HOLIDAYS = CORPUS / "recurring-ical-events" / "Germany_Holidays.ics"
ETAG = '"holidays-v1"'
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><body><h1>Sign in</h1>"
    b"<p>Your session token s3cr3t has expired.</p></body></html>"
)


@attrs.frozen
class Seen:
    """One request the server received."""

    path: str
    query: str
    headers: CIMultiDict[str]


@functools.cache
def gzip_bomb(gigabytes: int = 1) -> bytes:
    """A valid gzip stream of *gigabytes* GiB of zeros, about 1 MiB compressed.

    Built from one fully flushed deflate block of 1 MiB of zeros repeated, so
    it takes milliseconds instead of compressing a gigabyte.
    """
    mebibyte = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = compressor.compress(mebibyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(mebibyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks = 1024 * gigabytes
    crc = 0
    for _ in range(blocks):
        crc = zlib.crc32(mebibyte, crc)
    final_block = b"\x03\x00"  # an empty final fixed-Huffman block
    trailer = struct.pack("<II", crc, (blocks << 20) & 0xFFFFFFFF)
    return head + block * (blocks - 1) + final_block + trailer


class FeedServer:
    """The app and its fault routes; `url(path)` gives an absolute URL."""

    def __init__(self) -> None:
        self.calendar = HOLIDAYS.read_bytes()
        self.requests: list[Seen] = []
        self.port = 0
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/cal.ics", self.calendar_with_validators)
        app.router.add_get("/corpus/{path:.+}", self.corpus_file)
        app.router.add_get("/status/{code:\\d+}", self.status)
        app.router.add_get("/typed", self.typed)
        app.router.add_get("/html", self.html_page)
        app.router.add_get("/slow-first-byte", self.slow_first_byte)
        app.router.add_get("/trickle", self.trickle)
        app.router.add_get("/reset", self.reset_mid_body)
        app.router.add_get("/truncated", self.truncated)
        app.router.add_get("/gzip-bomb", self.gzip_bomb)
        app.router.add_get("/gzip", self.gzipped_calendar)
        app.router.add_get("/big", self.big)
        app.router.add_get("/big-declared", self.big_declared)
        app.router.add_get("/loop", self.loop)
        app.router.add_get("/chain/{hops:\\d+}", self.chain)
        app.router.add_get("/redirect", self.redirect)
        self.app = app

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @web.middleware
    async def _record(
        self, request: web.Request, handler: web.Handler
    ) -> web.StreamResponse:
        self.requests.append(
            Seen(request.path, request.query_string, CIMultiDict(request.headers))
        )
        return await handler(request)

    def _calendar(self, **headers: str) -> web.Response:
        return web.Response(
            body=self.calendar,
            headers={"Content-Type": "text/calendar; charset=utf-8", **headers},
        )

    async def calendar_with_validators(self, request: web.Request) -> web.Response:
        validators = {"ETag": ETAG, "Last-Modified": LAST_MODIFIED}
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers={"ETag": ETAG})
        if request.headers.get("If-Modified-Since") == LAST_MODIFIED:
            return web.Response(status=304)
        extra = (
            {"Cache-Control": request.query["cache"]}
            if "cache" in request.query
            else {}
        )
        return self._calendar(**validators, **extra)

    async def corpus_file(self, request: web.Request) -> web.Response:
        path = (CORPUS / request.match_info["path"]).resolve()
        if not path.is_relative_to(CORPUS) or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type="text/calendar")

    async def status(self, request: web.Request) -> web.Response:
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(
            status=int(request.match_info["code"]), text="nope", headers=headers
        )

    async def typed(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.calendar, headers={"Content-Type": request.query["type"]}
        )

    async def html_page(self, request: web.Request) -> web.Response:
        return web.Response(body=HTML_ERROR_PAGE, content_type="text/html")

    async def slow_first_byte(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return self._calendar()

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/calendar"})
        await response.prepare(request)
        await response.write(b"BEGIN:VCALENDAR\r\n")
        for _ in range(3000):
            await response.write(b"X-A:b\r\n")
            await asyncio.sleep(0.01)
        return response

    async def reset_mid_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/calendar"})
        response.content_length = len(self.calendar)
        await response.prepare(request)
        await response.write(self.calendar[:1000])
        await asyncio.sleep(0.05)
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return response

    async def truncated(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/calendar"})
        response.content_length = len(self.calendar)
        await response.prepare(request)
        await response.write(self.calendar[:1000])
        await asyncio.sleep(0.05)
        transport = request.transport
        assert transport is not None
        transport.close()
        return response

    async def gzip_bomb(self, request: web.Request) -> web.StreamResponse:
        bomb = gzip_bomb()
        response = web.StreamResponse(
            headers={"Content-Type": "text/calendar", "Content-Encoding": "gzip"}
        )
        response.content_length = len(bomb)
        await response.prepare(request)
        view = memoryview(bomb)
        for start in range(0, len(view), 1 << 16):
            await response.write(view[start : start + (1 << 16)])
        return response

    async def gzipped_calendar(self, request: web.Request) -> web.Response:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = compressor.compress(self.calendar) + compressor.flush()
        return web.Response(
            body=body,
            headers={"Content-Type": "text/calendar", "Content-Encoding": "gzip"},
        )

    async def big(self, request: web.Request) -> web.StreamResponse:
        """A calendar-looking body far over any test cap, without Content-Length."""
        response = web.StreamResponse(headers={"Content-Type": "text/calendar"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"BEGIN:VCALENDAR\r\n")
        line = b"X-FILLER:" + b"x" * 1000 + b"\r\n"
        for _ in range(int(request.query.get("kib", "4096"))):
            await response.write(line)
        return response

    async def big_declared(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/calendar"})
        response.content_length = 1 << 30
        await response.prepare(request)
        await response.write(b"BEGIN:VCALENDAR\r\n")
        await asyncio.sleep(30)
        return response

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def chain(self, request: web.Request) -> web.Response:
        hops = int(request.match_info["hops"])
        if hops == 0:
            return self._calendar()
        raise web.HTTPFound(f"/chain/{hops - 1}")

    async def redirect(self, request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["to"]})


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    server = FeedServer()
    runner = web.AppRunner(
        server.app, handler_cancellation=True, access_log=None, shutdown_timeout=1
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site.port
    try:
        yield server
    finally:
        await runner.cleanup()


class StaticResolver(AbstractResolver):
    """A resolver with a fixed table, to point made-up names at chosen addresses."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"unknown test host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass
