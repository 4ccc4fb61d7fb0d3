"""The Engine's jobs as values: what a runtime schedules, runs and chains."""

from __future__ import annotations

import enum

__all__ = ["Job"]


class Job(enum.StrEnum):
    """One of the Engine's jobs, named as in the job history and in `Triggers`.

    `Engine.run_job` runs any of them; a runtime schedules the `periodic` ones
    on their triggers and runs those that are `at_start` once when it starts.
    """

    SYNC_DUE = "sync_due"
    """Sync every calendar that is due, here and now."""
    CLAIM_DUE = "claim_due"
    """Lease the due calendars, to sync each elsewhere (a task queue's fan-out)."""
    SYNC_CALENDAR = "sync_calendar"
    """Sync one calendar (by id, or a lease handed off by `CLAIM_DUE`)."""
    CHECK_NOTIFICATIONS = "check_notifications"
    """Create the notifications whose fire time has come."""
    DISPATCH_NOTIFICATIONS = "dispatch_notifications"
    """Deliver the due notifications through the host's handler."""
    CLEANUP = "cleanup"
    """Prune expired occurrences, old notifications and job history."""

    @classmethod
    def periodic(cls) -> tuple[Job, ...]:
        """Return the jobs a runtime runs on their triggers (see `Triggers`)."""
        return _PERIODIC

    @property
    def at_start(self) -> bool:
        """Whether a runtime also runs the job once when it starts.

        Cleanup waits for its trigger (the bundled runner runs it at once only
        when its history shows a missed run).
        """
        return self in _AT_START


_PERIODIC = (
    Job.SYNC_DUE,
    Job.CHECK_NOTIFICATIONS,
    Job.DISPATCH_NOTIFICATIONS,
    Job.CLEANUP,
)
_AT_START = frozenset(_PERIODIC) - {Job.CLEANUP}
