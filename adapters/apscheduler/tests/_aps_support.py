"""Helpers for the adapter's tests: feeds, a recording handler, waiting."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from apscheduler.events import JobExecutionEvent

from calsync import Delivery

# Real seconds any machine, however busy, needs for what a test waits for: a wait
# fails only when the awaited never happens, never because the machine is slow.
SAFETY = 60.0


def feed(*events: tuple[str, datetime]) -> str:
    """An ICS body with one 30-minute event per (uid, start)."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calsync//apscheduler//EN"]
    for uid, start in events:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{uid}",
            f"DTSTART:{start.astimezone(UTC):%Y%m%dT%H%M%SZ}",
            "DURATION:PT30M",
            f"SUMMARY:{uid}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def soon(seconds: float, *, lead: timedelta) -> datetime:
    """The start of an event whose reminder (``lead`` before) fires in ``seconds``."""
    start = datetime.now(UTC) + lead + timedelta(seconds=seconds)
    return start.replace(microsecond=0) + timedelta(seconds=1)


async def eventually(
    condition: Callable[[], object | Awaitable[object]],
    *,
    within: float = SAFETY,
    step: float = 0.05,
) -> None:
    """Wait until ``condition()`` (or what it awaits to) is true, up to ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            pytest.fail(f"not true within {within} s: {condition.__name__}")
        await asyncio.sleep(step)


@attrs.define
class Recorder:
    """A handler that records each delivery and when it arrived."""

    deliveries: list[Delivery] = attrs.Factory(list)
    arrived: list[datetime] = attrs.Factory(list)

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.arrived.append(datetime.now(UTC))

    @property
    def ids(self) -> list[str]:
        return [delivery.id for delivery in self.deliveries]

    @property
    def summaries(self) -> list[str]:
        return [
            delivery.occurrence.summary if delivery.occurrence else ""
            for delivery in self.deliveries
        ]


@attrs.define
class Executions:
    """APScheduler's EVENT_JOB_EXECUTED events, by job id."""

    events: list[JobExecutionEvent] = attrs.Factory(list)

    def __call__(self, event: JobExecutionEvent) -> None:
        self.events.append(event)

    def of(self, job_id: str) -> list[JobExecutionEvent]:
        return [event for event in self.events if event.job_id == job_id]
