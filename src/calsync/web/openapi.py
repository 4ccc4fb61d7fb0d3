"""The OpenAPI 3.1 document of calsync's HTTP API: the contract the API validates by.

`openapi_document` is served at ``/openapi.json``; the request schemas in it are
the ones the handlers check requests with (`calsync.web.validation`).
"""

from __future__ import annotations

import copy
from typing import Any

from calsync.core.breaker import CircuitState
from calsync.engine.insight import UPCOMING_MAX_DAYS
from calsync.engine.jobs import Job
from calsync.engine.results import SyncOutcome
from calsync.stores.records import JobOutcome, NotificationStatus

__all__ = ["OPERATIONS", "openapi_document"]

_REF = "#/components/schemas/"
_PAGE_MAX = 500
_OFFSET_MAX = 1_000_000


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


_INSTANT = _nullable("string", format="date-time")
_TEXT = {"type": "string", "maxLength": 200}
_DURATION = {
    "type": "string",
    "minLength": 1,
    "maxLength": 40,
    "description": "a duration such as 10m, 1h30m or 90d",
}
_COUNT = {"type": "integer", "minimum": 0}

_CALENDAR_SETTINGS: dict[str, Any] = {
    "url": {
        "type": "string",
        "format": "uri",
        "minLength": 1,
        "maxLength": 2048,
        "description": "the feed (http, https or webcal)",
        "examples": ["https://calendar.example.com/team.ics?token=secret"],
    },
    "name": _nullable("string", maxLength=200, examples=["Team"]),
    "every": {
        "type": "string",
        "minLength": 1,
        "maxLength": 100,
        "description": "a schedule (every 15m, daily 07:30, cron ...) or an interval",
        "examples": ["every 15m", "daily 07:30", "30m"],
    },
    "leads": {
        "type": "array",
        "items": _DURATION,
        "maxItems": 20,
        "examples": [["10m", "1h"]],
    },
    "tz": {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "examples": ["Europe/Berlin", "UTC"],
    },
    "window_past": {**_DURATION, "examples": ["1d"]},
    "horizon": {**_DURATION, "examples": ["90d"]},
    "use_alarms": {"type": "boolean"},
}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "An error (RFC 9457 problem details).",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    },
    "CalendarState": {
        "type": "object",
        "required": [
            "last_attempt_at",
            "last_success_at",
            "next_sync_at",
            "last_error",
            "consecutive_failures",
            "circuit",
            "held_removals",
        ],
        "properties": {
            "last_attempt_at": _INSTANT,
            "last_success_at": _INSTANT,
            "next_sync_at": _INSTANT,
            "last_error": _nullable("string"),
            "consecutive_failures": _COUNT,
            "circuit": {"type": "string", "enum": [str(s) for s in CircuitState]},
            "held_removals": _COUNT,
        },
    },
    "Calendar": {
        "type": "object",
        "description": "A calendar; its URL is redacted (no tokens, no passwords).",
        "required": [
            "id",
            "name",
            "owner",
            "url",
            "schedule",
            "leads",
            "tz",
            "window_past",
            "horizon",
            "use_alarms",
            "paused",
            "has_auth",
            "stale",
            "state",
        ],
        "properties": {
            "id": {"type": "string"},
            "name": _nullable("string"),
            "owner": {"type": "string"},
            "url": {"type": "string"},
            "schedule": {"type": "string"},
            "leads": {"type": "array", "items": {"type": "string"}},
            "tz": _nullable("string"),
            "window_past": {"type": "string"},
            "horizon": {"type": "string"},
            "use_alarms": {"type": "boolean"},
            "paused": {"type": "boolean"},
            "has_auth": {"type": "boolean"},
            "stale": {"type": "boolean"},
            "state": _ref("CalendarState"),
        },
    },
    "CalendarPage": {
        "type": "object",
        "required": ["items", "total", "offset", "limit"],
        "properties": {
            "items": {"type": "array", "items": _ref("Calendar")},
            "total": _COUNT,
            "offset": _COUNT,
            "limit": _COUNT,
        },
    },
    "NewCalendar": {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            **_CALENDAR_SETTINGS,
            "owner": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "the tenant (a scoped request may name only its own)",
            },
            "paused": {"type": "boolean"},
        },
    },
    "CalendarChanges": {
        "type": "object",
        "additionalProperties": False,
        "properties": _CALENDAR_SETTINGS,
    },
    "FeedProblem": {
        "type": "object",
        "required": ["what", "where", "why"],
        "properties": {
            "what": {"type": "string"},
            "where": {"type": "string"},
            "why": {"type": "string"},
        },
    },
    "SyncResult": {
        "type": "object",
        "required": [
            "calendar_id",
            "outcome",
            "added",
            "updated",
            "removed",
            "expired",
            "held_removals",
            "not_modified",
            "notifications_created",
            "notifications_cancelled",
            "error",
            "next_sync_at",
            "elapsed_seconds",
            "problems",
        ],
        "properties": {
            "calendar_id": {"type": "string"},
            "outcome": {"type": "string", "enum": [str(o) for o in SyncOutcome]},
            "added": _COUNT,
            "updated": _COUNT,
            "removed": _COUNT,
            "expired": _COUNT,
            "held_removals": _COUNT,
            "not_modified": {"type": "boolean"},
            "notifications_created": _COUNT,
            "notifications_cancelled": _COUNT,
            "error": _nullable("string"),
            "next_sync_at": _INSTANT,
            "elapsed_seconds": {"type": "number", "minimum": 0},
            "problems": {"type": "array", "items": _ref("FeedProblem")},
        },
    },
    "JobStats": {
        "type": "object",
        "required": [
            "job",
            "runs",
            "last_outcome",
            "last_finished_at",
            "p50_seconds",
            "p95_seconds",
            "last_error",
        ],
        "properties": {
            "job": {"type": "string"},
            "runs": _COUNT,
            "last_outcome": _nullable("string"),
            "last_finished_at": _INSTANT,
            "p50_seconds": {"type": "number"},
            "p95_seconds": {"type": "number"},
            "last_error": _nullable("string"),
        },
    },
    "Status": {
        "type": "object",
        "required": ["checked_at", "healthy", "notifications", "calendars", "jobs"],
        "properties": {
            "checked_at": {"type": "string", "format": "date-time"},
            "healthy": {"type": "boolean"},
            "notifications": {
                "type": "object",
                "required": ["pending", "failed", "missed"],
                "properties": {
                    "pending": _COUNT,
                    "failed": _COUNT,
                    "missed": _COUNT,
                },
            },
            "calendars": {
                "type": "object",
                "required": ["total", "paused", "stale", "failing", "circuit_open"],
                "properties": {
                    "total": _COUNT,
                    "paused": _COUNT,
                    "stale": _COUNT,
                    "failing": _COUNT,
                    "circuit_open": _COUNT,
                },
            },
            "jobs": {"type": "array", "items": _ref("JobStats")},
        },
    },
    "Reminder": {
        "type": "object",
        "required": ["lead", "fire_at", "state"],
        "properties": {
            "lead": {"type": "string"},
            "fire_at": {"type": "string", "format": "date-time"},
            "state": {"type": "string"},
        },
    },
    "Upcoming": {
        "type": "object",
        "required": [
            "calendar_id",
            "calendar_name",
            "uid",
            "recurrence_id",
            "summary",
            "start",
            "end",
            "all_day",
            "reminders",
        ],
        "properties": {
            "calendar_id": {"type": "string"},
            "calendar_name": _nullable("string"),
            "uid": {"type": "string"},
            "recurrence_id": {"type": "string"},
            "summary": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "all_day": {"type": "boolean"},
            "reminders": {"type": "array", "items": _ref("Reminder")},
        },
    },
    "Explanation": {
        "type": "object",
        "required": ["calendar_id", "uid", "start", "lines"],
        "properties": {
            "calendar_id": {"type": "string"},
            "uid": _nullable("string"),
            "start": _INSTANT,
            "lines": {"type": "array", "items": {"type": "string"}},
        },
    },
    "JobRun": {
        "type": "object",
        "required": [
            "job",
            "started_at",
            "finished_at",
            "duration_seconds",
            "outcome",
            "counts",
            "error",
        ],
        "properties": {
            "job": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "finished_at": {"type": "string", "format": "date-time"},
            "duration_seconds": {"type": "number"},
            "outcome": {"type": "string", "enum": [str(o) for o in JobOutcome]},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "error": _nullable("string"),
        },
    },
    "DeadLetter": {
        "type": "object",
        "required": [
            "id",
            "calendar_id",
            "uid",
            "recurrence_id",
            "lead",
            "fire_at",
            "start",
            "status",
            "attempts",
            "last_error",
        ],
        "properties": {
            "id": {"type": "string"},
            "calendar_id": {"type": "string"},
            "uid": {"type": "string"},
            "recurrence_id": {"type": "string"},
            "lead": {"type": "string"},
            "fire_at": {"type": "string", "format": "date-time"},
            "start": {"type": "string", "format": "date-time"},
            "status": {
                "type": "string",
                "enum": [
                    str(NotificationStatus.FAILED),
                    str(NotificationStatus.MISSED),
                ],
            },
            "attempts": _COUNT,
            "last_error": _nullable("string"),
        },
    },
    "Requeued": {
        "type": "object",
        "required": ["requeued"],
        "properties": {"requeued": _COUNT},
    },
}


