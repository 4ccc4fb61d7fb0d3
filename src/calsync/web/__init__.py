"""The HTTP API (with its OpenAPI document) and the status dashboard.

Needs the ``web`` extra (Jinja2). `create_app` returns an aiohttp application
to serve alone or mount in a host's; `serve_http` is what ``calsync run --http``
runs.
"""

from __future__ import annotations

from calsync.web.access import Access, OwnerOf
from calsync.web.application import create_app
from calsync.web.openapi import openapi_document
from calsync.web.problems import PROBLEM_TYPE, ProblemError
from calsync.web.server import serve_http

__all__ = [
    "PROBLEM_TYPE",
    "Access",
    "OwnerOf",
    "ProblemError",
    "create_app",
    "openapi_document",
    "serve_http",
]
