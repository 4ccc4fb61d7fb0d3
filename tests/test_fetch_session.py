"""`GuardedSession`, the one session owner of feeds and webhooks, on real aiohttp."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from calsync.fetch.session import GuardedSession
from calsync.fetch.ssrf import TargetGuard

GUARD = TargetGuard.from_allow(["127.0.0.1"])


async def test_the_session_is_made_once_keeps_no_cookies_and_reads_no_proxy() -> None:
    owner = GuardedSession("Client", GUARD, headers={"User-Agent": "test/1"})
    session = owner.get()
    try:
        assert owner.get() is session
        assert isinstance(session.cookie_jar, aiohttp.DummyCookieJar)
        assert not session.trust_env
        assert session.headers["User-Agent"] == "test/1"
    finally:
        await owner.aclose()
    assert session.closed


async def test_a_closed_owner_refuses_every_later_use() -> None:
    owner = GuardedSession("Client", GUARD)
    owner.get()
    await owner.aclose()
    with pytest.raises(RuntimeError, match="this Client is closed"):
        owner.get()


def test_a_session_made_on_one_loop_is_refused_on_another() -> None:
    owner = GuardedSession("Client", GUARD)

    async def use() -> aiohttp.ClientSession:
        return owner.get()

    with asyncio.Runner() as first:
        first.run(use())
        with (
            asyncio.Runner() as second,
            pytest.raises(RuntimeError, match="belongs to the event loop"),
        ):
            second.run(use())
        first.run(owner.aclose())


def test_a_session_passed_in_serves_any_loop_and_stays_open() -> None:
    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    with asyncio.Runner() as first:
        mine = first.run(make())
        owner = GuardedSession("Client", GUARD, session=mine)

        async def use() -> aiohttp.ClientSession:
            return owner.get()

        assert first.run(use()) is mine
        with asyncio.Runner() as second:
            assert second.run(use()) is mine
        first.run(owner.aclose())
        assert not mine.closed
        first.run(mine.close())
