"""Jobs as values: `Job`, `Engine.run_job` and the fields every job result shares.

Each job runs by name on a real in-memory store and a real SQLite file, fed by a
real feed server, on a manual clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from calsync import (
    Engine,
    HttpFetcher,
    Job,
    MemoryStore,
    SQLiteStore,
    Triggers,
    ValidationError,
)
from calsync.engine import (
    CheckResult,
    ClaimResult,
    CleanupResult,
    DispatchResult,
    JobResult,
    SyncDueResult,
    SyncOutcome,
    SyncResult,
)
from calsync.stores import JobOutcome
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, Recorder, event, ics, settings

RESULTS: dict[Job, type[JobResult]] = {
    Job.SYNC_DUE: SyncDueResult,
    Job.CLAIM_DUE: ClaimResult,
    Job.SYNC_CALENDAR: SyncResult,
    Job.CHECK_NOTIFICATIONS: CheckResult,
    Job.DISPATCH_NOTIFICATIONS: DispatchResult,
    Job.CLEANUP: CleanupResult,
}


@pytest.fixture(params=["memory", "sqlite"])
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Engine]:
    store = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "j.db")
    )
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        yield engine


@pytest.fixture
async def calendar_id(engine: Engine, feeds: FeedServer) -> str:
    feeds.set("/team.ics", ics(event("review", T0 + 30 * MINUTE)))
    calendar = await engine.add_calendar(feeds.url("/team.ics"), leads=["10m"])
    return calendar.id


def test_every_job_has_a_result_type_and_a_history_name() -> None:
    assert set(RESULTS) == set(Job)
    assert [str(job) for job in Job] == [job.value for job in Job]
    assert len({job.value for job in Job}) == len(Job)


def test_the_periodic_jobs_are_the_triggers_and_all_but_cleanup_run_at_start() -> None:
    assert Job.periodic() == Triggers.JOBS
    assert all(hasattr(Triggers(), job) for job in Job.periodic())
    assert [job for job in Job.periodic() if job.at_start] == [
        Job.SYNC_DUE,
        Job.CHECK_NOTIFICATIONS,
        Job.DISPATCH_NOTIFICATIONS,
    ]
    assert not any(job.at_start for job in Job if job not in Job.periodic())


@pytest.mark.parametrize("job", list(Job), ids=str)
async def test_run_job_runs_the_named_job_and_records_it_by_name(
    engine: Engine, calendar_id: str, job: Job
) -> None:
    result = await engine.run_job(
        job.value, handler=Recorder(), calendar_id=calendar_id
    )
    assert type(result) is RESULTS[job]
    assert result.ok
    [run] = await engine.store.recent_job_runs(job=job.value)
    assert (run.job, run.outcome) == (job.value, JobOutcome.OK)


async def test_run_job_syncs_and_claims_what_is_due(
    engine: Engine, calendar_id: str, feeds: FeedServer
) -> None:
    claimed = await engine.run_job(Job.CLAIM_DUE)
    assert isinstance(claimed, ClaimResult)
    [lease] = claimed.leases
    assert lease.calendar_id == calendar_id
    synced = await engine.run_job(
        Job.SYNC_CALENDAR, calendar_id=calendar_id, handoff=lease.handoff
    )
    assert isinstance(synced, SyncResult)
    assert (synced.outcome, synced.added) == (SyncOutcome.CHANGED, 1)
    forced = await engine.run_job(
        Job.SYNC_CALENDAR, calendar_id=calendar_id, force=True
    )
    assert forced.outcome is SyncOutcome.UNCHANGED
    plain = await engine.run_job(Job.SYNC_CALENDAR, calendar_id=calendar_id)
    assert plain.outcome is SyncOutcome.UNCHANGED
    # force fetches without validators; a plain sync sends them.
    assert [request.conditional for request in feeds.requests()] == [
        False,
        False,
        True,
    ]


async def test_following_follow_ups_and_wake_at_delivers_a_reminder_once(
    engine: Engine, calendar_id: str, clock: ManualClock
) -> None:
    # What every runtime does with a result: run its follow-ups at once and a
    # check at its wake_at. Nothing else runs here.
    handler = Recorder()
    ran: list[Job] = []

    async def run(job: Job) -> JobResult:
        ran.append(job)
        result = await engine.run_job(job, handler=handler)
        for follow_up in result.follow_ups:
            await run(follow_up)
        return result

    synced = await run(Job.SYNC_DUE)
    assert synced.follow_ups == (Job.CHECK_NOTIFICATIONS,)
    fire_at = T0 + 20 * MINUTE
    assert synced.wake_at is not None
    assert fire_at <= synced.wake_at < fire_at + timedelta(seconds=1)
    assert ran == [Job.SYNC_DUE, Job.CHECK_NOTIFICATIONS]
    assert handler.deliveries == []
    clock.set(synced.wake_at)
    checked = await run(Job.CHECK_NOTIFICATIONS)
    assert checked.follow_ups == (Job.DISPATCH_NOTIFICATIONS,)
    assert ran[-1] is Job.DISPATCH_NOTIFICATIONS
    assert [d.notification.lead for d in handler.deliveries] == [10 * MINUTE]
    again = await run(Job.CHECK_NOTIFICATIONS)
    assert (again.follow_ups, again.wake_at) == ((), None)
    assert len(handler.deliveries) == 1


async def test_run_job_refuses_an_unknown_job_or_a_missing_argument(
    engine: Engine,
) -> None:
    with pytest.raises(ValidationError, match=r"'sync_everything'.*sync_due"):
        await engine.run_job("sync_everything")
    with pytest.raises(ValidationError, match=r"sync_calendar.*calendar_id"):
        await engine.run_job(Job.SYNC_CALENDAR)
    with pytest.raises(ValidationError, match=r"dispatch_notifications.*handler"):
        await engine.run_job(Job.DISPATCH_NOTIFICATIONS)
    for job in Job:
        assert await engine.store.recent_job_runs(job=job.value) == []


async def test_a_partial_run_says_so_in_its_outcome_and_in_the_history(
    engine: Engine, calendar_id: str, clock: ManualClock
) -> None:
    await engine.run_job(Job.SYNC_DUE)
    clock.advance(20 * MINUTE + timedelta(seconds=1))
    await engine.run_job(Job.CHECK_NOTIFICATIONS)
    result = await engine.run_job(Job.DISPATCH_NOTIFICATIONS, handler=Recorder(fail=1))
    assert (result.ok, result.outcome) == (False, JobOutcome.PARTIAL)
    [run] = await engine.store.recent_job_runs(job=Job.DISPATCH_NOTIFICATIONS.value)
    assert run.outcome is JobOutcome.PARTIAL


def _sync(outcome: SyncOutcome, **fields: object) -> SyncResult:
    return SyncResult("c1", "team", outcome, **fields)  # type: ignore[arg-type]


def test_every_result_shares_outcome_follow_ups_and_wake_at() -> None:
    quiet = [
        SyncDueResult((), T0, T0),
        ClaimResult(()),
        CheckResult(),
        DispatchResult(),
        CleanupResult(),
    ]
    for result in quiet:
        assert isinstance(result, JobResult)
        assert (result.ok, result.outcome) == (True, JobOutcome.OK)
        assert (result.follow_ups, result.wake_at) == ((), None)
    assert isinstance(_sync(SyncOutcome.UNCHANGED), JobResult)


def test_a_result_is_partial_when_part_of_its_job_failed() -> None:
    failed = _sync(SyncOutcome.FAILED, error="feed down")
    partial = [
        SyncDueResult((_sync(SyncOutcome.CHANGED), failed), T0, T0),
        CheckResult(errors=["team: store error"]),
        DispatchResult(delivered=3, retried=1),
        DispatchResult(dead=1),
    ]
    for result in partial:
        assert (result.ok, result.outcome) == (False, JobOutcome.PARTIAL)
    assert (failed.ok, failed.outcome) == (False, SyncOutcome.FAILED)
    held = _sync(SyncOutcome.HELD, held_removals=3)
    assert (held.ok, held.outcome) == (True, SyncOutcome.HELD)


def test_follow_ups_are_jobs_and_a_cycle_wakes_at_its_earliest_reminder() -> None:
    early, late = T0 + 5 * MINUTE, T0 + 50 * MINUTE
    first = _sync(SyncOutcome.CHANGED, added=1, next_fire_at=late)
    second = _sync(SyncOutcome.CHANGED, notifications_created=1, next_fire_at=early)
    cycle = SyncDueResult((first, _sync(SyncOutcome.UNCHANGED), second), T0, T0)
    assert cycle.follow_ups == (Job.CHECK_NOTIFICATIONS, Job.DISPATCH_NOTIFICATIONS)
    assert all(isinstance(job, Job) for job in cycle.follow_ups)
    assert cycle.wake_at == second.wake_at
    assert second.wake_at is not None
    assert early < second.wake_at < early + timedelta(seconds=1)
    check = CheckResult(created=2, next_fire_at=late)
    assert check.follow_ups == (Job.DISPATCH_NOTIFICATIONS,)
    assert check.wake_at is not None
    assert late < check.wake_at
