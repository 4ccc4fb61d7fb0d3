"""`FeedServer`: a real HTTP server on 127.0.0.1 that serves the feeds a test sets.

It answers like a well-behaved calendar host (ETag, Last-Modified, 304 to a
conditional request) and injects faults on demand: error statuses with
Retry-After, slow answers, vanished feeds. A test can hold a path's requests
and release them when it chooses. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Self
from urllib.parse import urlsplit

import attrs
from aiohttp import web

from calsync.core.errors import ValidationError
from calsync.core.model import as_aware_utc

__all__ = ["FeedRequest", "FeedServer"]

RetryAfter = int | timedelta | datetime
Clock = Callable[[], datetime]


@attrs.frozen
class FeedRequest:
    """One request the server answered: what was asked, and with which status.

    ``conditional`` is true when the request carried If-None-Match or
    If-Modified-Since. ``headers`` may hold credentials and stay out of `repr`.
    """

    method: str
    path: str
    query: str
    status: int
    if_none_match: str | None = None
    if_modified_since: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def conditional(self) -> bool:
        """Whether the client sent validators from an earlier fetch."""
        return self.if_none_match is not None or self.if_modified_since is not None


@attrs.frozen
class _Feed:
    body: bytes
    content_type: str
    etag: str | None
    last_modified: datetime | None
    headers: Mapping[str, str]


@attrs.define
class _Gate:
    """Holds a path's requests until `FeedServer.release`; counts those waiting."""

    opened: asyncio.Event = attrs.Factory(asyncio.Event)
    waiting: int = 0
    arrived: asyncio.Condition = attrs.Factory(asyncio.Condition)


@attrs.define
class _Fault:
    status: int
    retry_after: str | None
    remaining: int | None


