"""calsync's records as the JSON the API answers with: redacted, ISO 8601 UTC times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from calsync.core.durations import format_duration
from calsync.core.redact import redact, redact_text
from calsync.engine.insight import Explanation, Upcoming
from calsync.engine.results import CalendarStatus, EngineStatus, SyncResult
from calsync.stores.records import CircuitState, JobRun, NotificationRecord

__all__ = [
    "calendar_json",
    "dead_letter_json",
    "explanation_json",
    "job_run_json",
    "status_json",
    "sync_json",
    "upcoming_json",
]


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat()


def _error(text: str | None) -> str | None:
    return None if text is None else redact_text(text)


def calendar_json(status: CalendarStatus) -> dict[str, Any]:
    """Return a calendar and its sync state; the URL redacted, auth only flagged."""
    calendar, state = status.calendar, status.calendar.state
    return {
        "id": calendar.id,
        "name": calendar.name,
        "owner": calendar.owner,
        "url": redact(calendar.url),
        "schedule": calendar.schedule,
        "leads": [format_duration(lead) for lead in calendar.leads],
        "tz": calendar.tz,
        "window_past": format_duration(calendar.window_past),
        "horizon": format_duration(calendar.horizon),
        "use_alarms": calendar.use_alarms,
        "paused": calendar.paused,
        "has_auth": calendar.auth is not None,
        "stale": status.stale,
        "state": {
            "last_attempt_at": _iso(state.last_attempt_at),
            "last_success_at": _iso(state.last_success_at),
            "next_sync_at": _iso(state.next_sync_at),
            "last_error": _error(state.last_error),
            "consecutive_failures": state.consecutive_failures,
            "circuit": str(state.circuit),
            "held_removals": state.held_removals,
        },
    }


def sync_json(result: SyncResult) -> dict[str, Any]:
    """Return how one sync went: counts, the feed's problems, its error."""
    return {
        "calendar_id": result.calendar_id,
        "outcome": str(result.outcome),
        "added": result.added,
        "updated": result.updated,
        "removed": result.removed,
        "expired": result.expired,
        "held_removals": result.held_removals,
        "not_modified": result.not_modified,
        "notifications_created": result.notifications_created,
        "notifications_cancelled": result.notifications_cancelled,
        "error": _error(result.error),
        "next_sync_at": _iso(result.next_sync_at),
        "elapsed_seconds": max(0.0, result.elapsed.total_seconds()),
        "problems": [
            {
                "what": redact_text(problem.what),
                "where": redact_text(problem.where),
                "why": redact_text(problem.why),
            }
            for problem in result.problems
        ],
    }


def status_json(status: EngineStatus) -> dict[str, Any]:
    """Return the status summary: counts by health (not each calendar), jobs."""
    calendars = status.calendars
    full = status.to_dict()
    return {
        "checked_at": full["checked_at"],
        "healthy": full["healthy"],
        "notifications": full["notifications"],
        "calendars": {
            "total": len(calendars),
            "paused": sum(s.calendar.paused for s in calendars),
            "stale": sum(s.stale for s in calendars),
            "failing": sum(
                bool(s.calendar.state.consecutive_failures) for s in calendars
            ),
            "circuit_open": sum(s.circuit != CircuitState.CLOSED for s in calendars),
        },
        "jobs": full["jobs"],
    }


def upcoming_json(item: Upcoming) -> dict[str, Any]:
    """Return an occurrence ahead and its reminders (lead, fire time, state)."""
    occurrence = item.occurrence
    return {
        "calendar_id": item.calendar.id,
        "calendar_name": item.calendar.name,
        "uid": occurrence.key.uid,
        "recurrence_id": occurrence.key.recurrence_id,
        "summary": occurrence.summary,
        "start": occurrence.start.isoformat(),
        "end": occurrence.end.isoformat(),
        "all_day": occurrence.all_day,
        "reminders": [
            {"lead": format_duration(lead), "fire_at": fire_at.isoformat(), "state": s}
            for lead, fire_at, s in item.fires
        ],
    }


def explanation_json(explanation: Explanation) -> dict[str, Any]:
    """Return why an occurrence's (or calendar's) reminders fire, in sentences."""
    occurrence = explanation.occurrence
    return {
        "calendar_id": explanation.calendar.id,
        "uid": None if occurrence is None else occurrence.key.uid,
        "start": None if occurrence is None else occurrence.start.isoformat(),
        "lines": [redact_text(line) for line in explanation.lines],
    }


def job_run_json(run: JobRun) -> dict[str, Any]:
    """Return one recorded job run with its duration."""
    return {
        "job": run.job,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "duration_seconds": run.duration.total_seconds(),
        "outcome": str(run.outcome),
        "counts": dict(run.counts),
        "error": _error(run.error),
    }


def dead_letter_json(record: NotificationRecord) -> dict[str, Any]:
    """Return a failed or missed reminder: what for, attempts, the last error."""
    notification = record.notification
    return {
        "id": record.id,
        "calendar_id": record.calendar_id,
        "uid": notification.key.uid,
        "recurrence_id": notification.key.recurrence_id,
        "lead": format_duration(notification.lead),
        "fire_at": record.fire_at.isoformat(),
        "start": notification.start.isoformat(),
        "status": str(record.status),
        "attempts": record.attempts,
        "last_error": _error(record.last_error),
    }
