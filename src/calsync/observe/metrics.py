"""Prometheus metrics for an Engine (the ``calsync[metrics]`` extra).

Counters and histograms are fed by the Engine's job runs (`Engine.observe`);
gauges (feeds by state, outbox depth, last successes) are read from the store
into a snapshot that a scrape serves at once and refreshes in the background
when it is older than ``max_age`` (and than 20 times the last read took), so
scraping 10,000 calendars stays cheap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta

import attrs
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from calsync.engine.jobs import Job
from calsync.engine.results import (
    CalendarStatus,
    CheckResult,
    DispatchResult,
    JobResult,
    SyncDueResult,
    SyncOutcome,
    SyncResult,
)
from calsync.engine.runner import Triggers
from calsync.engine.service import Engine
from calsync.observe.health import job_interval, last_progress
from calsync.stores.records import JobOutcome, JobRun, NotificationStatus

__all__ = ["REMINDER_RESULTS", "Metrics"]

logger = logging.getLogger("calsync.metrics")

REMINDER_RESULTS = (
    "created",
    "delivered",
    "retried",
    "failed",
    "missed",
    "cancelled",
)
"""The ``result`` label values of ``calsync_reminders_total``."""

_SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LAG_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 900, 3600)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# Syncs that did no work of their own: not timed, so they do not skew the histogram.
_UNTIMED = frozenset({SyncOutcome.BUSY, SyncOutcome.SKIPPED})
_CHANGES = ("added", "updated", "removed", "expired")
_FIRST_READ_TIMEOUT = 30.0
# Refresh at most once per this many times the last refresh took: reading the
# store costs at most 5 % of the time, however many calendars there are.
_DUTY = 20


# Set while `Metrics.exposition` renders, which has seen to the snapshot already
# and adds it pre-rendered (True) or has none (False); None for another scrape.
_EXPOSING: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "calsync_metrics_exposing", default=None
)
_EOF = b"# EOF\n"

Encoder = Callable[[Collector], bytes]


@attrs.frozen
class _Snapshot:
    """The store-read gauges as families and as text, and when they were read.

    ``rendered`` maps a content type to the families in it (no OpenMetrics
    EOF line): rendered when the snapshot is read, off the scrape's path.
    """

    families: tuple[Metric, ...]
    taken_at: float  # time.monotonic()
    read_at: datetime
    rendered: dict[str, bytes]

    def render(self, content_type: str, encoder: Encoder) -> bytes:
        """Return the families in ``content_type``, rendered once."""
        text = self.rendered.get(content_type)
        if text is None:
            text = self.rendered[content_type] = _render(self.families, encoder)
        return text


class _Families(Collector):
    """Some ready metric families, for an encoder."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = tuple(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _render(families: Iterable[Metric], encoder: Encoder) -> bytes:
    return encoder(_Families(families)).removesuffix(_EOF)


