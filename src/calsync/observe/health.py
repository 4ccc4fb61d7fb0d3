"""Health that means progress: job loops that turn, a store that answers.

``/healthz`` fails when a job loop has not completed a run within ``factor``
times its trigger's interval (plus ``slack`` for the run itself), or when the
store does not answer; ``/readyz`` when the store is not reachable or its
schema is not the one this calsync writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs

from calsync.core.redact import redact_text
from calsync.core.schedule import Schedule
from calsync.engine.jobs import Job
from calsync.engine.results import JobResult
from calsync.engine.runner import Runner, Triggers
from calsync.engine.service import Engine
from calsync.stores.records import JobOutcome, JobRun
from calsync.stores.store import SCHEMA_VERSION, Store

__all__ = ["Health", "HealthCheck", "HealthReport", "job_interval", "last_progress"]

# A loop's run that ended in one of these moved it forward (an ERROR did not).
_PROGRESS = frozenset({JobOutcome.OK, JobOutcome.PARTIAL})
# The runs of a job that stand for a loop's progress: a task queue's sync loop
# claims (claim_due) and fans out instead of syncing (sync_due) in place.
_LOOP_RUNS = {Job.SYNC_DUE: (Job.SYNC_DUE, Job.CLAIM_DUE)}
_HISTORY = 20
_STORE_TIMEOUT = 5.0


@attrs.frozen
class HealthCheck:
    """One check of a health report: its name, whether it passed, and why."""

    name: str
    ok: bool
    detail: str


def _checks(values: Iterable[HealthCheck]) -> tuple[HealthCheck, ...]:
    return tuple(values)


@attrs.frozen
class HealthReport:
    """The checks behind ``/healthz`` or ``/readyz``; ``ok`` if all passed."""

    checks: tuple[HealthCheck, ...] = attrs.field(converter=_checks)
    checked_at: datetime

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> tuple[HealthCheck, ...]:
        """The checks that failed."""
        return tuple(check for check in self.checks if not check.ok)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data: status, failed names, each check."""
        return {
            "status": "ok" if self.ok else "failing",
            "checked_at": self.checked_at.isoformat(),
            "failed": [check.name for check in self.failed],
            "checks": [attrs.asdict(check) for check in self.checks],
        }


def job_interval(schedule: Schedule, now: datetime) -> timedelta:
    """Return the time between a schedule's next two runs after ``now``."""
    first = schedule.next_after(now)
    return schedule.next_after(first) - first


async def last_progress(store: Store, job: Job) -> datetime | None:
    """When a run of ``job``'s loop last finished without error, by the store's history.

    The sync loop's runs are those of ``sync_due`` and of ``claim_due`` (how a
    task queue runs it); None if the history holds none.
    """
    latest: datetime | None = None
    for name in _LOOP_RUNS.get(job, (job,)):
        runs = await store.recent_job_runs(job=name.value, limit=_HISTORY)
        finished = [run.finished_at for run in runs if run.outcome in _PROGRESS]
        if finished and (latest is None or max(finished) > latest):
            latest = max(finished)
    return latest


class Health:
    """Checks an Engine's store and job loops, for ``/healthz`` and ``/readyz``.

    With a ``runner``, the loops are this process's: a loop progresses when the
    Engine here completes a run of it (seen through `Engine.observe`). Without
    one, the loops run elsewhere (Celery, APScheduler) and the store's job
    history, shared by every process, tells. Intervals come from ``triggers``
    (the runner's, else the default `Triggers`). Until a loop's first run, the
    time since this object was made counts. Call `close` to stop observing.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        runner: Runner | None = None,
        triggers: Triggers | None = None,
        factor: float = 3,
        slack: timedelta = timedelta(minutes=1),
    ) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor!r}")
        self._engine = engine
        self._local = runner is not None
        if triggers is None:
            triggers = runner.triggers if runner is not None else Triggers()
        self._triggers = triggers
        self._factor = factor
        self._slack = slack
        self._since = engine.now()
        self._seen: dict[Job, datetime] = {}
        self._unsubscribe: Callable[[], None] | None = None
        if self._local:
            self._unsubscribe = engine.observe(self._on_run)

    def close(self) -> None:
        """Stop observing the Engine's runs."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_run(self, run: JobRun, result: JobResult | None) -> None:
        if run.outcome not in _PROGRESS:
            return
        for loop, names in _LOOP_RUNS.items():
            if run.job in names:
                self._seen[loop] = run.finished_at
                return
        try:
            self._seen[Job(run.job)] = run.finished_at
        except ValueError:
            return

    async def live(self) -> HealthReport:
        """Run the ``/healthz`` checks: the store answers, every job loop progresses."""
        store = await self._store_check()
        checks = [store]
        for job in Job.periodic():
            checks.append(await self._loop_check(job, store_ok=store.ok))
        return HealthReport(checks, self._engine.now())

    async def ready(self) -> HealthReport:
        """Run the ``/readyz`` checks: the store answers with this calsync's schema."""
        try:
            version = await self._schema_version()
        except Exception as error:
            checks = [
                HealthCheck("store", False, _unreachable(error)),
                HealthCheck("migrations", False, "unknown: the store did not answer"),
            ]
            return HealthReport(checks, self._engine.now())
        migrated = version == SCHEMA_VERSION
        detail = f"schema version {version}" + (
            "" if migrated else f", this calsync writes {SCHEMA_VERSION}"
        )
        checks = [
            HealthCheck("store", True, "answered"),
            HealthCheck("migrations", migrated, detail),
        ]
        return HealthReport(checks, self._engine.now())

    async def _schema_version(self) -> int:
        store = self._engine.store
        return await asyncio.wait_for(store.schema_version(), _STORE_TIMEOUT)

    async def _store_check(self) -> HealthCheck:
        try:
            await self._schema_version()
        except Exception as error:
            return HealthCheck("store", False, _unreachable(error))
        return HealthCheck("store", True, "answered")

    async def _loop_check(self, job: Job, *, store_ok: bool) -> HealthCheck:
        now = self._engine.now()
        allowed = self._factor * job_interval(self._triggers.schedule(job), now)
        allowed += self._slack
        name = f"job:{job.value}"
        last = self._seen.get(job)
        if not self._local:
            if not store_ok:
                return HealthCheck(name, False, "unknown: the store did not answer")
            last = await last_progress(self._engine.store, job)
        if last is None:
            waited = now - self._since
            if waited <= allowed:
                return HealthCheck(name, True, "no run yet, within its first interval")
            return HealthCheck(
                name,
                False,
                f"no completed run in {_seconds(waited)}, allowed {_seconds(allowed)}",
            )
        since = now - last
        if since <= allowed:
            return HealthCheck(name, True, f"last completed {_seconds(since)} ago")
        return HealthCheck(
            name,
            False,
            f"last completed {_seconds(since)} ago, allowed {_seconds(allowed)}",
        )


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():.0f} s"


def _unreachable(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"did not answer within {_STORE_TIMEOUT:g} s"
    return redact_text(f"unreachable: {type(error).__name__}: {error}")[:300]
