"""Stores: the `Store` protocol, the records it keeps, and its implementations.

The records only a store implementer needs (`AppliedSync`, `SyncWrite`,
`NotificationClaim`, `PruneCounts`, `notification_id`) live here too.
"""

from __future__ import annotations

from calsync.stores.mariadb import MariaDBStore
from calsync.stores.memory import MemoryStore
from calsync.stores.postgres import PostgresStore
from calsync.stores.records import (
    AppliedSync,
    Calendar,
    JobOutcome,
    JobRun,
    Lease,
    NotificationClaim,
    NotificationRecord,
    NotificationStatus,
    PruneCounts,
    SyncState,
    SyncWrite,
    notification_id,
)
from calsync.stores.sql import SQLStore
from calsync.stores.sqlite import SQLiteStore
from calsync.stores.store import Store

__all__ = [
    "AppliedSync",
    "Calendar",
    "JobOutcome",
    "JobRun",
    "Lease",
    "MariaDBStore",
    "MemoryStore",
    "NotificationClaim",
    "NotificationRecord",
    "NotificationStatus",
    "PostgresStore",
    "PruneCounts",
    "SQLStore",
    "SQLiteStore",
    "Store",
    "SyncState",
    "SyncWrite",
    "notification_id",
]