class Metrics:
    """calsync's Prometheus metrics for one Engine, on the host's registry.

    ``registry`` is where they are registered (default the global one, so an
    app that already serves ``/metrics`` shows them; None registers nothing,
    for a Celery worker in multiprocess mode). ``per_calendar=False`` drops the
    per-calendar ``calsync_feed_last_success_timestamp_seconds`` series for
    one: the oldest last success among calendars that are not paused.
    ``triggers`` gives the job intervals (default `Triggers`). Raises
    ``ValueError`` if the registry already holds calsync's metrics.

    Make it on the Engine's event loop (or await `refresh` once): a scrape from
    another thread then reads the store on that loop.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        registry: CollectorRegistry | None = REGISTRY,
        per_calendar: bool = True,
        triggers: Triggers | None = None,
        max_age: timedelta = timedelta(seconds=30),
    ) -> None:
        self._engine = engine
        self._registry = registry
        self._per_calendar = per_calendar
        self._triggers = triggers if triggers is not None else Triggers()
        self._max_age = max_age.total_seconds()
        self._snapshot: _Snapshot | None = None
        self._formats: dict[str, Encoder] = {}  # every format a scrape asked for
        self._read_seconds = 0.0  # how long the last refresh took
        self._store_up = False
        self._refreshing: asyncio.Future[None] | concurrent.futures.Future[None] | None
        self._refreshing = None
        self._loop: asyncio.AbstractEventLoop | None = _running_loop()
        self._collector = _StoreCollector(self)
        instruments = _Instruments()
        self._instruments = instruments
        if registry is not None:
            _register(registry, (*instruments.all(), self._collector))
        self._unsubscribe: Callable[[], None] | None = engine.observe(
            instruments.on_run
        )

    @property
    def registry(self) -> CollectorRegistry | None:
        """The registry the metrics are registered on."""
        return self._registry

    def close(self) -> None:
        """Stop counting the Engine's runs, unregister the metrics, stop a refresh."""
        if isinstance(self._refreshing, asyncio.Future):
            self._refreshing.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._registry is not None:
            for collector in (*self._instruments.all(), self._collector):
                self._registry.unregister(collector)
            self._registry = None

    async def refresh(self) -> None:
        """Read the store-backed gauges now (a scrape then serves them at once)."""
        self._loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            families = await self._read()
        except Exception:
            self._store_up = False
            logger.exception("could not read the store for calsync's metrics")
            return
        self._store_up = True
        formats = dict(self._formats)
        rendered = await asyncio.to_thread(
            lambda: {
                kind: _render(families, encoder) for kind, encoder in formats.items()
            }
        )
        taken = time.monotonic()
        self._read_seconds = taken - started
        self._snapshot = _Snapshot(families, taken, self._engine.now(), rendered)

    async def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """Return the text a ``/metrics`` endpoint serves, and its content type.

        The first call reads the store; later ones serve the snapshot and
        refresh it in the background once it is older than ``max_age``. With
        ``PROMETHEUS_MULTIPROC_DIR`` set, the counters of every process writing
        there are merged in.
        """
        if self._snapshot is None:
            await self._refreshed()
        else:
            self._refresh_soon()
        registry = self._exposed()
        encoder, content_type = choose_encoder(accept or "")
        self._formats.setdefault(content_type, encoder)
        body = await asyncio.to_thread(self._body, registry, encoder, content_type)
        return body, content_type

    def _body(self, registry: Collector, encoder: Encoder, content_type: str) -> bytes:
        """Render ``registry`` without the snapshot, then add it pre-rendered."""
        snapshot = self._snapshot
        token = _EXPOSING.set(snapshot is not None)
        try:
            live = encoder(registry)
        finally:
            _EXPOSING.reset(token)
        if snapshot is None:
            return live
        eof = live.endswith(_EOF)
        stored = snapshot.render(content_type, encoder)
        return live.removesuffix(_EOF) + stored + (_EOF if eof else b"")

    def _exposed(self) -> CollectorRegistry:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            merged.register(self._collector)
            return merged
        if self._registry is None:
            raise RuntimeError("these Metrics were made with registry=None")
        return self._registry

    async def _refreshed(self) -> None:
        """Refresh, sharing a refresh already under way."""
        refreshing = self._refreshing
        if isinstance(refreshing, asyncio.Future) and not refreshing.done():
            await asyncio.shield(refreshing)
            return
        self._refreshing = refreshing = asyncio.ensure_future(self.refresh())
        await asyncio.shield(refreshing)

    def _refresh_soon(self) -> None:
        """Start a background refresh if the snapshot is old; never wait for it."""
        snapshot, loop = self._snapshot, self._loop
        if loop is None or loop.is_closed():
            return
        age = math.inf if snapshot is None else time.monotonic() - snapshot.taken_at
        if age < max(self._max_age, _DUTY * self._read_seconds):
            return
        if self._refreshing is not None and not self._refreshing.done():
            return
        if _running_loop() is loop:
            self._refreshing = asyncio.ensure_future(self.refresh())
        else:
            self._refreshing = asyncio.run_coroutine_threadsafe(self.refresh(), loop)

    def _wait_first(self) -> None:
        """From a thread outside the Engine's loop: wait for the first store read."""
        loop = self._loop
        if self._snapshot is not None or loop is None or _running_loop() is loop:
            return
        future = asyncio.run_coroutine_threadsafe(self.refresh(), loop)
        try:
            future.result(_FIRST_READ_TIMEOUT)
        except Exception:
            logger.warning("calsync's metrics: the first store read did not finish")

    def _collect(self) -> Iterator[Metric]:
        exposing = _EXPOSING.get()
        if exposing is None:  # a host's scrape of its registry
            self._wait_first()
            self._refresh_soon()
        yield _gauge(
            "calsync_store_up",
            "1 if the last read of the store for these metrics succeeded, else 0.",
            float(self._store_up),
        )
        snapshot = self._snapshot
        if snapshot is not None:
            yield _gauge(
                "calsync_metrics_read_timestamp_seconds",
                "When the store-backed gauges were last read.",
                snapshot.read_at.timestamp(),
            )
            if not exposing:
                yield from snapshot.families
        yield from self._parse_families()

    def _parse_families(self) -> Iterator[Metric]:
        stats = self._engine.parse_stats
        if stats is None:
            return
        yield _counter(
            "calsync_parses",
            "Feeds parsed in this process's parse workers.",
            stats.parses,
        )
        yield _counter(
            "calsync_parse_cache_hits",
            "Parses that found their calendar's parse cache warm in the worker.",
            stats.warm,
        )
        yield _counter(
            "calsync_parse_cache_partial",
            "Parses answered with only the event groups that changed.",
            stats.partial,
        )
        yield _counter(
            "calsync_parse_workers_stopped",
            "Parse workers stopped past their time or memory limit.",
            stats.stopped,
        )

    async def _read(self) -> tuple[Metric, ...]:
        engine = self._engine
        status = await engine.status()
        outbox = await engine.store.notification_counts()
        families: list[Metric] = []
        feeds = GaugeMetricFamily(
            "calsync_feeds", "Calendars by health state.", labels=["state"]
        )
        for state, count in status.feeds.items():
            feeds.add_metric([str(state)], count)
        families.append(feeds)
        families.append(self._last_success(status.calendars))
        depth = GaugeMetricFamily(
            "calsync_outbox_depth",
            "Notifications in the outbox by status.",
            labels=["status"],
        )
        for notification_status in NotificationStatus:
            depth.add_metric([str(notification_status)], outbox[notification_status])
        families.append(depth)
        families.extend(await self._loops())
        return tuple(families)

    def _last_success(self, calendars: Iterable[CalendarStatus]) -> Metric:
        name = "calsync_feed_last_success_timestamp_seconds"
        help_text = "When a calendar was last synced successfully."
        successes = [
            (status.calendar.id, status.calendar.state.last_success_at)
            for status in calendars
            if not status.calendar.paused
            and status.calendar.state.last_success_at is not None
        ]
        if not self._per_calendar:
            family = GaugeMetricFamily(
                name, help_text + " The oldest among calendars not paused."
            )
            if successes:
                family.add_metric([], min(at for _, at in successes).timestamp())
            return family
        family = GaugeMetricFamily(name, help_text, labels=["calendar"])
        for calendar_id, at in successes:
            family.add_metric([calendar_id], at.timestamp())
        return family

    async def _loops(self) -> list[Metric]:
        store, now = self._engine.store, self._engine.now()
        last = GaugeMetricFamily(
            "calsync_job_last_success_timestamp_seconds",
            "When a job loop last completed a run (sync_due: or claim_due).",
            labels=["job_name"],
        )
        interval = GaugeMetricFamily(
            "calsync_job_interval_seconds",
            "The time between two runs of a job loop, by its trigger.",
            labels=["job_name"],
        )
        for job in Job.periodic():
            progress = await last_progress(store, job)
            if progress is not None:
                last.add_metric([job.value], progress.timestamp())
            every = job_interval(self._triggers.schedule(job), now)
            interval.add_metric([job.value], every.total_seconds())
        return [last, interval]


