"""`create_app`: the HTTP API, its OpenAPI document and the dashboard in one app.

Serve it alone (``calsync run --http``, `serve_http`) or mount it in a host's
aiohttp application: ``host.add_subapp("/calsync/", create_app(engine, ...))``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from calsync.engine.service import Engine
from calsync.web.access import Access, OwnerOf, access_middleware
from calsync.web.dashboard import add_dashboard_routes
from calsync.web.openapi import openapi_document
from calsync.web.problems import problem_middleware
from calsync.web.routes import ACCESS, ENGINE, RUNNER, add_api_routes

__all__ = ["create_app"]


async def _openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the document, its server URL where this app is mounted."""
    path = str(request.app.router["openapi"].url_for())
    return web.json_response(openapi_document(path.removesuffix("openapi.json")))


def create_app(
    engine: Engine,
    *,
    runner: Any = None,
    token: str | None = None,
    owner_header: str | None = None,
    owner_of: OwnerOf | None = None,
) -> web.Application:
    """Return the API and dashboard over ``engine`` as an aiohttp application.

    ``token`` is the bearer token of the API and the dashboard's login (None:
    no authentication: serve such an app on loopback only). A request is
    scoped to one owner by ``owner_of(request)`` or by the ``owner_header`` a
    reverse proxy sets; otherwise it sees every owner. ``runner`` (a `Runner`)
    is woken after a manual sync or requeue. Routes a host adds to the app
    under other names than ``api.*`` and ``ui.*`` need no credentials (a
    metrics scrape, a health check). The engine is opened and closed by its
    owner, not by the app.
    """
    access = Access(token=token, owner_header=owner_header, owner_of=owner_of)
    app = web.Application(
        middlewares=[problem_middleware, access_middleware(access)],
        client_max_size=64 * 1024,
    )
    app[ENGINE] = engine
    app[RUNNER] = runner
    app[ACCESS] = access
    app.router.add_get("/openapi.json", _openapi, name="openapi")
    add_api_routes(app)
    add_dashboard_routes(app)
    return app
