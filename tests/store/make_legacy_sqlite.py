"""Write the SQLite files of tests/store/fixtures/: databases an older calsync left.

``schema3.db`` was written by the SQLiteStore of commit bc4288e (the two
hand-written SQL stores, schema 3); ``schema2.db`` is the same file taken back to
schema 2 (no ``url_sealed`` column, version 2), as the calsync before sealed
secrets wrote it. Run from the repository root with that commit's code:

    PYTHONPATH=src python tests/store/make_legacy_sqlite.py tests/store/fixtures
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from calsync import Calendar, Notification, Occurrence, SQLiteStore
from calsync.core import BearerAuth, ChangeSet, OccurrenceKey
from calsync.stores import JobOutcome, JobRun, NotificationStatus, SyncState, SyncWrite

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
SECRET_URL = "https://feeds.example/team.ics?token=legacy-S3CRET"


def event(uid: str, minutes: int, **fields: object) -> Occurrence:
    start = T0 + timedelta(minutes=minutes)
    return Occurrence(
        key=OccurrenceKey(uid), start=start, end=start + 30 * MINUTE, **fields
    )  # type: ignore[arg-type]


async def write(path: Path) -> None:
    """A calendar with a secret URL and token, occurrences, notifications, runs."""
    async with SQLiteStore(path) as store:
        team = await store.add_calendar(
            Calendar(
                id="team",
                url=SECRET_URL,
                name="Team",
                auth=BearerAuth("legacy-bearer"),
                created_at=T0,
            )
        )
        await store.add_calendar(
            Calendar(id="public", url="https://feeds.example/p.ics", created_at=T0)
        )
        lease = await store.claim_calendar(
            team.id, T0, worker="w", lease_ttl=5 * MINUTE
        )
        assert lease is not None
        events = (
            event("standup", 60, summary="Stand-up", location="Room 4"),
            event("review", 120, summary="Review"),
            event("gone", 180, summary="Expired"),
        )
        reminders = [
            Notification(key=e.key, lead=10 * MINUTE, start=e.start) for e in events
        ]
        state = SyncState(
            etag='"v1"', body_hash="abc", next_sync_at=T0 + 15 * MINUTE, parsed_at=T0
        )
        await store.apply_sync(
            lease,
            SyncWrite(state=state, changes=ChangeSet(added=events), create=reminders),
            T0,
        )
        [claim] = await store.claim_notifications(
            T0 + 51 * MINUTE, limit=1, worker="w", lease_ttl=5 * MINUTE
        )
        await store.mark_delivered(claim, T0 + 51 * MINUTE)
        await store.record_job_run(
            JobRun(
                job="sync_due",
                started_at=T0,
                finished_at=T0 + MINUTE,
                outcome=JobOutcome.OK,
                counts={"synced": 1},
            )
        )
        counts = await store.notification_counts()
        assert counts[NotificationStatus.DELIVERED] == 1


def to_schema_2(path: Path) -> None:
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("ALTER TABLE calendars DROP COLUMN url_sealed")
        conn.execute("UPDATE schema_version SET version = 2")
        conn.execute("VACUUM")
    conn.close()


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    v3, v2 = folder / "schema3.db", folder / "schema2.db"
    for path in (v3, v2):
        path.unlink(missing_ok=True)
    asyncio.run(write(v3))
    with sqlite3.connect(v3, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("VACUUM")
    conn.close()
    shutil.copy(v3, v2)
    to_schema_2(v2)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
