"""The PostgreSQL DDL of the hand-written PostgresStore (commit bc4288e), as test data.

The upgrade tests build a schema with these statements, as a calsync of that
time left it, and check that today's store opens and upgrades it in place.
Statements use {s} for the quoted schema name.
"""

from __future__ import annotations

_V1 = (
    """
    CREATE TABLE {s}.schema_version (version integer NOT NULL)
    """,
    """
    CREATE TABLE {s}.calendars (
        id text PRIMARY KEY,
        owner text NOT NULL,
        url text NOT NULL,
        name text,
        schedule text NOT NULL,
        leads text NOT NULL,
        tz text,
        window_past bigint NOT NULL,
        horizon bigint NOT NULL,
        use_alarms boolean NOT NULL,
        auth text,
        paused boolean NOT NULL,
        created_at timestamptz NOT NULL,
        etag text,
        last_modified text,
        body_hash text,
        last_attempt_at timestamptz,
        last_success_at timestamptz,
        last_error text,
        consecutive_failures integer NOT NULL DEFAULT 0,
        next_sync_at timestamptz NOT NULL,
        circuit text NOT NULL,
        held_removals integer NOT NULL DEFAULT 0,
        held_removals_hash text,
        sync_requested_at timestamptz,
        lease_worker text,
        lease_token bigint NOT NULL DEFAULT 0,
        lease_expires_at timestamptz,
        lease_claimed_at timestamptz,
        UNIQUE (owner, url)
    )
    """,
    """
    CREATE INDEX calendars_due ON {s}.calendars (next_sync_at) WHERE NOT paused
    """,
    """
    CREATE INDEX calendars_requested ON {s}.calendars (sync_requested_at)
        WHERE sync_requested_at IS NOT NULL
    """,
    """
    CREATE TABLE {s}.occurrences (
        calendar_id text NOT NULL REFERENCES {s}.calendars (id) ON DELETE CASCADE,
        uid text NOT NULL,
        recurrence_id text NOT NULL,
        start_at timestamptz NOT NULL,
        end_at timestamptz NOT NULL,
        all_day boolean NOT NULL,
        summary text NOT NULL,
        location text NOT NULL,
        description text NOT NULL,
        status text NOT NULL,
        sequence bigint NOT NULL,
        tzid text,
        start_date text,
        end_date text,
        alarms text NOT NULL,
        content_hash text NOT NULL,
        expired boolean NOT NULL DEFAULT false,
        PRIMARY KEY (calendar_id, uid, recurrence_id)
    )
    """,
    """
    CREATE INDEX occurrences_by_calendar_start
        ON {s}.occurrences (calendar_id, start_at)
    """,
    """
    CREATE INDEX occurrences_live_by_start ON {s}.occurrences (start_at)
        WHERE NOT expired
    """,
    """
    CREATE TABLE {s}.notifications (
        id text PRIMARY KEY,
        calendar_id text NOT NULL REFERENCES {s}.calendars (id) ON DELETE CASCADE,
        uid text NOT NULL,
        recurrence_id text NOT NULL,
        lead bigint NOT NULL,
        start_at timestamptz NOT NULL,
        fire_at timestamptz NOT NULL,
        status text NOT NULL,
        created_at timestamptz NOT NULL,
        due_at timestamptz NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        last_error text,
        delivered_at timestamptz,
        claim_worker text,
        claim_token bigint NOT NULL DEFAULT 0,
        UNIQUE (calendar_id, uid, recurrence_id, lead, start_at)
    )
    """,
    """
    CREATE INDEX notifications_due ON {s}.notifications (due_at)
        WHERE status = 'pending'
    """,
    """
    CREATE INDEX notifications_failed ON {s}.notifications (fire_at)
        WHERE status = 'failed'
    """,
    """
    CREATE TABLE {s}.job_runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        outcome text NOT NULL,
        counts jsonb NOT NULL,
        error text
    )
    """,
    """
    CREATE INDEX job_runs_by_finish ON {s}.job_runs (finished_at)
    """,
)

# Version 2: sync state keeps when the body was parsed and the feed's
# REFRESH-INTERVAL; notifications are counted by status and found by start and UID.
_V2 = (
    """
    ALTER TABLE {s}.calendars
        ADD COLUMN parsed_at timestamptz,
        ADD COLUMN refresh_interval bigint
    """,
    """
    CREATE INDEX notifications_by_status
        ON {s}.notifications (status, calendar_id)
    """,
    """
    CREATE INDEX notifications_by_start ON {s}.notifications (start_at)
    """,
    """
    CREATE INDEX notifications_by_uid ON {s}.notifications (uid)
    """,
    """
    CREATE INDEX job_runs_by_job ON {s}.job_runs (job, finished_at, id)
    """,
)

# Version 3: a URL that carries a secret is kept sealed (encrypted), the url
# column holding its look-up form; credentials are sealed in the auth column.
_V3 = (
    """
    ALTER TABLE {s}.calendars ADD COLUMN url_sealed text
    """,
)

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, _V1),
    (2, _V2),
    (3, _V3),
)
