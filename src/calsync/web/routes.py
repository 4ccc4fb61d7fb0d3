"""The JSON API handlers: each checks by the OpenAPI document, then calls the Engine."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from calsync.core.redact import redact
from calsync.engine.results import CalendarStatus, SyncResult
from calsync.engine.service import Engine
from calsync.stores.records import Calendar, CircuitState, NotificationStatus
from calsync.web import payloads
from calsync.web.access import Access
from calsync.web.openapi import OPERATIONS, SCHEMAS
from calsync.web.problems import ProblemError
from calsync.web.validation import problem_in, query_values

__all__ = ["ENGINE", "RUNNER", "add_api_routes", "calendar_page", "calendar_statuses"]

ENGINE = web.AppKey("calsync_engine", Engine)
RUNNER: web.AppKey[Any] = web.AppKey("calsync_runner")
ACCESS = web.AppKey("calsync_access", Access)
_MAX_BODY = 64 * 1024

Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def query(request: web.Request, operation_id: str) -> dict[str, Any]:
    """Return the operation's query parameters, checked; a 400 if one is bad."""
    parameters = OPERATIONS[operation_id].get("parameters", [])
    values, problem = query_values(request.query, parameters)
    if problem is not None:
        raise ProblemError(400, problem)
    return values


async def body(request: web.Request, schema: str) -> dict[str, Any]:
    """Return the JSON body, checked by a schema of the document (415, 400, 422)."""
    if request.content_type != "application/json":
        raise ProblemError(415, "send the body as Content-Type: application/json")
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise ProblemError(413, f"the body is larger than {_MAX_BODY} bytes")
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise ProblemError(413, f"the body is larger than {_MAX_BODY} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, "the body is not JSON") from None
    problem = problem_in(data, SCHEMAS[schema], "body")
    if problem is not None:
        raise ProblemError(422, problem)
    return data  # type: ignore[no-any-return]  # an object: the schema says so


def engine_of(request: web.Request) -> Engine:
    """Return the Engine this app serves."""
    return request.app[ENGINE]


def owner_of(request: web.Request) -> str | None:
    """Return the owner the request is scoped to (None: every owner)."""
    return request.app[ACCESS].owner(request)


def calendar_page(
    statuses: list[CalendarStatus],
    *,
    search: str | None,
    state: str,
    offset: int,
    limit: int,
) -> tuple[list[CalendarStatus], int]:
    """Return a page of the calendars matching, by name, and how many match."""
    matching = sorted(
        statuses,
        key=lambda status: ((status.calendar.name or "").casefold(), status.id),
    )
    if search:
        needle = search.casefold()
        matching = [s for s in matching if _matches(s.calendar, needle)]
    wanted = _STATES.get(state)
    if wanted is not None:
        matching = [s for s in matching if wanted(s)]
    return matching[offset : offset + limit], len(matching)


async def calendar_statuses(request: web.Request) -> list[CalendarStatus]:
    """Return the health of every calendar of the request's owner."""
    engine = engine_of(request)
    calendars = await engine.list_calendars(owner=owner_of(request))
    return [engine.calendar_status(calendar) for calendar in calendars]


def _matches(calendar: Calendar, needle: str) -> bool:
    """Whether the casefolded ``needle`` is in the name, the id or the redacted URL.

    The URL is redacted only when its raw text could match: a search never finds
    a calendar by its secret, and 10,000 calendars are not all redacted per page.
    """
    if needle in (calendar.name or "").casefold() or needle in calendar.id:
        return True
    if "*" not in needle and needle not in calendar.url.casefold():
        return False
    return needle in redact(calendar.url).casefold()


_STATES: dict[str, Callable[[CalendarStatus], bool]] = {
    "failing": lambda s: s.calendar.state.consecutive_failures > 0,
    "paused": lambda s: s.calendar.paused,
    "stale": lambda s: s.stale,
    "circuit_open": lambda s: s.circuit != CircuitState.CLOSED,
}


async def list_calendars(request: web.Request) -> web.Response:
    """GET /api/calendars."""
    values = query(request, "listCalendars")
    statuses, total = calendar_page(
        await calendar_statuses(request),
        search=values.get("q"),
        state=values["state"],
        offset=values["offset"],
        limit=values["limit"],
    )
    return _json(
        {
            "items": [payloads.calendar_json(s) for s in statuses],
            "total": total,
            "offset": values["offset"],
            "limit": values["limit"],
        }
    )


def _owned(request: web.Request, wanted: str | None) -> str:
    scoped = owner_of(request)
    if scoped is not None and wanted not in (None, scoped):
        raise ProblemError(403, f"this request may add calendars of {scoped!r} only")
    return scoped or wanted or "default"


async def add_calendar(request: web.Request) -> web.Response:
    """POST /api/calendars."""
    data = await body(request, "NewCalendar")
    engine = engine_of(request)
    owner = _owned(request, data.pop("owner", None))
    calendar = await engine.add_calendar(owner=owner, **data)
    return _json(payloads.calendar_json(engine.calendar_status(calendar)), 201)


def _calendar_id(request: web.Request) -> str:
    return request.match_info["calendar_id"]


async def get_calendar(request: web.Request) -> web.Response:
    """GET /api/calendars/{calendar_id}."""
    engine = engine_of(request)
    calendar = await engine.get_calendar(_calendar_id(request), owner=owner_of(request))
    return _json(payloads.calendar_json(engine.calendar_status(calendar)))


async def update_calendar(request: web.Request) -> web.Response:
    """PATCH /api/calendars/{calendar_id}."""
    changes = await body(request, "CalendarChanges")
    engine = engine_of(request)
    calendar = await engine.update_calendar(
        _calendar_id(request), owner=owner_of(request), **changes
    )
    return _json(payloads.calendar_json(engine.calendar_status(calendar)))


async def remove_calendar(request: web.Request) -> web.Response:
    """DELETE /api/calendars/{calendar_id}."""
    await engine_of(request).remove_calendar(
        _calendar_id(request), owner=owner_of(request)
    )
    return web.Response(status=204)


async def pause_calendar(request: web.Request) -> web.Response:
    """POST /api/calendars/{calendar_id}/pause."""
    engine = engine_of(request)
    calendar = await engine.pause(_calendar_id(request), owner=owner_of(request))
    return _json(payloads.calendar_json(engine.calendar_status(calendar)))


async def resume_calendar(request: web.Request) -> web.Response:
    """POST /api/calendars/{calendar_id}/resume."""
    engine = engine_of(request)
    calendar = await engine.resume(_calendar_id(request), owner=owner_of(request))
    _wake(request, "sync_due")
    return _json(payloads.calendar_json(engine.calendar_status(calendar)))


async def sync_calendar(request: web.Request) -> web.Response:
    """POST /api/calendars/{calendar_id}/sync: sync now, answer with the result."""
    values = query(request, "syncCalendar")
    result = await sync_now(request, _calendar_id(request), force=values["force"])
    return _json(payloads.sync_json(result))


async def sync_now(
    request: web.Request, calendar_id: str, *, force: bool
) -> SyncResult:
    """Sync one of the request's owner's calendars now; wake the follow-up jobs."""
    engine = engine_of(request)
    calendar = await engine.get_calendar(calendar_id, owner=owner_of(request))
    result = await engine.sync_calendar(calendar.id, force=force)
    for job in result.follow_ups:
        _wake(request, job)
    return result


def _wake(request: web.Request, job: str) -> None:
    """Tell the runner (if the app has one) to run a job now."""
    runner = request.app.get(RUNNER)
    if runner is not None:
        runner.wake(job)


async def get_status(request: web.Request) -> web.Response:
    """GET /api/status."""
    status = await engine_of(request).status(owner=owner_of(request))
    return _json(payloads.status_json(status))


async def list_upcoming(request: web.Request) -> web.Response:
    """GET /api/upcoming."""
    values = query(request, "listUpcoming")
    items = await engine_of(request).upcoming(
        days=values["days"], owner=owner_of(request)
    )
    return _json(
        {"items": [payloads.upcoming_json(i) for i in items[: values["limit"]]]}
    )


async def explain(request: web.Request) -> web.Response:
    """GET /api/explain."""
    values = query(request, "explain")
    owner = owner_of(request)
    found = await engine_of(request).explain(values["q"])
    mine = [e for e in found if owner is None or e.calendar.owner == owner]
    if not mine:
        raise ProblemError(404, "no calendar id or event UID matches")
    return _json({"items": [payloads.explanation_json(e) for e in mine]})


async def list_job_runs(request: web.Request) -> web.Response:
    """GET /api/jobs."""
    values = query(request, "listJobRuns")
    if owner_of(request) is not None:
        raise ProblemError(403, "job history spans every owner: ask unscoped")
    runs = await engine_of(request).job_runs(
        job=values.get("job"), limit=values["limit"]
    )
    return _json({"items": [payloads.job_run_json(run) for run in runs]})


async def list_dead_letters(request: web.Request) -> web.Response:
    """GET /api/notifications/failed."""
    values = query(request, "listDeadLetters")
    engine, owner = engine_of(request), owner_of(request)
    records = await engine.dead_letters(
        owner=owner,
        missed=values["missed"],
        offset=values["offset"],
        limit=values["limit"],
    )
    counts = await engine.store.notification_counts(owner=owner)
    total = counts[NotificationStatus.FAILED]
    if values["missed"]:
        total += counts[NotificationStatus.MISSED]
    return _json(
        {
            "items": [payloads.dead_letter_json(r) for r in records],
            "total": total,
            "offset": values["offset"],
            "limit": values["limit"],
        }
    )


async def requeue(request: web.Request) -> web.Response:
    """POST /api/notifications/{notification_id}/requeue."""
    count = await requeue_one(request, request.match_info["notification_id"])
    return _json({"requeued": count})


async def requeue_one(request: web.Request, notification_id: str) -> int:
    """Requeue one failed reminder of the request's owner; 404 if there is none."""
    count = await engine_of(request).requeue([notification_id], owner=owner_of(request))
    if count == 0:
        raise ProblemError(404, "no failed reminder has that id")
    _wake(request, "dispatch_notifications")
    return count


_HANDLERS: dict[str, Endpoint] = {
    "listCalendars": list_calendars,
    "addCalendar": add_calendar,
    "getCalendar": get_calendar,
    "updateCalendar": update_calendar,
    "removeCalendar": remove_calendar,
    "pauseCalendar": pause_calendar,
    "resumeCalendar": resume_calendar,
    "syncCalendar": sync_calendar,
    "getStatus": get_status,
    "listUpcoming": list_upcoming,
    "explain": explain,
    "listJobRuns": list_job_runs,
    "listDeadLetters": list_dead_letters,
    "requeueNotification": requeue,
}


def add_api_routes(app: web.Application) -> None:
    """Add every operation of the OpenAPI document, named ``api.<operationId>``."""
    for operation_id, operation in OPERATIONS.items():
        app.router.add_route(
            operation["method"].upper(),
            operation["path"],
            _HANDLERS[operation_id],
            name=f"api.{operation_id}",
        )
