"""`serve_http`: `create_app` on a host and port, as `calsync run --http` serves it."""

from __future__ import annotations

import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from calsync.core.errors import ValidationError
from calsync.engine.service import Engine
from calsync.observe import add_routes
from calsync.web.application import create_app

__all__ = ["ExtraRoutes", "check_bind", "is_loopback", "parse_bind", "serve_http"]

logger = logging.getLogger("calsync.web")

ExtraRoutes = Callable[[web.Application], Awaitable[None] | None]
"""Adds a host's own routes (``/metrics``, ``/healthz``) to the app; may be async."""


def parse_bind(bind: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:8080`` for IPv6); raises `ValidationError`."""
    host, colon, port = bind.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or int(port) > 65_535:
        raise ValidationError(
            f"[http] bind must be host:port, like 127.0.0.1:8080, got {bind!r}"
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(bind: str, token: str | None) -> tuple[str, int]:
    """Return (host, port); refuse a bind beyond loopback without a token.

    Raises `ValidationError` naming the setting to set.
    """
    host, port = parse_bind(bind)
    if token is None and not is_loopback(host):
        raise ValidationError(
            f"refusing to serve the HTTP API on {host} without a token: set [http] "
            "token (CALSYNC_HTTP_TOKEN), or bind to 127.0.0.1"
        )
    return host, port


async def serve_http(
    engine: Engine,
    bind: str,
    *,
    token: str | None = None,
    owner_header: str | None = None,
    runner: Any = None,
    extra_routes: ExtraRoutes | None = None,
) -> web.AppRunner:
    """Start serving the API and dashboard on ``bind``; return the started runner.

    Refuses (`ValidationError`) to listen beyond loopback without a ``token``.
    Serves ``/metrics``, ``/healthz`` and ``/readyz`` too (`calsync.observe`);
    ``extra_routes(app)`` adds the host's own routes first (served without
    credentials). Stop it with ``await site_runner.cleanup()``.
    """
    host, port = check_bind(bind, token)
    app = create_app(engine, runner=runner, token=token, owner_header=owner_header)
    await add_routes(app, engine, runner=runner)
    if extra_routes is not None:
        added = extra_routes(app)
        if inspect.isawaitable(added):
            await added
    site_runner = web.AppRunner(app, access_log=None)
    await site_runner.setup()
    site = web.TCPSite(site_runner, host, port)
    await site.start()
    for address in site_runner.addresses:
        logger.info("serving the HTTP API and dashboard on %s", _url(address))
    return site_runner


def _url(address: Any) -> str:
    """Return the base URL of a listening socket's (host, port, ...) address."""
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
