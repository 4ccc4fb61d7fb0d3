"""HttpFetcher against a real aiohttp server on 127.0.0.1 that injects faults."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from _feed_server import (
    ETAG,
    LAST_MODIFIED,
    FeedServer,
    StaticResolver,
    gzip_bomb,
)
from calsync import (
    BasicAuth,
    BearerAuth,
    CalsyncError,
    FetchError,
    HttpFetcher,
    ValidationError,
)
from calsync.fetch import (
    FetchBlocked,
    FetchConnectionError,
    FetchInvalidURL,
    FetchNotCalendar,
    FetchStatusError,
    FetchTimeout,
    FetchTooLarge,
    FetchTooManyRedirects,
)

pytest_plugins = ["_feed_server"]

LOOPBACK = ["127.0.0.1"]
MB = 1024 * 1024


@pytest.fixture
async def fetcher() -> AsyncIterator[HttpFetcher]:
    async with HttpFetcher(
        allow=LOOPBACK,
        connect_timeout=timedelta(seconds=2),
        total_timeout=timedelta(seconds=5),
    ) as fetcher:
        yield fetcher


# --- the happy path and conditional GET ---------------------------------------


async def test_fetches_the_body_and_its_validators(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    result = await fetcher.fetch(feed_server.url("/cal.ics"))
    assert result.status == "fetched"
    assert result.body == feed_server.calendar
    assert (result.etag, result.last_modified) == (ETAG, LAST_MODIFIED)
    assert result.bytes_read == len(feed_server.calendar)
    assert result.content_type == "text/calendar; charset=utf-8"
    assert not result.unexpected_content_type
    assert result.redirects == 0


async def test_stored_etag_gets_not_modified(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    result = await fetcher.fetch(feed_server.url("/cal.ics"), etag=ETAG)
    assert result.status == "not_modified"
    assert result.body is None
    assert result.etag == ETAG
    assert feed_server.requests[-1].headers["If-None-Match"] == ETAG


async def test_not_modified_without_validators_keeps_the_ones_sent(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    result = await fetcher.fetch(
        feed_server.url("/cal.ics"), last_modified=LAST_MODIFIED
    )
    assert result.status == "not_modified"
    assert result.last_modified == LAST_MODIFIED
    assert feed_server.requests[-1].headers["If-Modified-Since"] == LAST_MODIFIED


async def test_validators_with_control_characters_are_not_sent(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    await fetcher.fetch(feed_server.url("/cal.ics"), etag='"a"\r\nX-Evil: 1')
    assert "If-None-Match" not in feed_server.requests[-1].headers
    assert "X-Evil" not in feed_server.requests[-1].headers


async def test_unsolicited_304_is_a_status_error(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchStatusError) as caught:
        await fetcher.fetch(feed_server.url("/status/304"))
    assert caught.value.status == 304


async def test_cache_control_max_age_is_reported(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    result = await fetcher.fetch(feed_server.url("/cal.ics?cache=public,max-age=900"))
    assert result.max_age == timedelta(seconds=900)


async def test_gzip_body_is_decompressed(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    result = await fetcher.fetch(feed_server.url("/gzip"))
    assert result.body == feed_server.calendar
    assert result.bytes_read < len(feed_server.calendar)


async def test_accept_encoding_offers_only_what_aiohttp_decodes(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    await fetcher.fetch(feed_server.url("/cal.ics"))
    offered = feed_server.requests[-1].headers["Accept-Encoding"]
    assert "gzip" in offered
    assert "deflate" in offered


# --- HTTP statuses --------------------------------------------------------------


async def test_server_error_raises_status_error_with_code(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchStatusError) as caught:
        await fetcher.fetch(feed_server.url("/status/500"))
    assert caught.value.status == 500
    assert caught.value.transient
    assert "HTTP 500 Internal Server Error" in str(caught.value)


async def test_not_found_is_not_transient(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchStatusError) as caught:
        await fetcher.fetch(feed_server.url("/status/404"))
    assert not caught.value.transient


async def test_429_carries_retry_after_seconds(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchStatusError) as caught:
        await fetcher.fetch(feed_server.url("/status/429?retry_after=120"))
    assert caught.value.status == 429
    assert caught.value.retry_after == timedelta(seconds=120)


async def test_503_carries_retry_after_http_date(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    with pytest.raises(FetchStatusError) as caught:
        await fetcher.fetch(feed_server.url(f"/status/503?retry_after={date}"))
    assert caught.value.retry_after == datetime(2037, 10, 21, 7, 28, tzinfo=UTC)


# --- slow, broken and hostile transfers -----------------------------------------


async def test_slow_first_byte_times_out(feed_server: FeedServer) -> None:
    # The server answers after 30 s: only the timeout can raise here.
    async with HttpFetcher(
        allow=LOOPBACK, total_timeout=timedelta(seconds=0.3)
    ) as fetcher:
        with pytest.raises(FetchTimeout) as caught:
            await fetcher.fetch(feed_server.url("/slow-first-byte"))
    assert caught.value.phase == "total"


async def test_trickling_body_times_out_on_the_total_timeout(
    feed_server: FeedServer,
) -> None:
    async with HttpFetcher(
        allow=LOOPBACK, total_timeout=timedelta(seconds=0.5)
    ) as fetcher:
        with pytest.raises(FetchTimeout) as caught:
            await fetcher.fetch(feed_server.url("/trickle"))
    assert caught.value.phase == "total"
    assert caught.value.transient


async def test_connection_reset_mid_body_raises_connection_error(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchConnectionError) as caught:
        await fetcher.fetch(feed_server.url("/reset"))
    assert caught.value.transient


async def test_truncated_body_raises_connection_error(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchConnectionError, match="before the whole body arrived"):
        await fetcher.fetch(feed_server.url("/truncated"))


async def test_refused_connection_raises_connection_error(
    fetcher: HttpFetcher,
) -> None:
    with pytest.raises(FetchConnectionError, match="could not connect"):
        await fetcher.fetch(f"http://127.0.0.1:{_free_port()}/cal.ics")


async def test_unexpected_content_type_is_flagged_and_logged(
    fetcher: HttpFetcher,
    feed_server: FeedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="calsync"):
        result = await fetcher.fetch(feed_server.url("/typed?type=text/plain"))
    assert result.unexpected_content_type
    assert result.body == feed_server.calendar
    assert [r.content_type for r in caplog.records] == ["text/plain"]  # type: ignore[attr-defined]


async def test_html_error_page_with_200_raises_not_calendar(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchNotCalendar) as caught:
        await fetcher.fetch(feed_server.url("/html"))
    assert caught.value.looks_like == "an HTML or XML page"
    assert caught.value.content_type == "text/html"
    assert "s3cr3t" not in str(caught.value)  # the page is never quoted


async def test_gzip_bomb_stops_at_the_decompressed_cap_in_small_memory(
    feed_server: FeedServer,
) -> None:
    gzip_bomb()  # built (and cached) before measuring
    async with HttpFetcher(
        allow=LOOPBACK, max_body_bytes=2 * MB, max_decompressed_bytes=4 * MB
    ) as fetcher:
        tracemalloc.start()
        try:
            with pytest.raises(FetchTooLarge) as caught:
                await fetcher.fetch(feed_server.url("/gzip-bomb"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert caught.value.what == "decompressed"
    assert caught.value.limit == 4 * MB
    assert peak < 8 * MB  # the cap plus buffers; the bomb inflates to 1 GiB


async def test_body_without_length_stops_at_the_body_cap(
    feed_server: FeedServer,
) -> None:
    async with HttpFetcher(allow=LOOPBACK, max_body_bytes=1 * MB) as fetcher:
        with pytest.raises(FetchTooLarge) as caught:
            await fetcher.fetch(feed_server.url("/big?kib=4096"))
    assert caught.value.what == "body"
    assert not caught.value.transient


async def test_declared_oversized_body_is_refused_before_reading(
    feed_server: FeedServer,
) -> None:
    async with HttpFetcher(allow=LOOPBACK, total_timeout=timedelta(seconds=5)) as f:
        with pytest.raises(FetchTooLarge) as caught:
            await f.fetch(feed_server.url("/big-declared"))  # then stalls for 30 s
    assert caught.value.what == "declared"


# --- redirects ------------------------------------------------------------------


async def test_redirect_loop_raises_too_many_redirects(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchTooManyRedirects):
        await fetcher.fetch(feed_server.url("/loop"))
    assert len(feed_server.requests) == 6  # the first request and 5 redirects


async def test_chain_of_six_redirects_is_refused(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchTooManyRedirects):
        await fetcher.fetch(feed_server.url("/chain/6"))


async def test_chain_of_five_redirects_is_followed(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    result = await fetcher.fetch(feed_server.url("/chain/5"))
    assert result.redirects == 5
    assert result.final_url == feed_server.url("/chain/0")


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/cal.ics"]
)
async def test_redirect_into_private_space_is_blocked_before_connecting(
    feed_server: FeedServer, target: str
) -> None:
    async with HttpFetcher(
        allow=LOOPBACK, connect_timeout=timedelta(seconds=3)
    ) as fetcher:
        # A connection attempt would end in FetchTimeout or FetchConnectionError.
        with pytest.raises(FetchBlocked) as caught:
            await fetcher.fetch(feed_server.url(f"/redirect?to={target}"))
    assert caught.value.target in target
    assert len(feed_server.requests) == 1


async def test_redirect_to_a_file_url_is_blocked(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchBlocked, match="redirects may only go to http"):
        await fetcher.fetch(feed_server.url("/redirect?to=file:///etc/passwd"))


async def test_redirect_without_location_is_a_status_error(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchStatusError) as caught:
        await fetcher.fetch(feed_server.url("/status/302"))
    assert caught.value.status == 302


# --- the SSRF guard ---------------------------------------------------------------


async def test_loopback_is_blocked_without_an_allow_list(
    feed_server: FeedServer,
) -> None:
    async with HttpFetcher() as fetcher:
        with pytest.raises(FetchBlocked, match="loopback"):
            await fetcher.fetch(feed_server.url("/cal.ics"))
    assert feed_server.requests == []


async def test_allow_list_opens_loopback(feed_server: FeedServer) -> None:
    async with HttpFetcher(allow=["127.0.0.0/8"]) as fetcher:
        result = await fetcher.fetch(feed_server.url("/cal.ics"))
    assert result.status == "fetched"


async def test_localhost_name_is_blocked_on_its_resolved_address(
    feed_server: FeedServer,
) -> None:
    async with HttpFetcher() as fetcher:
        with pytest.raises(FetchBlocked, match="loopback") as caught:
            await fetcher.fetch(feed_server.url("/cal.ics", host="localhost"))
    assert caught.value.target == "localhost"
    assert feed_server.requests == []


@pytest.mark.parametrize(
    "host", ["[::1]", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "127.1", "0.0.0.0"]
)
async def test_loopback_spellings_are_blocked(
    feed_server: FeedServer, host: str
) -> None:
    async with HttpFetcher() as fetcher:
        with pytest.raises(FetchBlocked):
            await fetcher.fetch(feed_server.url("/cal.ics", host=host))


async def test_name_resolving_to_a_private_address_is_blocked(
    feed_server: FeedServer,
) -> None:
    resolver = StaticResolver({"rebind.test": ["10.0.0.1"]})
    async with HttpFetcher(allow=LOOPBACK, resolver=resolver) as fetcher:
        with pytest.raises(FetchBlocked, match=r"10\.0\.0\.1 is a private address"):
            await fetcher.fetch(feed_server.url("/cal.ics", host="rebind.test"))
    assert resolver.asked == ["rebind.test"]


async def test_redirect_to_a_name_resolving_to_private_space_is_blocked(
    feed_server: FeedServer,
) -> None:
    resolver = StaticResolver({"internal.test": ["10.0.0.1"]})
    async with HttpFetcher(allow=LOOPBACK, resolver=resolver) as fetcher:
        with pytest.raises(FetchBlocked) as caught:
            await fetcher.fetch(
                feed_server.url("/redirect?to=http://internal.test/cal.ics")
            )
    assert caught.value.target == "internal.test"


async def test_name_resolving_into_an_allowed_network_is_fetched(
    feed_server: FeedServer,
) -> None:
    resolver = StaticResolver({"calendar.test": ["127.0.0.1"]})
    async with HttpFetcher(allow=LOOPBACK, resolver=resolver) as fetcher:
        result = await fetcher.fetch(feed_server.url("/cal.ics", host="calendar.test"))
    assert result.status == "fetched"
    assert feed_server.requests[-1].headers["Host"].startswith("calendar.test:")


async def test_only_the_allowed_addresses_of_a_mixed_answer_are_used(
    feed_server: FeedServer,
) -> None:
    # 127.0.0.2 is loopback but not allowed: a listener there sees any attempt.
    resolver = StaticResolver({"mixed.test": ["127.0.0.2", "10.0.0.1", "127.0.0.1"]})
    attempts: list[object] = []
    trap = await asyncio.start_server(
        lambda reader, writer: attempts.append(writer.close()),
        "127.0.0.2",
        feed_server.port,
    )
    async with (
        trap,
        HttpFetcher(
            allow=LOOPBACK, resolver=resolver, connect_timeout=timedelta(seconds=3)
        ) as fetcher,
    ):
        result = await fetcher.fetch(feed_server.url("/cal.ics", host="mixed.test"))
    assert result.status == "fetched"
    assert attempts == [], "a disallowed address of the answer was tried"


async def test_allowed_host_name_is_trusted_whatever_it_resolves_to(
    feed_server: FeedServer,
) -> None:
    resolver = StaticResolver({"intranet.test": ["127.0.0.1"]})
    async with HttpFetcher(allow=["intranet.test"], resolver=resolver) as fetcher:
        result = await fetcher.fetch(feed_server.url("/cal.ics", host="intranet.test"))
    assert result.status == "fetched"


def test_allow_list_entry_that_is_neither_network_nor_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="allow-list entry"):
        HttpFetcher(allow=["not a host!"])


# --- URLs, schemes and credentials -------------------------------------------------


async def test_webcal_is_fetched_over_tls(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    webcal = feed_server.url("/cal.ics").replace("http://", "webcal://")
    with pytest.raises(FetchConnectionError, match="TLS"):
        await fetcher.fetch(webcal)  # the plain-HTTP test server cannot speak TLS


@pytest.mark.parametrize(
    "url", ["ftp://example.com/cal.ics", "file:///etc/passwd", "/cal.ics", "http://"]
)
async def test_unsupported_urls_are_invalid(fetcher: HttpFetcher, url: str) -> None:
    with pytest.raises(FetchInvalidURL) as caught:
        await fetcher.fetch(url)
    assert not caught.value.transient


async def test_basic_auth_from_settings_is_sent(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    await fetcher.fetch(feed_server.url("/cal.ics"), auth=BasicAuth("ann", "pw"))
    assert feed_server.requests[-1].headers["Authorization"] == "Basic YW5uOnB3"


async def test_bearer_auth_from_settings_is_sent(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    await fetcher.fetch(feed_server.url("/cal.ics"), auth=BearerAuth("t0ken"))
    assert feed_server.requests[-1].headers["Authorization"] == "Bearer t0ken"


async def test_user_info_in_the_url_becomes_basic_auth(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    url = feed_server.url("/cal.ics").replace("http://", "http://ann:pw@")
    await fetcher.fetch(url)
    assert feed_server.requests[-1].headers["Authorization"] == "Basic YW5uOnB3"


async def test_credentials_are_not_forwarded_to_another_origin(
    feed_server: FeedServer,
) -> None:
    resolver = StaticResolver({"other.test": ["127.0.0.1"]})
    elsewhere = feed_server.url("/cal.ics", host="other.test")
    async with HttpFetcher(allow=LOOPBACK, resolver=resolver) as fetcher:
        await fetcher.fetch(
            feed_server.url(f"/redirect?to={elsewhere}"), auth=BearerAuth("t0ken")
        )
    first, second = feed_server.requests
    assert first.headers["Authorization"] == "Bearer t0ken"
    assert "Authorization" not in second.headers


async def test_cookies_are_never_sent_back(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    await fetcher.fetch(feed_server.url("/cal.ics"))
    await fetcher.fetch(feed_server.url("/cal.ics"))
    assert all("Cookie" not in seen.headers for seen in feed_server.requests)


# --- lifecycle and error values ------------------------------------------------------


async def test_closed_fetcher_refuses_to_fetch(feed_server: FeedServer) -> None:
    fetcher = HttpFetcher(allow=LOOPBACK)
    await fetcher.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await fetcher.fetch(feed_server.url("/cal.ics"))


async def test_fetch_errors_pickle_intact(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    with pytest.raises(FetchStatusError) as caught:
        await fetcher.fetch(feed_server.url("/status/429?retry_after=5"))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is FetchStatusError
    assert (copy.status, copy.retry_after, copy.url) == (
        429,
        timedelta(seconds=5),
        caught.value.url,
    )
    assert str(copy) == str(caught.value)


def test_every_fetch_error_is_a_calsync_error() -> None:
    assert issubclass(FetchError, CalsyncError)


def test_decompressed_cap_below_the_body_cap_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_decompressed_bytes"):
        HttpFetcher(max_body_bytes=2 * MB, max_decompressed_bytes=1 * MB)


def _free_port() -> int:
    """A port nothing listens on: bound once, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_too_large_feed_says_which_setting_to_raise() -> None:
    error = FetchTooLarge("https://example.com/cal.ics?token=s3cr3t", 1024, "body")
    assert "[fetch] max_body_bytes" in str(error)
    assert "CALSYNC_FETCH_MAX_BODY_BYTES" in str(error)
    assert "s3cr3t" not in str(error)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "app.localhost"])
async def test_localhost_is_refused_like_127_0_0_1_before_any_lookup(host: str) -> None:
    async with HttpFetcher() as fetcher:
        with pytest.raises(FetchBlocked, match="loopback") as raised:
            fetcher.check_url(f"http://{host}:8080/cal.ics")
    assert "CALSYNC_FETCH_ALLOW=" in str(raised.value)


@pytest.mark.parametrize(
    "allow", [["127.0.0.1"], ["::1"], ["localhost"], ["127.0.0.0/8"]]
)
def test_localhost_is_opened_by_its_addresses_or_its_name(allow: list[str]) -> None:
    HttpFetcher(allow=allow).check_url("http://localhost:8080/cal.ics")


@pytest.mark.parametrize(
    "url", ["http://exa mple.com/cal.ics", "http://-bad.example/", "http://a..b/"]
)
def test_a_host_that_cannot_exist_is_an_invalid_url(url: str) -> None:
    with pytest.raises(FetchInvalidURL, match="not a valid host name"):
        HttpFetcher().check_url(url)


async def test_the_total_timeout_covers_every_redirect_hop_together() -> None:
    # Five hops of 0.2 s each: each alone is within 0.5 s, all together are not.
    async def hop(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        left = int(request.match_info["n"])
        if left:
            raise web.HTTPFound(f"/hop/{left - 1}")
        return web.Response(text="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")

    app = web.Application()
    app.router.add_get("/hop/{n:\\d+}", hop)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with HttpFetcher(
            allow=LOOPBACK, total_timeout=timedelta(seconds=0.5)
        ) as fetcher:
            with pytest.raises(FetchTimeout) as caught:
                await fetcher.fetch(f"http://127.0.0.1:{port}/hop/4")
        assert caught.value.phase == "total"
    finally:
        await runner.cleanup()