class _StoreCollector(Collector):
    """The gauges read from the store, served from the snapshot."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics._collect()

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not read the store.
        names = (
            "calsync_store_up",
            "calsync_metrics_read_timestamp_seconds",
            "calsync_feeds",
            "calsync_feed_last_success_timestamp_seconds",
            "calsync_outbox_depth",
            "calsync_job_last_success_timestamp_seconds",
            "calsync_job_interval_seconds",
        )
        described: list[Metric] = [GaugeMetricFamily(name, name) for name in names]
        for name in (
            "calsync_parses",
            "calsync_parse_cache_hits",
            "calsync_parse_cache_partial",
            "calsync_parse_workers_stopped",
        ):
            described.append(CounterMetricFamily(name, name))
        return described


class _Instruments:
    """The counters and histograms the Engine's job runs feed."""

    def __init__(self) -> None:
        self.syncs = Counter(
            "calsync_syncs",
            "Calendar syncs by outcome.",
            ["outcome"],
            registry=None,
        )
        self.sync_duration = Histogram(
            "calsync_sync_duration_seconds",
            "How long one calendar's sync took (fetch, parse, write).",
            registry=None,
            buckets=_SYNC_BUCKETS,
        )
        self.reminders = Counter(
            "calsync_reminders",
            "Reminders by what happened to them.",
            ["result"],
            registry=None,
        )
        self.reminder_lag = Histogram(
            "calsync_reminder_lag_seconds",
            "Delivery time minus fire time of each delivered reminder.",
            registry=None,
            buckets=_LAG_BUCKETS,
        )
        self.job_runs = Counter(
            "calsync_job_runs",
            "Job runs by job and outcome.",
            ["job_name", "outcome"],
            registry=None,
        )
        self.job_duration = Histogram(
            "calsync_job_duration_seconds",
            "How long a job run took.",
            ["job_name"],
            registry=None,
            buckets=_JOB_BUCKETS,
        )
        self.fetch_bytes = Counter(
            "calsync_fetch_bytes",
            "Bytes fetched from feeds, as transferred.",
            registry=None,
        )
        self.not_modified = Counter(
            "calsync_http_not_modified",
            "Fetches answered 304 Not Modified.",
            registry=None,
        )
        self.changes = Counter(
            "calsync_occurrence_changes",
            "Occurrences added, updated, removed or expired by syncs.",
            ["change"],
            registry=None,
        )
        self._initialise()

    def all(self) -> tuple[Collector, ...]:
        return (
            self.syncs,
            self.sync_duration,
            self.reminders,
            self.reminder_lag,
            self.job_runs,
            self.job_duration,
            self.fetch_bytes,
            self.not_modified,
            self.changes,
        )

    def _initialise(self) -> None:
        """Create every labelled series at 0, so rates work from the first scrape."""
        for outcome in SyncOutcome:
            self.syncs.labels(str(outcome))
        for result in REMINDER_RESULTS:
            self.reminders.labels(result)
        for job in Job:
            self.job_duration.labels(job.value)
            for job_outcome in JobOutcome:
                self.job_runs.labels(job.value, str(job_outcome))
        for change in _CHANGES:
            self.changes.labels(change)

    def on_run(self, run: JobRun, result: JobResult | None) -> None:
        """Count one job run and what its result says."""
        self.job_runs.labels(run.job, str(run.outcome)).inc()
        self.job_duration.labels(run.job).observe(run.duration.total_seconds())
        match result:
            case SyncDueResult():
                for synced in result.results:
                    self._sync(synced)
            case SyncResult():
                self._sync(result)
            case CheckResult():
                self._add("created", result.created)
                self._add("missed", result.missed)
            case DispatchResult():
                self._add("delivered", result.delivered)
                self._add("retried", result.retried)
                self._add("failed", result.dead)
                for lag in result.lags:
                    self.reminder_lag.observe(lag)

    def _sync(self, result: SyncResult) -> None:
        self.syncs.labels(str(result.outcome)).inc()
        if result.outcome not in _UNTIMED:
            self.sync_duration.observe(result.elapsed.total_seconds())
        if result.bytes_read:
            self.fetch_bytes.inc(result.bytes_read)
        if result.not_modified:
            self.not_modified.inc()
        self._add("created", result.notifications_created)
        self._add("cancelled", result.notifications_cancelled)
        for change in _CHANGES:
            count: int = getattr(result, change)
            if count:
                self.changes.labels(change).inc(count)

    def _add(self, result: str, count: int) -> None:
        if count:
            self.reminders.labels(result).inc(count)


def _register(registry: CollectorRegistry, collectors: Iterable[Collector]) -> None:
    """Register all of ``collectors`` or, if one is refused, none of them."""
    done: list[Collector] = []
    try:
        for collector in collectors:
            registry.register(collector)
            done.append(collector)
    except ValueError:
        for collector in done:
            registry.unregister(collector)
        raise


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
