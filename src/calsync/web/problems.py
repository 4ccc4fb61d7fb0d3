"""RFC 9457 problem details: every error the HTTP API answers is one JSON object.

A handler raises `ProblemError`; the error middleware turns it, aiohttp's own
HTTP errors and calsync's errors into ``application/problem+json``, and any
other exception into a 500 that names no internals (the traceback is logged).
"""

from __future__ import annotations

import http
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from calsync.core.errors import (
    CalendarExists,
    CalendarNotFound,
    CalsyncError,
    LeaseLost,
    StoreError,
)
from calsync.core.redact import redact_text

__all__ = ["PROBLEM_TYPE", "ProblemError", "problem_middleware", "problem_response"]

logger = logging.getLogger("calsync.web")

PROBLEM_TYPE = "application/problem+json"
"""The media type of every error body (RFC 9457)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProblemError(Exception):
    """Answer the request with a problem: an HTTP status and a sentence for a person."""

    def __init__(
        self, status: int, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem_response(
    status: int, detail: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """Return an ``application/problem+json`` response; ``detail`` is redacted."""
    body = {
        "type": "about:blank",
        "title": http.HTTPStatus(status).phrase,
        "status": status,
        "detail": redact_text(detail),
    }
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def _status_of(error: CalsyncError) -> int:
    """Return the HTTP status a calsync error stands for."""
    if isinstance(error, CalendarNotFound):
        return 404
    if isinstance(error, CalendarExists | LeaseLost):
        return 409
    if isinstance(error, StoreError):
        return 503  # unreachable, or a schema this version does not know
    return 422  # a bad value, URL or feed: the request's, not the server's


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Turn every error into a problem response; never a traceback in a body."""
    try:
        return await handler(request)
    except ProblemError as error:
        return problem_response(error.status, error.detail, headers=error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {
            key: error.headers[key] for key in ("Allow",) if key in error.headers
        }
        return problem_response(error.status, error.reason, headers=headers)
    except CalsyncError as error:
        status = _status_of(error)
        if status >= 500:
            logger.error("calsync error answering %s %s", request.method, request.path)
        return problem_response(status, str(error))
    except Exception:
        logger.exception(
            "unexpected error answering %s %s", request.method, request.path
        )
        return problem_response(500, "an unexpected error; the server log has details")
