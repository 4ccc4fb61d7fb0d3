"""Health that means progress: /healthz and /readyz of a real Engine over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from calsync import Engine, Runner, SQLiteStore
from calsync.engine.jobs import Job
from calsync.observe import Health, add_routes
from calsync.stores.records import JobRun
from calsync.testing import ManualClock

from .conftest import MINUTE, Recorder, get, served


@pytest.fixture
async def base(engine: Engine) -> AsyncIterator[str]:
    app = web.Application()
    await add_routes(app, engine)
    async with served(app) as url:
        yield url


async def health(base: str, path: str = "/healthz") -> tuple[int, dict[str, object]]:
    status, content_type, body = await get(base + path)
    assert content_type.startswith("application/json")
    return status, json.loads(body)


async def run_loops(engine: Engine) -> None:
    for job in Job.periodic():
        await engine.run_job(job, handler=Recorder())


async def test_a_fresh_deployment_is_healthy_within_its_first_intervals(
    base: str,
) -> None:
    status, body = await health(base)
    assert status == 200
    assert body["status"] == "ok"
    assert body["failed"] == []


async def test_loops_that_stopped_turning_fail_healthz_by_name(
    engine: Engine, clock: ManualClock, base: str
) -> None:
    await run_loops(engine)
    clock.advance(10 * MINUTE)  # past 3 x 30 s (+1 min) and 3 x 60 s (+1 min)
    status, body = await health(base)
    assert status == 503
    assert body["failed"] == [
        "job:sync_due",
        "job:check_notifications",
        "job:dispatch_notifications",
    ]
    checks = {check["name"]: check for check in body["checks"]}  # type: ignore[attr-defined]
    assert checks["job:sync_due"]["detail"] == (
        "last completed 600 s ago, allowed 150 s"
    )


async def test_a_loop_that_runs_again_is_healthy_again(
    engine: Engine, clock: ManualClock, base: str
) -> None:
    await run_loops(engine)
    clock.advance(10 * MINUTE)
    await run_loops(engine)
    status, body = await health(base)
    assert status == 200, body


async def test_a_loop_that_never_ran_fails_after_its_allowance(
    clock: ManualClock, base: str
) -> None:
    clock.advance(3 * MINUTE)
    status, body = await health(base)
    assert status == 503
    assert "job:dispatch_notifications" in body["failed"]  # type: ignore[operator]
    assert "job:cleanup" not in body["failed"]  # type: ignore[operator]


async def test_only_completed_runs_count_as_progress(
    engine: Engine, clock: ManualClock
) -> None:
    checker = Health(engine)
    await run_loops(engine)
    clock.advance(10 * MINUTE)
    failed = JobRun("sync_due", clock(), clock(), "error", {}, "StoreUnavailable")
    await engine.store.record_job_run(failed)
    report = await checker.live()
    assert "job:sync_due" in [check.name for check in report.failed]


async def test_with_a_runner_only_this_processs_runs_count(
    engine: Engine, clock: ManualClock
) -> None:
    runner = Runner(engine, Recorder())
    checker = Health(engine, runner=runner)
    try:
        clock.advance(10 * MINUTE)
        other = JobRun("sync_due", clock(), clock(), "ok")
        await engine.store.record_job_run(other)  # another process's run
        report = await checker.live()
        assert "job:sync_due" in [check.name for check in report.failed]
        await engine.run_job(Job.SYNC_DUE)  # this process's
        report = await checker.live()
        assert "job:sync_due" not in [check.name for check in report.failed]
    finally:
        checker.close()


async def test_a_sync_loop_run_as_claims_progresses(
    engine: Engine, clock: ManualClock
) -> None:
    checker = Health(engine)
    clock.advance(10 * MINUTE)
    await engine.run_job(Job.CLAIM_DUE)
    report = await checker.live()
    assert "job:sync_due" not in [check.name for check in report.failed]


async def test_an_unreachable_store_fails_healthz_and_readyz(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = SQLiteStore(tmp_path / "calsync.db")
    engine = Engine(store, clock=clock)  # never opened: the store does not answer
    app = web.Application()
    await add_routes(app, engine)
    try:
        async with served(app) as base:
            live_status, live = await health(base)
            ready_status, ready = await health(base, "/readyz")
    finally:
        await engine.close()
    assert live_status == 503
    assert live["failed"][0] == "store"  # type: ignore[index]
    assert ready_status == 503
    assert ready["failed"] == ["store", "migrations"]


async def test_readyz_says_the_store_and_its_schema_are_ready(base: str) -> None:
    status, body = await health(base, "/readyz")
    assert status == 200
    names = [check["name"] for check in body["checks"]]  # type: ignore[attr-defined]
    assert names == ["store", "migrations"]


async def test_the_allowance_follows_the_runners_triggers(
    engine: Engine, clock: ManualClock
) -> None:
    from calsync import Triggers

    runner = Runner(engine, Recorder(), triggers=Triggers(sync_due="every 10m"))
    checker = Health(engine, runner=runner, slack=timedelta(0))
    try:
        clock.advance(29 * MINUTE)
        report = await checker.live()
        assert "job:sync_due" not in [check.name for check in report.failed]
        clock.advance(2 * MINUTE)
        report = await checker.live()
        assert "job:sync_due" in [check.name for check in report.failed]
    finally:
        checker.close()
