"""Feed builders for Engine and end-to-end tests: whole VEVENT blocks in UTC."""

from __future__ import annotations

from datetime import datetime, timedelta


def event(
    uid: str,
    start: datetime,
    *,
    minutes: int = 30,
    summary: str | None = None,
    status: str | None = None,
    rrule: str | None = None,
) -> str:
    """One VEVENT, BEGIN to END, starting at ``start`` (aware, written in UTC)."""
    end = start + timedelta(minutes=minutes)
    lines = [
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20260101T000000Z",
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
        f"DTEND:{end:%Y%m%dT%H%M%SZ}",
        f"SUMMARY:{summary or uid}",
    ]
    if status:
        lines.append(f"STATUS:{status}")
    if rrule:
        lines.append(f"RRULE:{rrule}")
    lines.append("END:VEVENT")
    return "\r\n".join(lines)


def ics(*events: str, extra: str = "") -> str:
    """A VCALENDAR around whole VEVENT blocks; ``extra`` is one more header line."""
    head = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calsync tests//EN"]
    if extra:
        head.append(extra)
    return "\r\n".join([*head, *events, "END:VCALENDAR"]) + "\r\n"