def _list_of(schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref(schema)}},
    }


def _query(
    name: str, schema: dict[str, Any], description: str, *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    }


_CALENDAR_ID = _path("calendar_id", "the calendar's id")
_OFFSET = _query(
    "offset",
    {"type": "integer", "minimum": 0, "maximum": _OFFSET_MAX, "default": 0},
    "how many items to skip",
)
_LIMIT = _query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": _PAGE_MAX, "default": 50},
    "the most items to return",
)


def _ok(schema: dict[str, Any] | None, status: str = "200") -> dict[str, Any]:
    responses: dict[str, Any] = {
        "default": {
            "description": "an error",
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
    }
    if schema is None:
        responses[status] = {"description": "done"}
    else:
        responses[status] = {
            "description": "done",
            "content": {"application/json": {"schema": schema}},
        }
    return responses


def _linked(responses: dict[str, Any], status: str) -> dict[str, Any]:
    """Link a new calendar's id to the operations on one calendar (OpenAPI links)."""
    responses[status]["links"] = {
        operation_id: {
            "operationId": operation_id,
            "parameters": {"calendar_id": "$response.body#/id"},
        }
        for operation_id in (
            "getCalendar",
            "updateCalendar",
            "pauseCalendar",
            "resumeCalendar",
            "syncCalendar",
            "removeCalendar",
        )
    }
    return responses


def _body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


OPERATIONS: dict[str, dict[str, Any]] = {
    "listCalendars": {
        "path": "/api/calendars",
        "method": "get",
        "summary": "List calendars by name, one page at a time, optionally searched.",
        "parameters": [
            _query(
                "q",
                _TEXT,
                "only calendars whose name, id or (redacted) URL contains this",
            ),
            _query(
                "state",
                {
                    "type": "string",
                    "enum": ["all", "failing", "stale", "paused", "circuit_open"],
                    "default": "all",
                },
                "only calendars in this state",
            ),
            _OFFSET,
            _LIMIT,
        ],
        "responses": _ok(_ref("CalendarPage")),
    },
    "addCalendar": {
        "path": "/api/calendars",
        "method": "post",
        "summary": "Subscribe to a feed; it is synced by the next sync cycle.",
        "requestBody": _body("NewCalendar"),
        "responses": _linked(_ok(_ref("Calendar"), "201"), "201"),
    },
    "getCalendar": {
        "path": "/api/calendars/{calendar_id}",
        "method": "get",
        "summary": "One calendar and its sync state.",
        "parameters": [_CALENDAR_ID],
        "responses": _ok(_ref("Calendar")),
    },
    "updateCalendar": {
        "path": "/api/calendars/{calendar_id}",
        "method": "patch",
        "summary": "Change a calendar's settings (the fields given).",
        "parameters": [_CALENDAR_ID],
        "requestBody": _body("CalendarChanges"),
        "responses": _ok(_ref("Calendar")),
    },
    "removeCalendar": {
        "path": "/api/calendars/{calendar_id}",
        "method": "delete",
        "summary": "Delete a calendar with its occurrences and reminders.",
        "parameters": [_CALENDAR_ID],
        "responses": _ok(None, "204"),
    },
    "pauseCalendar": {
        "path": "/api/calendars/{calendar_id}/pause",
        "method": "post",
        "summary": "Stop syncing a calendar and creating its reminders.",
        "parameters": [_CALENDAR_ID],
        "responses": _ok(_ref("Calendar")),
    },
    "resumeCalendar": {
        "path": "/api/calendars/{calendar_id}/resume",
        "method": "post",
        "summary": "Sync a paused calendar again, starting now.",
        "parameters": [_CALENDAR_ID],
        "responses": _ok(_ref("Calendar")),
    },
    "syncCalendar": {
        "path": "/api/calendars/{calendar_id}/sync",
        "method": "post",
        "summary": "Sync one calendar now and return how it went.",
        "parameters": [
            _CALENDAR_ID,
            _query(
                "force",
                {"type": "boolean", "default": False},
                "fetch without validators and parse even an unchanged body",
            ),
        ],
        "responses": _ok(_ref("SyncResult")),
    },
    "getStatus": {
        "path": "/api/status",
        "method": "get",
        "summary": "Counts of calendars by health, the outbox, and job durations.",
        "responses": _ok(_ref("Status")),
    },
    "listUpcoming": {
        "path": "/api/upcoming",
        "method": "get",
        "summary": "The next occurrences and their reminders, by start.",
        "parameters": [
            _query(
                "days",
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": UPCOMING_MAX_DAYS,
                    "default": 7,
                },
                "how many days ahead",
            ),
            _LIMIT,
        ],
        "responses": _ok(_list_of("Upcoming")),
    },
    "explain": {
        "path": "/api/explain",
        "method": "get",
        "summary": "Why reminders of a calendar (by id) or an event (by UID) fire.",
        "parameters": [
            _query(
                "q",
                {"type": "string", "minLength": 1, "maxLength": 500},
                "a calendar id or an event UID",
                required=True,
            )
        ],
        "responses": _ok(_list_of("Explanation")),
    },
    "listJobRuns": {
        "path": "/api/jobs",
        "method": "get",
        "summary": "The latest job runs, newest first, with durations.",
        "parameters": [
            _query(
                "job",
                {"type": "string", "enum": [str(job) for job in Job]},
                "only runs of this job",
            ),
            _LIMIT,
        ],
        "responses": _ok(_list_of("JobRun")),
    },
    "listDeadLetters": {
        "path": "/api/notifications/failed",
        "method": "get",
        "summary": "Failed and missed reminders, earliest fire time first.",
        "parameters": [
            _query(
                "missed",
                {"type": "boolean", "default": True},
                "include missed reminders (they cannot be requeued)",
            ),
            _OFFSET,
            _LIMIT,
        ],
        "responses": _ok(
            {
                "type": "object",
                "required": ["items", "total", "offset", "limit"],
                "properties": {
                    "items": {"type": "array", "items": _ref("DeadLetter")},
                    "total": _COUNT,
                    "offset": _COUNT,
                    "limit": _COUNT,
                },
            }
        ),
    },
    "requeueNotification": {
        "path": "/api/notifications/{notification_id}/requeue",
        "method": "post",
        "summary": "Make a failed reminder pending again; it goes out next dispatch.",
        "parameters": [_path("notification_id", "the reminder's id")],
        "responses": _ok(_ref("Requeued")),
    },
}
"""Every operation of the API by its operationId: path, method, and its schemas."""


def openapi_document(server_url: str = "/") -> dict[str, Any]:
    """Return the API's OpenAPI 3.1 document, its server at ``server_url``."""
    paths: dict[str, Any] = {}
    for operation_id, operation in OPERATIONS.items():
        spec = {k: v for k, v in operation.items() if k not in ("path", "method")}
        spec["operationId"] = operation_id
        paths.setdefault(operation["path"], {})[operation["method"]] = spec
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "calsync",
                "version": "1",
                "description": (
                    "Calendars, syncs, reminders and job history of a calsync "
                    "service. Errors are RFC 9457 problem details."
                ),
            },
            "servers": [{"url": server_url}],
            "security": [{"bearer": []}],
            "paths": paths,
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )
