"""calsync.testing: FeedServer through the real HttpFetcher, and ManualClock."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import aiohttp
import pytest

from calsync import HttpFetcher, ValidationError
from calsync.fetch import (
    FetchConnectionError,
    FetchNotCalendar,
    FetchStatusError,
    FetchTimeout,
)
from calsync.testing import FeedServer, ManualClock, MemoryStore, disposable_postgres
from conftest import ics

FEED = ics("UID:a\nDTSTART:20260105T090000Z\nSUMMARY:Standup")
EDITED = ics("UID:a\nDTSTART:20260105T093000Z\nSUMMARY:Standup")


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as server:
        yield server


@pytest.fixture
async def fetcher() -> AsyncIterator[HttpFetcher]:
    """Timeouts no busy machine reaches: only a fault the test set trips them."""
    async with HttpFetcher(
        allow=["127.0.0.1"],
        connect_timeout=timedelta(seconds=30),
        total_timeout=timedelta(seconds=30),
    ) as fetcher:
        yield fetcher


# --- FeedServer: bodies and validators --------------------------------------------


async def test_serves_the_body_set_for_a_path(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    result = await fetcher.fetch(server.url("/team.ics"))
    assert result.status == "fetched"
    assert result.body == FEED.encode()
    assert result.content_type == "text/calendar; charset=utf-8"
    assert result.etag is not None
    assert result.last_modified is not None


async def test_url_points_at_loopback_on_the_servers_port(server: FeedServer) -> None:
    assert (
        server.url("/a.ics?token=x") == f"http://127.0.0.1:{server.port}/a.ics?token=x"
    )


async def test_a_path_is_matched_without_its_query(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    result = await fetcher.fetch(server.url("/team.ics?token=s3cr3t"))
    assert result.body == FEED.encode()
    assert server.requests("/team.ics")[0].query == "token=s3cr3t"


async def test_conditional_fetch_with_the_etag_gets_304(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    first = await fetcher.fetch(server.url("/team.ics"))
    second = await fetcher.fetch(server.url("/team.ics"), etag=first.etag)
    assert second.status == "not_modified"
    assert second.etag == first.etag
    assert [r.status for r in server.requests("/team.ics")] == [200, 304]


async def test_conditional_fetch_with_last_modified_only_gets_304(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    first = await fetcher.fetch(server.url("/team.ics"))
    second = await fetcher.fetch(
        server.url("/team.ics"), last_modified=first.last_modified
    )
    assert second.status == "not_modified"


async def test_setting_the_same_body_again_keeps_the_validators(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    first = await fetcher.fetch(server.url("/team.ics"))
    server.set("/team.ics", FEED.encode())
    second = await fetcher.fetch(
        server.url("/team.ics"), etag=first.etag, last_modified=first.last_modified
    )
    assert second.status == "not_modified"


async def test_a_changed_body_gets_new_validators_and_a_200(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    first = await fetcher.fetch(server.url("/team.ics"))
    server.set("/team.ics", EDITED)
    second = await fetcher.fetch(
        server.url("/team.ics"), etag=first.etag, last_modified=first.last_modified
    )
    assert second.status == "fetched"
    assert second.body == EDITED.encode()
    assert second.etag != first.etag
    assert second.last_modified != first.last_modified


async def test_a_change_within_the_same_second_still_moves_last_modified(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    first = await fetcher.fetch(server.url("/team.ics"))
    server.set("/team.ics", EDITED)
    second = await fetcher.fetch(
        server.url("/team.ics"), last_modified=first.last_modified
    )
    assert second.status == "fetched"


async def test_without_validators_every_fetch_is_a_full_200(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/plain.ics", FEED, validators=False)
    first = await fetcher.fetch(server.url("/plain.ics"))
    assert first.etag is None
    assert first.last_modified is None
    second = await fetcher.fetch(server.url("/plain.ics"), etag='"anything"')
    assert second.status == "fetched"


async def test_extra_headers_reach_the_fetcher(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED, headers={"Cache-Control": "max-age=900"})
    result = await fetcher.fetch(server.url("/team.ics"))
    assert result.max_age == timedelta(seconds=900)


async def test_a_login_page_is_refused_by_the_fetcher(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/login", "<!DOCTYPE html><h1>Sign in</h1>", content_type="text/html")
    with pytest.raises(FetchNotCalendar):
        await fetcher.fetch(server.url("/login"))


async def test_removed_and_unknown_paths_answer_404(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.remove("/team.ics")
    with pytest.raises(FetchStatusError) as removed:
        await fetcher.fetch(server.url("/team.ics"))
    with pytest.raises(FetchStatusError) as unknown:
        await fetcher.fetch(server.url("/never.ics"))
    assert removed.value.status == unknown.value.status == 404


# --- FeedServer: faults ----------------------------------------------------------


async def test_fail_answers_the_status_with_retry_after(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.fail("/team.ics", 503, retry_after=120)
    with pytest.raises(FetchStatusError) as failed:
        await fetcher.fetch(server.url("/team.ics"))
    assert failed.value.status == 503
    assert failed.value.retry_after == timedelta(seconds=120)


async def test_fail_accepts_a_timedelta_or_an_instant_as_retry_after(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.fail("/a.ics", 429, retry_after=timedelta(minutes=2))
    server.fail("/b.ics", 503, retry_after=datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(FetchStatusError) as delay:
        await fetcher.fetch(server.url("/a.ics"))
    with pytest.raises(FetchStatusError) as instant:
        await fetcher.fetch(server.url("/b.ics"))
    assert delay.value.retry_after == timedelta(minutes=2)
    assert instant.value.retry_after == datetime(2030, 1, 1, tzinfo=UTC)


async def test_fail_with_times_recovers_by_itself(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.fail("/team.ics", 500, times=2)
    for _ in range(2):
        with pytest.raises(FetchStatusError):
            await fetcher.fetch(server.url("/team.ics"))
    result = await fetcher.fetch(server.url("/team.ics"))
    assert result.body == FEED.encode()
    assert [r.status for r in server.requests("/team.ics")] == [500, 500, 200]


async def test_recover_clears_a_lasting_fault(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.fail("/team.ics", 502)
    for _ in range(3):
        with pytest.raises(FetchStatusError):
            await fetcher.fetch(server.url("/team.ics"))
    server.recover("/team.ics")
    assert (await fetcher.fetch(server.url("/team.ics"))).status == "fetched"


async def test_delay_makes_the_fetcher_time_out(server: FeedServer) -> None:
    server.set("/slow.ics", FEED)
    server.delay("/slow.ics", 3600)
    impatient = HttpFetcher(allow=["127.0.0.1"], total_timeout=timedelta(seconds=1))
    async with impatient:
        with pytest.raises(FetchTimeout):
            await impatient.fetch(server.url("/slow.ics"))


async def test_a_short_delay_answers_late(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/slow.ics", FEED)
    server.delay("/slow.ics", timedelta(milliseconds=300))
    started = time.monotonic()
    result = await fetcher.fetch(server.url("/slow.ics"))
    assert time.monotonic() - started >= 0.3
    assert result.body == FEED.encode()


async def test_a_delay_of_zero_stops_delaying(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/slow.ics", FEED)
    server.delay("/slow.ics", 3600)
    server.delay("/slow.ics", 0)
    # An hour's delay would trip the fetcher's timeout: the answer comes at once.
    assert (await fetcher.fetch(server.url("/slow.ics"))).status == "fetched"


@pytest.mark.parametrize("status", [200, 304, 399, 600])
def test_fail_refuses_a_status_that_is_not_an_error(status: int) -> None:
    with pytest.raises(ValidationError):
        FeedServer().fail("/a.ics", status)


def test_paths_must_start_with_a_slash() -> None:
    with pytest.raises(ValidationError):
        FeedServer().set("team.ics", FEED)


def test_url_before_start_says_how_to_start() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        FeedServer().url("/a.ics")


# --- FeedServer: the request log -------------------------------------------------


async def test_requests_counts_and_tells_conditional_ones_apart(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.set("/other.ics", FEED)
    first = await fetcher.fetch(server.url("/team.ics"))
    await fetcher.fetch(server.url("/team.ics"), etag=first.etag)
    await fetcher.fetch(server.url("/other.ics"))
    seen = server.requests("/team.ics")
    assert len(seen) == 2
    assert [r.conditional for r in seen] == [False, True]
    assert seen[1].if_none_match == first.etag
    assert len(server.requests()) == 3


async def test_recorded_headers_stay_out_of_the_repr(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    await fetcher.fetch(server.url("/team.ics"), etag='"v1"')
    (seen,) = server.requests("/team.ics")
    assert "User-Agent" in seen.headers
    assert "calsync" not in repr(seen)


async def test_requests_from_any_client_are_recorded(server: FeedServer) -> None:
    server.set("/team.ics", FEED)
    async with (
        aiohttp.ClientSession() as session,
        session.head(server.url("/team.ics")) as response,
    ):
        assert response.status == 200
    assert [(r.method, r.status) for r in server.requests("/team.ics")] == [
        ("HEAD", 200)
    ]


async def test_concurrent_fetches_are_all_answered(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    for number in range(10):
        server.set(f"/{number}.ics", FEED)
    results = await asyncio.gather(
        *(fetcher.fetch(server.url(f"/{number}.ics")) for number in range(10))
    )
    assert all(result.body == FEED.encode() for result in results)
    assert len(server.requests()) == 10


async def test_close_stops_listening(fetcher: HttpFetcher) -> None:
    server = FeedServer()
    await server.start()
    url = server.url("/team.ics")
    await server.close()
    await server.close()
    with pytest.raises(FetchConnectionError):
        await fetcher.fetch(url)


# --- FeedServer: holding requests -----------------------------------------------


async def test_a_held_request_waits_until_released(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.hold("/team.ics")
    fetching = asyncio.create_task(fetcher.fetch(server.url("/team.ics")))
    assert await server.held("/team.ics") == 1
    await asyncio.sleep(0)
    assert not fetching.done()
    assert server.requests("/team.ics") == ()  # logged once answered
    server.release("/team.ics")
    assert (await fetching).body == FEED.encode()
    assert [r.status for r in server.requests("/team.ics")] == [200]
    # released for good: the next request is answered at once
    assert (await fetcher.fetch(server.url("/team.ics"))).body == FEED.encode()


async def test_held_waits_for_as_many_requests_as_asked(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.set("/other.ics", EDITED)
    server.hold("/team.ics")
    fetches = [
        asyncio.create_task(fetcher.fetch(server.url("/team.ics"))) for _ in range(2)
    ]
    assert await server.held("/team.ics", 2) == 2
    # other paths are not held
    assert (await fetcher.fetch(server.url("/other.ics"))).body == EDITED.encode()
    server.release("/team.ics")
    assert [result.body for result in await asyncio.gather(*fetches)] == [
        FEED.encode()
    ] * 2


async def test_held_names_the_path_when_nothing_arrives(server: FeedServer) -> None:
    server.hold("/team.ics")
    with pytest.raises(TimeoutError, match=r"/team\.ics"):
        await server.held("/team.ics", timeout=0.01)  # no request is ever made


async def test_held_refuses_a_path_that_is_not_held(server: FeedServer) -> None:
    with pytest.raises(ValidationError, match=r"hold\('/team.ics'\)"):
        await server.held("/team.ics")


async def test_recover_and_close_release_held_requests(
    server: FeedServer, fetcher: HttpFetcher
) -> None:
    server.set("/team.ics", FEED)
    server.hold("/team.ics")
    fetching = asyncio.create_task(fetcher.fetch(server.url("/team.ics")))
    await server.held("/team.ics")
    server.recover("/team.ics")
    assert (await fetching).body == FEED.encode()

    server.hold("/team.ics")
    fetching = asyncio.create_task(fetcher.fetch(server.url("/team.ics")))
    await server.held("/team.ics")
    await server.close()  # answers the held request instead of hanging
    assert (await fetching).status in {"fetched", "not_modified"}


async def test_last_modified_reads_the_servers_clock() -> None:
    clock = ManualClock(datetime(2026, 1, 14, 9, 41, 7, 500, tzinfo=UTC))
    async with FeedServer(clock=clock) as server, aiohttp.ClientSession() as session:
        server.set("/team.ics", FEED)
        clock.advance(timedelta(hours=1))
        server.set("/team.ics", EDITED)
        async with session.get(server.url("/team.ics")) as response:
            modified = response.headers["Last-Modified"]
    assert modified == "Wed, 14 Jan 2026 10:41:07 GMT"


# --- ManualClock ----------------------------------------------------------------

START = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def test_clock_returns_the_instant_it_was_given() -> None:
    clock = ManualClock(START)
    assert clock() == START
    assert clock() == START
    assert clock.now == START


def test_clock_converts_aware_instants_to_utc() -> None:
    berlin_winter = timezone(timedelta(hours=1))
    clock = ManualClock(datetime(2026, 3, 29, 1, 30, tzinfo=berlin_winter))
    assert clock() == START
    assert clock().tzinfo is UTC


def test_advance_moves_by_elapsed_time() -> None:
    clock = ManualClock(START)
    assert clock.advance(timedelta(hours=1)) == START + timedelta(hours=1)
    assert clock() == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_set_moves_to_an_instant_even_backwards() -> None:
    clock = ManualClock(START)
    clock.set(START - timedelta(days=1))
    assert clock() == START - timedelta(days=1)


def test_clock_refuses_naive_datetimes() -> None:
    with pytest.raises(ValidationError, match="naive"):
        ManualClock(datetime(2026, 1, 1))  # noqa: DTZ001
    clock = ManualClock(START)
    with pytest.raises(ValidationError, match="naive"):
        clock.set(datetime(2026, 1, 1))  # noqa: DTZ001
    assert clock() == START


def test_advance_refuses_going_backwards() -> None:
    clock = ManualClock(START)
    with pytest.raises(ValidationError, match="set"):
        clock.advance(timedelta(seconds=-1))
    assert clock() == START


async def test_sleep_ends_when_the_clock_is_moved_past_it_not_before() -> None:
    clock = ManualClock(START)
    sleeping = asyncio.create_task(clock.sleep(60))
    await asyncio.sleep(0)
    assert clock.sleepers == (START + timedelta(seconds=60),)
    clock.advance(timedelta(seconds=59))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not sleeping.done()
    clock.advance(timedelta(seconds=1))
    await asyncio.wait_for(sleeping, 60)
    assert clock.sleepers == ()


async def test_sleep_counts_from_the_instant_of_the_call() -> None:
    clock = ManualClock(START)
    sleep = clock.sleep(60)  # the clock moves before the sleep first runs
    clock.advance(timedelta(seconds=60))
    await asyncio.wait_for(sleep, 60)


async def test_set_wakes_sleepers_it_passes_and_zero_sleeps_return_at_once() -> None:
    clock = ManualClock(START)
    short = asyncio.create_task(clock.sleep(10))
    long = asyncio.create_task(clock.sleep(3600))
    await asyncio.sleep(0)
    clock.set(START + timedelta(minutes=1))
    await asyncio.wait_for(short, 60)
    assert not long.done()
    await asyncio.wait_for(clock.sleep(0), 60)
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long
    assert clock.sleepers == ()


def test_monotonic_follows_the_clock() -> None:
    clock = ManualClock(START)
    before = clock.monotonic()
    clock.advance(timedelta(seconds=90))
    assert clock.monotonic() - before == 90


def test_memory_store_is_still_exported() -> None:
    assert MemoryStore.__module__ == "calsync.stores.memory"


POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL")


@pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL to test against",
)
async def test_disposable_postgres_gives_an_empty_schema_and_drops_it() -> None:
    import psycopg

    assert POSTGRES_URL is not None

    async def schema_exists(name: str) -> bool:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            cursor = await conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)
            )
            return await cursor.fetchone() is not None

    async with disposable_postgres(POSTGRES_URL, prefix="calsync_td") as store:
        async with disposable_postgres(POSTGRES_URL, prefix="calsync_td") as other:
            assert store.schema != other.schema
        assert store.schema.startswith("calsync_td_")
        async with store:
            assert await store.list_calendars() == []
            assert await schema_exists(store.schema)
    assert not await schema_exists(store.schema)
    assert not await schema_exists(other.schema)
