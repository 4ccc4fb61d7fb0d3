"""The operator's surface: Prometheus metrics, health that means progress, spans.

`add_routes` mounts ``GET /metrics``, ``/healthz`` and ``/readyz`` on an
aiohttp application (the bundled HTTP server does, and so can a host's). The
metrics need the ``calsync[metrics]`` extra (prometheus_client), tracing the
``calsync[tracing]`` extra (opentelemetry-api); health needs neither.
"""

from __future__ import annotations

import importlib
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from calsync.engine.runner import Runner
from calsync.engine.service import Engine
from calsync.engine.tracing import disable_tracing, enable_tracing
from calsync.observe.health import (
    Health,
    HealthCheck,
    HealthReport,
    job_interval,
    last_progress,
)

if TYPE_CHECKING:
    from calsync.observe.metrics import REMINDER_RESULTS, Metrics

__all__ = [
    "REMINDER_RESULTS",
    "Health",
    "HealthCheck",
    "HealthReport",
    "Metrics",
    "add_routes",
    "disable_tracing",
    "enable_tracing",
    "job_interval",
    "last_progress",
]

logger = logging.getLogger("calsync.observe")

_LAZY = {"Metrics", "REMINDER_RESULTS"}
_PROBLEM = "application/problem+json"


def __getattr__(name: str) -> Any:
    """Import `Metrics` on first use: prometheus_client is an optional extra."""
    if name in _LAZY:
        return getattr(importlib.import_module("calsync.observe.metrics"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def add_routes(
    app: web.Application,
    engine: Engine,
    *,
    runner: Runner | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Add ``GET /metrics``, ``/healthz`` and ``/readyz`` for ``engine`` to ``app``.

    Health checks the store and the job loops: this process's ``runner``'s if
    given, else the store's job history. Without ``metrics``, a `Metrics` on a
    registry of its own (with the process collectors) is made and closed with
    the app; without prometheus_client, ``/metrics`` answers 501 and says what
    to install. Health answers 200 or 503 with a JSON body naming each check.
    """
    health = Health(engine, runner=runner)
    served = metrics if metrics is not None else _own_metrics(engine, runner)

    async def metrics_view(request: web.Request) -> web.Response:
        if served is None:
            return _problem(
                501,
                "Metrics need prometheus_client",
                "install the metrics extra: pip install 'calsync[metrics]'",
            )
        body, content_type = await served.exposition(request.headers.get("Accept"))
        media_type, _, parameters = content_type.partition(";")
        response = web.Response(body=body, content_type=media_type.strip())
        if parameters:
            response.headers["Content-Type"] = content_type
        return response

    async def healthz(request: web.Request) -> web.Response:
        return _report(await health.live())

    async def readyz(request: web.Request) -> web.Response:
        return _report(await health.ready())

    async def cleanup(app: web.Application) -> None:
        health.close()
        if metrics is None and served is not None:
            served.close()

    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_cleanup.append(cleanup)


def _own_metrics(engine: Engine, runner: Runner | None) -> Metrics | None:
    try:
        from prometheus_client import (
            GC_COLLECTOR,
            PLATFORM_COLLECTOR,
            PROCESS_COLLECTOR,
            CollectorRegistry,
        )

        from calsync.observe.metrics import Metrics
    except ImportError:
        logger.info("prometheus_client is not installed: /metrics answers 501")
        return None
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    triggers = runner.triggers if runner is not None else None
    return Metrics(engine, registry=registry, triggers=triggers)


def _report(report: HealthReport) -> web.Response:
    return web.json_response(report.to_dict(), status=200 if report.ok else 503)


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(text=json.dumps(body), status=status, content_type=_PROBLEM)