def _route(path: str) -> str:
    """Return the path part a request is matched on; queries are ignored."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValidationError(f"a feed path starts with '/', got {path!r}")
    return urlsplit(path).path


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'


def _http_date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC).replace(microsecond=0), usegmt=True)


def _retry_after(value: RetryAfter | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _http_date(as_aware_utc(value))
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or seconds < 0:
        raise ValidationError(f"retry_after must be >= 0 seconds, got {value!r}")
    return str(int(seconds))


def _changed_at(previous: _Feed | None, now: datetime) -> datetime:
    """Return a Last-Modified for a new body: *now*, and later than the previous one.

    HTTP dates have whole seconds; two changes within a second must still differ.
    """
    now = as_aware_utc(now).replace(microsecond=0)
    if previous is None or previous.last_modified is None:
        return now
    return max(now, previous.last_modified + timedelta(seconds=1))


def _etag_matches(header: str, etag: str) -> bool:
    """Whether an If-None-Match value names *etag* (weak comparison, RFC 9110)."""
    if header.strip() == "*":
        return True
    candidates = (part.strip().removeprefix("W/") for part in header.split(","))
    return etag.removeprefix("W/") in candidates


def _not_modified_since(header: str, last_modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    return last_modified.replace(microsecond=0) <= since


class FeedServer:
    """A local calendar host for tests: set bodies by path, inject faults, read the log.

    Use it as an async context manager; it listens on 127.0.0.1 on a free port.
    A fetcher must be allowed to reach it: ``HttpFetcher(allow=["127.0.0.1"])``.
    Paths are matched without their query string. Unknown paths answer 404.
    Last-Modified reads *clock* (the machine's by default; a `ManualClock` in a
    test on virtual time).
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, clock: Clock | None = None
    ) -> None:
        self._clock = clock
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._feeds: dict[str, _Feed] = {}
        self._faults: dict[str, _Fault] = {}
        self._delays: dict[str, float] = {}
        self._gates: dict[str, _Gate] = {}
        self._log: list[FeedRequest] = []
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        where = "not started" if self._port is None else self.url("/")
        return f"FeedServer({where}, feeds={sorted(self._feeds)})"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start listening; starting a started server does nothing."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = site.port

    async def close(self) -> None:
        """Stop listening and drop open connections; closing twice does nothing."""
        for route in list(self._gates):
            self.release(route)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The TCP port the server listens on; raises RuntimeError before `start`."""
        if self._port is None:
            raise RuntimeError("the FeedServer is not started: use `async with`")
        return self._port

    def url(self, path: str) -> str:
        """Return the absolute http URL of *path* (which may carry a query)."""
        _route(path)
        return f"http://{self._host}:{self.port}{path}"

    def set(
        self,
        path: str,
        body: bytes | str,
        *,
        content_type: str = "text/calendar",
        headers: Mapping[str, str] | None = None,
        validators: bool = True,
    ) -> None:
        """Serve *body* at *path* from now on (a str is sent as UTF-8).

        The ETag is a hash of the body and Last-Modified the time the body last
        changed; setting the same body again keeps both, so conditional requests
        keep getting 304. ``validators=False`` sends neither (and never 304).
        ``headers`` are added to every 200 answer (e.g. Cache-Control).
        """
        route = _route(path)
        if isinstance(body, str):
            data = body.encode("utf-8")
            if "charset" not in content_type.lower():
                content_type = f"{content_type}; charset=utf-8"
        else:
            data = bytes(body)
        etag = _etag(data) if validators else None
        previous = self._feeds.get(route)
        if previous is not None and previous.body == data:
            last_modified = previous.last_modified
        else:
            now = datetime.now(UTC) if self._clock is None else self._clock()
            last_modified = _changed_at(previous, now)
        self._feeds[route] = _Feed(
            body=data,
            content_type=content_type,
            etag=etag,
            last_modified=last_modified if validators else None,
            headers=dict(headers or {}),
        )

    def remove(self, path: str) -> None:
        """Stop serving *path*: it answers 404 from now on."""
        self._feeds.pop(_route(path), None)

    def fail(
        self,
        path: str,
        status: int,
        *,
        retry_after: RetryAfter | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests for *path* with *status* instead of its body.

        ``retry_after`` (seconds, a timedelta or an instant) is sent as
        Retry-After. ``times`` limits the fault to that many requests; None
        keeps it until `recover`.
        """
        if isinstance(status, bool) or not 400 <= status <= 599:
            raise ValidationError(f"status must be a 4xx or 5xx code, got {status!r}")
        if times is not None and (isinstance(times, bool) or times < 1):
            raise ValidationError(f"times must be >= 1 or None, got {times!r}")
        self._faults[_route(path)] = _Fault(status, _retry_after(retry_after), times)

    def delay(self, path: str, seconds: float | timedelta) -> None:
        """Wait *seconds* before answering each request for *path* (0 to stop)."""
        wait = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if wait < 0:
            raise ValidationError(f"a delay must be >= 0 seconds, got {seconds!r}")
        route = _route(path)
        if wait:
            self._delays[route] = float(wait)
        else:
            self._delays.pop(route, None)

    def recover(self, path: str) -> None:
        """Clear the fault, delay and hold set for *path*; its body is served again."""
        route = _route(path)
        self._faults.pop(route, None)
        self._delays.pop(route, None)
        self.release(path)

    def hold(self, path: str) -> None:
        """Hold every request for *path* unanswered until `release` (a gate).

        A test waits with `held` until a request is under way, does what it must
        while the client waits, then releases it: no sleep guesses how long a
        fetch takes. A held request is logged in `requests` once answered.
        """
        self._gates.setdefault(_route(path), _Gate())

    async def held(self, path: str, count: int = 1, *, timeout: float = 120.0) -> int:
        """Wait until *count* requests for *path* are held; return how many are.

        Needs `hold` first. ``timeout`` (seconds) is a safety net reached only when
        no request ever comes: it raises TimeoutError naming the path.
        """
        gate = self._gates.get(_route(path))
        if gate is None:
            raise ValidationError(f"{path!r} is not held: call hold({path!r}) first")
        async with gate.arrived:
            try:
                await asyncio.wait_for(
                    gate.arrived.wait_for(lambda: gate.waiting >= count), timeout
                )
            except TimeoutError:
                raise TimeoutError(
                    f"no {count} request(s) for {path!r} arrived in {timeout:.0f} s"
                ) from None
            return gate.waiting

    def release(self, path: str) -> None:
        """Answer the held requests for *path*, and stop holding new ones."""
        gate = self._gates.pop(_route(path), None)
        if gate is not None:
            gate.opened.set()

    def requests(self, path: str | None = None) -> tuple[FeedRequest, ...]:
        """Return the requests answered so far, for *path* or all, oldest first."""
        if path is None:
            return tuple(self._log)
        route = _route(path)
        return tuple(seen for seen in self._log if seen.path == route)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        route = request.path
        gate = self._gates.get(route)
        if gate is not None:
            await self._wait_at(gate)
        wait = self._delays.get(route)
        if wait:
            await asyncio.sleep(wait)
        response = self._response(route, request)
        self._log.append(
            FeedRequest(
                method=request.method,
                path=route,
                query=request.query_string,
                status=response.status,
                if_none_match=request.headers.get("If-None-Match"),
                if_modified_since=request.headers.get("If-Modified-Since"),
                headers=dict(request.headers),
            )
        )
        return response

    @staticmethod
    async def _wait_at(gate: _Gate) -> None:
        async with gate.arrived:
            gate.waiting += 1
            gate.arrived.notify_all()
        try:
            await gate.opened.wait()
        finally:
            gate.waiting -= 1

    def _response(self, route: str, request: web.Request) -> web.Response:
        fault = self._faults.get(route)
        if fault is not None:
            return self._fault_response(route, fault)
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"})
        feed = self._feeds.get(route)
        if feed is None:
            return web.Response(status=404, text="no feed at this path")
        validators = {}
        if feed.etag is not None:
            validators["ETag"] = feed.etag
        if feed.last_modified is not None:
            validators["Last-Modified"] = _http_date(feed.last_modified)
        if self._not_modified(feed, request):
            return web.Response(status=304, headers=validators)
        headers = {**feed.headers, **validators, "Content-Type": feed.content_type}
        return web.Response(body=feed.body, headers=headers)

    def _fault_response(self, route: str, fault: _Fault) -> web.Response:
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[route]
        headers = (
            {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        )
        return web.Response(
            status=fault.status, text="calsync.testing: injected fault", headers=headers
        )

    @staticmethod
    def _not_modified(feed: _Feed, request: web.Request) -> bool:
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:
            return feed.etag is not None and _etag_matches(if_none_match, feed.etag)
        if_modified_since = request.headers.get("If-Modified-Since")
        if if_modified_since is not None and feed.last_modified is not None:
            return _not_modified_since(if_modified_since, feed.last_modified)
        return False
