"""The status page at ``/``: server-rendered (Jinja2), forms for every control.

Every control is a POST form with the session's CSRF token that redirects back
(post/redirect/get), so a reload never repeats an action. Times are shown in
the viewer's zone: ``?tz=Europe/Berlin``, else the ``calsync_tz`` cookie a
three-line script sets from the browser, else UTC. The page reloads itself
every 30 seconds.
"""

from __future__ import annotations

import json
import math
import secrets
from datetime import datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from aiohttp import web

from calsync.core.durations import format_duration
from calsync.core.errors import CalsyncError
from calsync.core.redact import redact, redact_text
from calsync.core.zones import resolve_zone
from calsync.engine.results import CalendarStatus, SyncOutcome
from calsync.stores.records import NotificationStatus
from calsync.web.access import (
    SESSION,
    SESSION_COOKIE,
    app_path,
    set_session_cookie,
)
from calsync.web.problems import ProblemError
from calsync.web.routes import (
    ACCESS,
    calendar_page,
    calendar_statuses,
    engine_of,
    owner_of,
    requeue_one,
    sync_now,
)
from calsync.web.validation import query_values

__all__ = ["add_dashboard_routes"]

PAGE_SIZE = 50
REFRESH_SECONDS = 30
_FLASH = "calsync_flash"
_ZONE = "calsync_tz"
_UPCOMING_DAYS = 2
_SHOWN = 25

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("calsync.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_templates.filters["duration"] = format_duration
_templates.filters["redact"] = redact
_templates.filters["redact_text"] = redact_text

_QUERY = [
    {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200}},
    {
        "name": "state",
        "in": "query",
        "schema": {
            "type": "string",
            "enum": ["all", "failing", "stale", "paused", "circuit_open"],
            "default": "all",
        },
    },
    {
        "name": "page",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 1},
    },
    {"name": "tz", "in": "query", "schema": {"type": "string", "maxLength": 64}},
]


def _zone(request: web.Request) -> tuple[str, tzinfo]:
    """Return the viewer's zone: ?tz=, else the cookie the script sets, else UTC."""
    cookie = unquote(request.cookies.get(_ZONE, ""))  # the script URL-encodes it
    for name in (request.query.get("tz"), cookie):
        if name:
            try:
                return name, resolve_zone(name)
            except CalsyncError:
                continue
    return "UTC", resolve_zone("UTC")


def _local(zone: tzinfo) -> Any:
    def shown(instant: datetime | None) -> str:
        if instant is None:
            return "—"
        return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    return shown


def _flash(request: web.Request) -> dict[str, str] | None:
    raw = request.cookies.get(_FLASH)
    if not raw:
        return None
    try:
        flash = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(flash, dict):
        return None
    return {"kind": str(flash.get("kind", "info")), "text": str(flash.get("text", ""))}


async def index(request: web.Request) -> web.Response:
    """GET /: the dashboard."""
    values, problem = query_values(request.query, _QUERY)
    if problem is not None:
        raise ProblemError(400, problem)
    engine, owner = engine_of(request), owner_of(request)
    zone_name, zone = _zone(request)
    page = values["page"]
    everyone = await calendar_statuses(request)
    statuses, total = calendar_page(
        everyone,
        search=values.get("q"),
        state=values["state"],
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    counts = await engine.store.notification_counts(owner=owner)
    upcoming = await engine.upcoming(days=_UPCOMING_DAYS, owner=owner)
    reminders = [
        (item, lead, fire_at, state)
        for item in upcoming
        for lead, fire_at, state in item.fires
        if fire_at >= engine.now() - timedelta(minutes=1)
    ]
    reminders.sort(key=lambda row: row[2])
    dead = await engine.dead_letters(owner=owner, limit=_SHOWN)
    runs = [] if owner is not None else await engine.job_runs(limit=_SHOWN)
    nonce = SESSION.get()
    script_nonce = secrets.token_urlsafe(16)
    html = _templates.get_template("dashboard.html").render(
        base=app_path(request),
        csrf=request.app[ACCESS].csrf_token(nonce),
        needs_login=not request.app[ACCESS].open,
        owner=owner,
        local=_local(zone),
        zone=zone_name,
        zone_guessed=request.query.get("tz") is None and _ZONE not in request.cookies,
        script_nonce=script_nonce,
        refresh=REFRESH_SECONDS,
        flash=_flash(request),
        summary=_summary(everyone, counts),
        checked_at=engine.now(),
        calendars=statuses,
        total=total,
        page=page,
        pages=max(1, math.ceil(total / PAGE_SIZE)),
        q=values.get("q") or "",
        state=values["state"],
        here=request.path_qs,
        reminders=reminders[:_SHOWN],
        dead=dead,
        names={s.id: s.calendar.name or s.id for s in everyone},
        failed_status=NotificationStatus.FAILED,
        runs=runs,
    )
    response = web.Response(text=html, content_type="text/html")
    _secure_headers(response, script_nonce)
    if _FLASH in request.cookies:
        response.del_cookie(_FLASH, path=app_path(request))
    return response


def _summary(
    statuses: list[CalendarStatus], counts: dict[NotificationStatus, int]
) -> dict[str, int]:
    """Count the calendars by health and the reminders by outbox status."""
    return {
        "calendars": len(statuses),
        "stale": sum(s.stale for s in statuses),
        "failing": sum(bool(s.calendar.state.consecutive_failures) for s in statuses),
        "paused": sum(s.calendar.paused for s in statuses),
        "pending": counts[NotificationStatus.PENDING],
        "failed": counts[NotificationStatus.FAILED],
        "missed": counts[NotificationStatus.MISSED],
    }


def _see_other(target: str) -> web.Response:
    return web.Response(status=303, headers={"Location": target})


def _secure_headers(response: web.Response, script_nonce: str) -> None:
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src 'nonce-{script_nonce}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


async def _back(request: web.Request, kind: str, text: str) -> web.Response:
    """Redirect to the page the form was on (this app's only), with a message."""
    form = await request.post()
    target = form.get("next")
    base = app_path(request)
    if (
        not isinstance(target, str)
        or not target.startswith(base)
        or "//" in target
        or "\\" in target
    ):
        target = base
    response = _see_other(target)
    flash = quote(json.dumps({"kind": kind, "text": redact_text(text)[:2000]}))
    response.set_cookie(
        _FLASH, flash, path=base, httponly=True, samesite="Strict", max_age=60
    )
    return response


async def sync(request: web.Request) -> web.Response:
    """POST /calendars/{calendar_id}/sync: sync now, then say how it went."""
    calendar_id = request.match_info["calendar_id"]
    try:
        result = await sync_now(request, calendar_id, force=False)
    except CalsyncError as error:
        return await _back(request, "error", str(error))
    if result.outcome == SyncOutcome.FAILED:
        return await _back(request, "error", f"Sync failed: {result.error}")
    text = (
        f"Synced {result.label}: {result.outcome} (+{result.added} "
        f"~{result.updated} -{result.removed})"
    )
    if result.problems:
        text += "; feed problems: " + "; ".join(str(p) for p in result.problems[:5])
    return await _back(request, "warning" if result.problems else "ok", text)


async def pause(request: web.Request) -> web.Response:
    """POST /calendars/{calendar_id}/pause."""
    return await _toggle(request, paused=True)


async def resume(request: web.Request) -> web.Response:
    """POST /calendars/{calendar_id}/resume."""
    return await _toggle(request, paused=False)


async def _toggle(request: web.Request, *, paused: bool) -> web.Response:
    engine, owner = engine_of(request), owner_of(request)
    calendar_id = request.match_info["calendar_id"]
    try:
        if paused:
            calendar = await engine.pause(calendar_id, owner=owner)
        else:
            calendar = await engine.resume(calendar_id, owner=owner)
    except CalsyncError as error:
        return await _back(request, "error", str(error))
    verb = "Paused" if paused else "Resumed"
    return await _back(request, "ok", f"{verb} {calendar.label}")


async def requeue(request: web.Request) -> web.Response:
    """POST /notifications/{notification_id}/requeue."""
    try:
        await requeue_one(request, request.match_info["notification_id"])
    except (CalsyncError, ProblemError) as error:
        return await _back(request, "error", str(error))
    return await _back(request, "ok", "Requeued: it goes out with the next dispatch")


async def login_form(request: web.Request) -> web.Response:
    """GET /login: the token form (the browser's way in when a token is set)."""
    failed = request.query.get("failed") == "1"
    html = _templates.get_template("login.html").render(
        base=app_path(request), failed=failed
    )
    response = web.Response(text=html, content_type="text/html")
    _secure_headers(response, secrets.token_urlsafe(16))
    return response


async def login(request: web.Request) -> web.Response:
    """POST /login: check the token, then set the session cookie."""
    form = await request.post()
    token = form.get("token")
    base = app_path(request)
    access = request.app[ACCESS]
    if not isinstance(token, str) or not access.token_ok(token):
        return _see_other(f"{base}login?failed=1")
    response = _see_other(base)
    set_session_cookie(request, response, access.new_session())
    return response


async def logout(request: web.Request) -> web.Response:
    """POST /logout: forget the session cookie."""
    base = app_path(request)
    target = f"{base}login" if not request.app[ACCESS].open else base
    response = _see_other(target)
    response.del_cookie(SESSION_COOKIE, path=base)
    return response


def add_dashboard_routes(app: web.Application) -> None:
    """Add the dashboard's page and form targets, named ``ui.<name>``."""
    router = app.router
    router.add_get("/", index, name="ui.index")
    router.add_get("/login", login_form, name="ui.login_form")
    router.add_post("/login", login, name="ui.login")
    router.add_post("/logout", logout, name="ui.logout")
    router.add_post("/calendars/{calendar_id}/sync", sync, name="ui.sync")
    router.add_post("/calendars/{calendar_id}/pause", pause, name="ui.pause")
    router.add_post("/calendars/{calendar_id}/resume", resume, name="ui.resume")
    router.add_post(
        "/notifications/{notification_id}/requeue", requeue, name="ui.requeue"
    )
