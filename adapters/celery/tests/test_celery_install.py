"""`install` and `CalsyncSchedule` on a real Celery app, without a broker."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from celery import Celery
from celery.schedules import crontab

import calsync
from calsync_celery import CalsyncSchedule, install

JOBS = {
    "calsync.sync_due",
    "calsync.sync_calendar",
    "calsync.check_notifications",
    "calsync.dispatch_notifications",
    "calsync.cleanup",
}


def unused_engine() -> calsync.Engine:
    raise AssertionError("install must not create an engine")


def at(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


def schedule_at(text: str, now: datetime, tz: str = "UTC") -> CalsyncSchedule:
    schedule = CalsyncSchedule(text, tz)
    schedule.nowfun = lambda: now
    return schedule


def test_install_registers_the_five_tasks_with_late_acks() -> None:
    app = Celery("host")
    tasks = install(app, unused_engine, handler=calsync.LoggingHandler())
    assert set(app.tasks) >= JOBS
    assert {task.name for task in tasks.values()} == JOBS
    assert all(app.tasks[name].acks_late for name in JOBS)
    assert app.tasks["calsync.sync_calendar"].reject_on_worker_lost
    assert app.tasks["calsync.sync_due"].autoretry_for == (
        calsync.core.StoreUnavailable,
    )


def test_install_keeps_the_hosts_beat_entries() -> None:
    app = Celery("host")
    mine = {"task": "host.report", "schedule": crontab(minute="0")}
    app.conf.beat_schedule = {"host.report": mine}
    install(app, unused_engine, handler=calsync.LoggingHandler())
    assert app.conf.beat_schedule["host.report"] == mine
    assert set(app.conf.beat_schedule) == {"host.report"} | (
        JOBS - {"calsync.sync_calendar"}
    )


def test_beat_entries_follow_the_given_triggers() -> None:
    app = Celery("host")
    triggers = calsync.Triggers(
        sync_due="every 45s", cleanup="daily 04:15", tz="Europe/Berlin"
    )
    install(app, unused_engine, handler=calsync.LoggingHandler(), schedules=triggers)
    entry = app.conf.beat_schedule["calsync.cleanup"]
    assert entry["schedule"] == CalsyncSchedule("daily 04:15", "Europe/Berlin")
    assert app.conf.beat_schedule["calsync.sync_due"]["options"] == {"expires": 45.0}


def test_a_schedule_survives_pickling_as_beat_stores_it() -> None:
    schedule = CalsyncSchedule("weekly mon,thu 18:00", "Europe/Berlin")
    again = pickle.loads(pickle.dumps(schedule))
    assert again == schedule
    assert again.next_after(at(2026, 3, 2)) == at(2026, 3, 2, 17)


def test_a_daily_run_in_the_spring_gap_fires_once_an_hour_later() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: it is read as 03:30 CEST.
    yesterday = at(2026, 3, 28, 1, 30)
    before = schedule_at("daily 02:30", at(2026, 3, 29, 1, 29), "Europe/Berlin")
    assert before.is_due(yesterday) == (False, 60.0)
    on_time = schedule_at("daily 02:30", at(2026, 3, 29, 1, 30), "Europe/Berlin")
    due, next_in = on_time.is_due(yesterday)
    assert due
    # The next one is 02:30 CEST on the 30th: 23 hours of elapsed time later.
    assert next_in == timedelta(hours=23).total_seconds()


def test_missed_runs_coalesce_into_one() -> None:
    now = at(2026, 3, 2, 12)
    schedule = schedule_at("every 1m", now)
    assert schedule.is_due(now - timedelta(hours=3)) == (True, 60.0)
    assert schedule.is_due(now) == (False, 60.0)


def test_the_tasks_belong_to_the_given_app_only() -> None:
    app = Celery("host")
    install(app, unused_engine, handler=calsync.LoggingHandler())
    other = Celery("other")
    assert not {name for name in other.tasks if name.startswith("calsync.")}
