"""`GuardedSession`: the one aiohttp session an HTTP client of calsync's sends on.

Feeds and webhooks both send through one of these: made on first use, connected
only where the SSRF guard allows, with no cookies kept and no proxy read from the
environment, and bound to the event loop it was made on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

from calsync.fetch.ssrf import GuardedResolver, TargetGuard, guarded_connector

__all__ = ["GuardedSession", "default_user_agent"]


def default_user_agent() -> str:
    """Return the User-Agent calsync sends unless told otherwise."""
    try:
        release = version("calsync")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        release = "0"
    return f"calsync/{release} (+https://github.com/calsync/calsync)"


class GuardedSession:
    """An owner's aiohttp session, made on first use and guarded by *guard*.

    A session made here belongs to the event loop it was made on: a call from
    another loop raises RuntimeError, as does any call after `aclose`. A
    *session* passed in is the caller's: it is used on any loop, never closed.
    *owner* names the client in those errors; *connector* and *options* go to
    the connector and the session.
    """

    def __init__(
        self,
        owner: str,
        guard: TargetGuard,
        *,
        resolver: AbstractResolver | None = None,
        session: aiohttp.ClientSession | None = None,
        connector: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self._owner = owner
        self._guard = guard
        self._inner_resolver = resolver
        self._connector = dict(connector or {})
        self._options = options
        self._session = session
        self._owned = session is None
        self._resolver: GuardedResolver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def get(self) -> aiohttp.ClientSession:
        """Return the session for the running loop, making it on first use."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError(f"this {self._owner} is closed; create a new one")
        if self._session is None:
            connector, self._resolver = guarded_connector(
                self._guard, self._inner_resolver, **self._connector
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # none shared across tenants
                trust_env=False,
                **self._options,
            )
            self._loop = loop
        elif self._owned and self._loop is not loop:
            raise RuntimeError(
                f"this {self._owner} belongs to the event loop it was first used on; "
                "create one per event loop"
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session (if made here) and its resolver; later calls fail."""
        self._closed = True
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None and self._owned:
            await session.close()
        if resolver is not None:
            await resolver.close()
