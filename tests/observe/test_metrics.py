"""Prometheus metrics: a real Engine's runs, scraped over HTTP and parsed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from _feeds import event, ics
from calsync import Engine
from calsync.engine.jobs import Job
from calsync.observe import Metrics, add_routes
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, Recorder, get, served

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape by (name, labels), parsed by prometheus_client."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(base: str) -> Samples:
    status, content_type, body = await get(f"{base}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    return parse(body)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def metrics(
    engine: Engine, registry: CollectorRegistry
) -> AsyncIterator[Metrics]:
    metrics = Metrics(engine, registry=registry, max_age=timedelta(days=1))
    yield metrics
    metrics.close()


@pytest.fixture
async def base(engine: Engine, metrics: Metrics) -> AsyncIterator[str]:
    app = web.Application()
    await add_routes(app, engine, metrics=metrics)
    async with served(app) as url:
        yield url


async def two_calendars(engine: Engine, feeds: FeedServer) -> None:
    """One feed with an event in 15 minutes (a 10 minute lead), one failing."""
    feeds.set("/good.ics", ics(event("standup", T0 + 15 * MINUTE)))
    feeds.fail("/bad.ics", 500)
    await engine.add_calendar(feeds.url("/good.ics"), name="good")
    await engine.add_calendar(feeds.url("/bad.ics"), name="bad")


async def test_a_sync_cycle_is_counted_by_outcome_and_timed(
    engine: Engine, feeds: FeedServer, base: str
) -> None:
    await two_calendars(engine, feeds)
    await engine.sync_due()
    samples = await scrape(base)
    assert value(samples, "calsync_syncs_total", outcome="changed") == 1
    assert value(samples, "calsync_syncs_total", outcome="failed") == 1
    assert value(samples, "calsync_syncs_total", outcome="unchanged") == 0
    assert value(samples, "calsync_sync_duration_seconds_count") == 2
    assert value(samples, "calsync_fetch_bytes_total") > 0
    assert value(samples, "calsync_occurrence_changes_total", change="added") == 1
    runs = "calsync_job_runs_total"
    assert value(samples, runs, job_name="sync_due", outcome="partial") == 1


async def test_feeds_are_counted_by_state_from_the_store(
    engine: Engine, feeds: FeedServer, base: str
) -> None:
    await two_calendars(engine, feeds)
    paused = await engine.add_calendar(feeds.url("/paused.ics"), paused=True)
    await engine.sync_due()
    samples = await scrape(base)
    assert value(samples, "calsync_feeds", state="ok") == 1
    assert value(samples, "calsync_feeds", state="failing") == 1
    assert value(samples, "calsync_feeds", state="paused") == 1
    assert value(samples, "calsync_feeds", state="stale") == 0
    assert value(samples, "calsync_feeds", state="circuit_open") == 0
    assert value(samples, "calsync_store_up") == 1
    good = next(c for c in await engine.list_calendars() if c.name == "good")
    last = value(
        samples, "calsync_feed_last_success_timestamp_seconds", calendar=good.id
    )
    assert last == T0.timestamp()
    assert not any(dict(labels).get("calendar") == paused.id for _, labels in samples)


async def test_a_304_is_counted_as_not_modified(
    engine: Engine, feeds: FeedServer, clock: ManualClock, base: str
) -> None:
    feeds.set("/good.ics", ics(event("standup", T0 + 15 * MINUTE)))
    calendar = await engine.add_calendar(feeds.url("/good.ics"))
    await engine.sync_calendar(calendar.id)
    await engine.sync_calendar(calendar.id)
    samples = await scrape(base)
    assert value(samples, "calsync_http_not_modified_total") == 1
    assert value(samples, "calsync_syncs_total", outcome="unchanged") == 1


async def test_a_delivered_reminder_is_counted_with_its_lag(
    engine: Engine, feeds: FeedServer, clock: ManualClock, base: str
) -> None:
    feeds.set("/good.ics", ics(event("standup", T0 + 15 * MINUTE)))
    await engine.add_calendar(feeds.url("/good.ics"))
    await engine.sync_due()
    clock.advance(5 * MINUTE + timedelta(seconds=30))  # fire time + 30 s
    await engine.check_notifications()
    recorder = Recorder()
    await engine.dispatch_notifications(recorder)
    assert len(recorder.deliveries) == 1
    samples = await scrape(base)
    assert value(samples, "calsync_reminders_total", result="created") == 1
    assert value(samples, "calsync_reminders_total", result="delivered") == 1
    assert value(samples, "calsync_reminders_total", result="failed") == 0
    assert value(samples, "calsync_reminder_lag_seconds_count") == 1
    assert value(samples, "calsync_reminder_lag_seconds_sum") == 30.0
    assert value(samples, "calsync_reminder_lag_seconds_bucket", le="15.0") == 0
    assert value(samples, "calsync_reminder_lag_seconds_bucket", le="30.0") == 1
    assert value(samples, "calsync_outbox_depth", status="delivered") == 1
    assert value(samples, "calsync_outbox_depth", status="pending") == 0


async def test_failed_reminders_reach_the_dead_letter_count(
    engine: Engine, feeds: FeedServer, clock: ManualClock, base: str
) -> None:
    feeds.set("/good.ics", ics(event("standup", T0 + 15 * MINUTE)))
    await engine.add_calendar(feeds.url("/good.ics"))
    await engine.sync_due()
    clock.advance(5 * MINUTE)
    await engine.check_notifications()

    async def refusing(delivery: object) -> None:
        raise RuntimeError("receiver down")

    for _ in range(engine.settings.max_attempts):
        await engine.dispatch_notifications(refusing)
        clock.advance(timedelta(hours=1))
    samples = await scrape(base)
    assert value(samples, "calsync_reminders_total", result="failed") == 1
    retried = value(samples, "calsync_reminders_total", result="retried")
    assert retried == engine.settings.max_attempts - 1
    assert value(samples, "calsync_outbox_depth", status="failed") == 1


async def test_job_loops_report_their_last_success_and_interval(
    engine: Engine, clock: ManualClock, base: str
) -> None:
    await engine.run_job(Job.CHECK_NOTIFICATIONS)
    samples = await scrape(base)
    last = value(
        samples,
        "calsync_job_last_success_timestamp_seconds",
        job_name="check_notifications",
    )
    assert last == T0.timestamp()
    interval = value(samples, "calsync_job_interval_seconds", job_name="sync_due")
    assert interval == 30
    assert (
        "calsync_job_last_success_timestamp_seconds",
        frozenset({("job_name", "sync_due")}),
    ) not in samples


async def test_the_sync_loop_progresses_by_claims_too(
    engine: Engine, base: str
) -> None:
    await engine.run_job(Job.CLAIM_DUE)
    samples = await scrape(base)
    last = value(
        samples, "calsync_job_last_success_timestamp_seconds", job_name="sync_due"
    )
    assert last == T0.timestamp()


async def test_a_scrape_serves_the_snapshot_until_it_is_refreshed(
    engine: Engine, feeds: FeedServer, metrics: Metrics, base: str
) -> None:
    await engine.add_calendar(feeds.url("/a.ics"))
    before = await scrape(base)
    await engine.add_calendar(feeds.url("/b.ics"))
    cached = await scrape(base)
    await metrics.refresh()
    refreshed = await scrape(base)
    assert value(before, "calsync_feeds", state="ok") == 1
    assert value(cached, "calsync_feeds", state="ok") == 1
    assert value(refreshed, "calsync_feeds", state="ok") == 2


async def test_one_series_replaces_the_per_calendar_ones_when_asked(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics(event("a", T0 + 15 * MINUTE)))
    feeds.set("/b.ics", ics(event("b", T0 + 15 * MINUTE)))
    first = await engine.add_calendar(feeds.url("/a.ics"))
    await engine.sync_due()
    clock.advance(MINUTE)
    await engine.add_calendar(feeds.url("/b.ics"))
    await engine.sync_due()
    registry = CollectorRegistry()
    metrics = Metrics(engine, registry=registry, per_calendar=False)
    try:
        body, _ = await metrics.exposition()
    finally:
        metrics.close()
    samples = parse(body.decode())
    assert value(samples, "calsync_feed_last_success_timestamp_seconds") == (
        T0.timestamp()
    )
    assert not any(dict(labels).get("calendar") == first.id for _, labels in samples)


async def test_parse_workers_are_counted(
    engine: Engine, feeds: FeedServer, base: str
) -> None:
    feeds.set("/good.ics", ics(event("standup", T0 + 15 * MINUTE)))
    await engine.add_calendar(feeds.url("/good.ics"))
    await engine.sync_due()
    samples = await scrape(base)
    assert value(samples, "calsync_parses_total") == 1
    assert value(samples, "calsync_parse_cache_hits_total") == 0


async def test_a_registry_refuses_a_second_set_of_calsync_metrics(
    engine: Engine, metrics: Metrics, registry: CollectorRegistry
) -> None:
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(engine, registry=registry)
    clean = CollectorRegistry()
    clean.register(Counter("calsync_http_not_modified", "taken", registry=None))
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(engine, registry=clean)
    assert clean.get_sample_value("calsync_syncs_total", {"outcome": "changed"}) is None


async def test_closed_metrics_stop_counting_and_leave_the_registry(
    engine: Engine, registry: CollectorRegistry
) -> None:
    metrics = Metrics(engine, registry=registry)
    metrics.close()
    await engine.run_job(Job.CHECK_NOTIFICATIONS)
    assert registry.get_sample_value("calsync_job_runs_total") is None
    again = Metrics(engine, registry=registry)  # the names are free again
    again.close()


async def test_the_host_registry_serves_calsync_metrics_from_a_thread(
    engine: Engine, feeds: FeedServer, registry: CollectorRegistry
) -> None:
    """A host serving its registry from a thread gets the store-read gauges too."""
    import asyncio

    from prometheus_client import generate_latest

    await engine.add_calendar(feeds.url("/a.ics"))
    metrics = Metrics(engine, registry=registry)
    try:
        text = (await asyncio.to_thread(generate_latest, registry)).decode()
    finally:
        metrics.close()
    assert value(parse(text), "calsync_feeds", state="ok") == 1


async def test_the_bundled_routes_make_their_own_metrics_with_process_metrics(
    engine: Engine,
) -> None:
    app = web.Application()
    await add_routes(app, engine)
    async with served(app) as base:
        await engine.run_job(Job.CHECK_NOTIFICATIONS)
        samples = await scrape(base)
    runs = value(
        samples,
        "calsync_job_runs_total",
        job_name="check_notifications",
        outcome="ok",
    )
    assert runs == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


async def test_openmetrics_is_served_when_asked_for(
    engine: Engine, feeds: FeedServer, base: str
) -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    await engine.add_calendar(feeds.url("/a.ics"))
    accept = "application/openmetrics-text; version=1.0.0"
    for _ in range(2):  # the store's part rendered at the scrape, then kept
        status, content_type, body = await get(f"{base}/metrics", accept)
        assert status == 200
        assert content_type.startswith("application/openmetrics-text")
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in openmetrics_families(body)  # type: ignore[no-untyped-call]
            for sample in family.samples
        }
        assert value(samples, "calsync_feeds", state="ok") == 1
        assert value(samples, "calsync_syncs_total", outcome="changed") == 0
