"""Engine.observe: every job run reaches the listeners, with its result."""

from __future__ import annotations

import logging

import pytest

from calsync import Engine
from calsync.core.errors import CalendarNotFound
from calsync.engine.jobs import Job
from calsync.engine.results import CheckResult, JobResult
from calsync.stores.records import JobOutcome, JobRun


async def test_a_listener_gets_each_run_as_recorded_with_its_result(
    engine: Engine,
) -> None:
    seen: list[tuple[JobRun, JobResult | None]] = []
    engine.observe(lambda run, result: seen.append((run, result)))
    result = await engine.run_job(Job.CHECK_NOTIFICATIONS)
    [(run, given)] = seen
    assert given is result
    assert isinstance(given, CheckResult)
    [recorded] = await engine.store.recent_job_runs(job="check_notifications")
    assert run == recorded


async def test_a_run_that_raised_reaches_listeners_without_a_result(
    engine: Engine,
) -> None:
    seen: list[tuple[JobRun, JobResult | None]] = []
    engine.observe(lambda run, result: seen.append((run, result)))
    with pytest.raises(CalendarNotFound):
        await engine.sync_calendar("missing")
    [(run, result)] = seen
    assert run.outcome is JobOutcome.ERROR
    assert result is None


async def test_an_unsubscribed_listener_hears_nothing_more(engine: Engine) -> None:
    seen: list[str] = []
    unsubscribe = engine.observe(lambda run, result: seen.append(run.job))
    await engine.run_job(Job.CHECK_NOTIFICATIONS)
    unsubscribe()
    await engine.run_job(Job.CHECK_NOTIFICATIONS)
    assert seen == ["check_notifications"]


async def test_a_failing_listener_is_logged_and_the_job_stands(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(run: JobRun, result: JobResult | None) -> None:
        raise RuntimeError("listener bug")

    seen: list[str] = []
    engine.observe(broken)
    engine.observe(lambda run, result: seen.append(run.job))
    with caplog.at_level(logging.ERROR, logger="calsync.engine"):
        result = await engine.run_job(Job.CHECK_NOTIFICATIONS)
    assert result.ok
    assert seen == ["check_notifications"]
    assert "a job listener failed" in caplog.text
