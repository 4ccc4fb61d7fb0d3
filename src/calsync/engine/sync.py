"""Syncing one leased calendar: fetch, parse, diff, guard, and one atomic write."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

import attrs

from calsync.core.breaker import Circuit, HostCircuits
from calsync.core.deletions import guard_removals, live_count
from calsync.core.diff import diff
from calsync.core.durations import format_duration
from calsync.core.errors import CalsyncError, LeaseLost
from calsync.core.incremental import ParseCache
from calsync.core.limits import Limits
from calsync.core.model import (
    ChangeSet,
    Notification,
    Occurrence,
    ParsedCalendar,
    Problem,
    Window,
)
from calsync.core.notify import leads_for, next_fire_after, notifications_due
from calsync.core.parse import parse_ics
from calsync.core.redact import redact_text
from calsync.core.retry import next_sync_at
from calsync.core.schedule import schedule_of
from calsync.core.settings import Settings
from calsync.engine import tracing
from calsync.engine.commit import GroupCommit
from calsync.engine.parsepool import (
    ParseCrashed,
    ParseOutOfMemory,
    ParsePool,
    ParseTimedOut,
)
from calsync.engine.results import SyncOutcome, SyncResult
from calsync.fetch.failures import (
    FetchConnectionError,
    FetchError,
    FetchStatusError,
    FetchTimeout,
)
from calsync.fetch.fetcher import Fetcher, FetchResult
from calsync.fetch.throttle import HostLimiter, host_of
from calsync.stores.records import (
    AppliedSync,
    Calendar,
    CircuitState,
    Lease,
    NotificationStatus,
    SyncState,
    SyncWrite,
)
from calsync.stores.store import Store

__all__ = ["Syncer", "expansion_inputs", "setting_problem"]

logger = logging.getLogger("calsync.sync")

Clock = Callable[[], datetime]

# Pending notifications of one calendar read per sync to find removed leads.
_PENDING_SCAN_LIMIT = 100_000
# Occurrences kept as last written, over all calendars (a few hundred bytes
# each, most shared with the parse results kept anyway): beyond, the least
# recently synced calendars' are dropped and read from the store when needed.
_WRITTEN_LIMIT = 200_000


def expansion_inputs(calendar: Calendar, settings: Settings) -> str:
    """Return a digest of all an expansion depends on besides the body.

    Zone, window, leads, alarms and the occurrence cap: when one changes, the
    next sync fetches afresh and expands again. It is kept after a
    colon in `SyncState.body_hash`, so no schema change is needed.
    """
    fields = (
        calendar.tz or "",
        calendar.window_past,
        calendar.horizon,
        sorted(set(calendar.leads)),
        calendar.use_alarms,
        settings.alarm_lookahead if calendar.use_alarms else None,
        settings.max_occurrences,
    )
    return hashlib.blake2b(repr(fields).encode(), digest_size=8).hexdigest()


def setting_problem(calendar: Calendar, now: datetime) -> str | None:
    """Why a calendar's stored settings cannot be used at ``now``, or None.

    A value out of range (a lead or horizon of thousands of years) fails that
    calendar's work with this line, never the job for every calendar.
    """
    try:
        schedule_of(calendar.schedule, calendar.tz)
    except CalsyncError as error:
        return f"{calendar.label}: its schedule cannot be used ({error}); set every"
    try:
        window = _window(calendar, now)
    except OverflowError:
        return (
            f"{calendar.label}: its window (window_past "
            f"{format_duration(calendar.window_past)}, horizon "
            f"{format_duration(calendar.horizon)}) reaches past the dates calsync "
            "can hold; set a shorter window_past or horizon"
        )
    for lead in calendar.leads:
        try:
            window.start - lead
        except OverflowError:
            return (
                f"{calendar.label}: a lead of {format_duration(lead)} reaches past "
                "the dates calsync can hold; set leads to values such as 10m or 1d"
            )
    return None


@attrs.frozen
class _Fetched:
    """A fetch that brought a body worth parsing, or None for "nothing new".

    ``reexpand`` says the expansion inputs changed since the last parse.
    """

    result: FetchResult
    body_hash: str | None
    reexpand: bool = False


@attrs.frozen
class _Written:
    """The occurrences a sync left stored for a calendar, and the state naming them.

    While the calendar's stored ``body_hash`` and ``parsed_at`` are still these,
    its live occurrences are these (equal by value; a parse reuses the objects),
    so the next sync diffs against them without reading them back.
    """

    body_hash: str
    parsed_at: datetime
    occurrences: tuple[Occurrence, ...]


class _Rested(Exception):
    """The calendar's host is rested by its circuit: not fetched until ``until``."""

    def __init__(self, host: str, until: datetime) -> None:
        super().__init__(host)
        self.host = host
        self.until = until


class _Failure(Exception):
    """A sync step failed in a way that is recorded on the calendar, not raised."""

    def __init__(self, message: str, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error = error


class Syncer:
    """Syncs leased calendars for one Engine; holds its parse caches and host limits."""

    def __init__(
        self,
        store: Store,
        fetcher: Fetcher,
        settings: Settings,
        clock: Clock,
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self._hosts = HostCircuits(settings.breaker)
        self._settings = settings
        self._limits = Limits(
            settings.parse_max_bytes,
            settings.parse_max_components,
            settings.parse_max_line,
        )
        self._clock = clock
        self._caches: OrderedDict[str, ParseCache] = OrderedDict()
        self._written: OrderedDict[str, _Written] = OrderedDict()
        self._written_count = 0
        self._cache_sizes: dict[str, int] = {}  # estimated bytes of each cache
        self._prepared = False
        self._pool: ParsePool | None = None
        if settings.parse_isolation:
            self._pool = ParsePool(
                workers=settings.parse_concurrency,
                memory_limit=settings.parse_memory_limit,
                cache_size=settings.parse_cache_size,
                cache_bytes=settings.parse_cache_memory,
            )
        # Per event loop (asyncio objects belong to one); a closed loop drops out.
        self._limiters: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, HostLimiter
        ] = weakref.WeakKeyDictionary()
        self._parse_slots: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._commits: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, GroupCommit
        ] = weakref.WeakKeyDictionary()

    async def sync(
        self, lease: Lease, *, force: bool = False, confirm_removals: bool = False
    ) -> SyncResult:
        """Sync one leased calendar and release its lease by writing, whatever happens.

        A failure is recorded on the calendar (backoff, circuit) and returned;
        only cancellation propagates, after giving the lease back.
        """
        started = time.monotonic()
        calendar = lease.calendar
        self.prepare()
        try:
            with tracing.span(
                "calsync sync", {"calsync.calendar.id": calendar.id}
            ) as span:
                result = await self._sync(lease, force=force, confirm=confirm_removals)
                tracing.annotate(span, {"calsync.sync.outcome": str(result.outcome)})
        except asyncio.CancelledError:
            await asyncio.shield(self._release(lease))
            raise
        except LeaseLost as error:
            logger.warning(
                "lost the lease on %s during its sync: nothing was written",
                calendar.label,
                extra={"calsync_calendar_id": calendar.id},
            )
            result = _result(calendar, SyncOutcome.LOST, error=str(error))
        except Exception as error:
            result = await self._crashed(lease, error)
        elapsed = timedelta(seconds=time.monotonic() - started)
        return attrs.evolve(result, elapsed=elapsed)

    async def _crashed(self, lease: Lease, error: Exception) -> SyncResult:
        """Record an unexpected error (a store refusing a value, a bug) as a failure."""
        calendar = lease.calendar
        logger.exception(
            "unexpected error syncing %s",
            calendar.label,
            extra={"calsync_calendar_id": calendar.id},
        )
        failure = _Failure(
            f"{calendar.label}: unexpected {type(error).__name__} during the sync "
            "(see the log); nothing of it was stored",
            error,
        )
        try:
            return await self._failed(lease, failure, self._clock())
        except Exception:
            logger.exception("could not record the failed sync of %s", calendar.label)
            await self._release(lease)
            return _result(calendar, SyncOutcome.FAILED, error=failure.message)

    async def _release(self, lease: Lease) -> None:
        try:
            await self._store.release_lease(lease)
        except Exception:
            logger.exception("could not release the lease on %s", lease.calendar.label)

    async def _sync(self, lease: Lease, *, force: bool, confirm: bool) -> SyncResult:
        calendar = lease.calendar
        now = self._clock()
        read = 0
        try:
            if (problem := setting_problem(calendar, now)) is not None:
                raise _Failure(problem)
            fetched = await self._fetch(calendar, now, force=force)
            read = fetched.result.bytes_read
            if fetched.body_hash is None:
                result = await self._unchanged(lease, fetched.result, now)
            else:
                with tracing.span("calsync parse", {}) as current:
                    parsed = await self._parse(calendar, fetched.result, now)
                    tracing.annotate(current, _parse_attributes(parsed))
                result = await self._apply(lease, fetched, parsed, now, confirm=confirm)
        except _Rested as rested:
            result = await self._rested(lease, rested, now)
        except _Failure as failure:
            result = await self._failed(lease, failure, self._clock())
        return attrs.evolve(result, bytes_read=read) if read else result

    # -- fetching ----------------------------------------------------------

    async def _fetch(
        self, calendar: Calendar, now: datetime, *, force: bool
    ) -> _Fetched:
        state = calendar.state
        inputs = expansion_inputs(calendar, self._settings)
        reexpand = (state.body_hash or "").partition(":")[2] != inputs
        fresh = (
            force
            or reexpand
            or state.held_removals > 0
            or _window_stale(state, now, self._settings.reparse_after)
        )
        host = host_of(calendar.url)
        if (until := self._hosts.admit(host, now)) is not None:
            raise _Rested(host, until)
        try:
            async with self._limiter().slot(calendar.url):
                # The span names the host only: the URL may hold a token.
                with tracing.span("calsync fetch", {"server.address": host}) as current:
                    result = await self._fetcher.fetch(
                        calendar.url,
                        etag=None if fresh else state.etag,
                        last_modified=None if fresh else state.last_modified,
                        auth=calendar.auth,
                    )
                    tracing.annotate(current, _fetch_attributes(result))
        except FetchError as error:
            self._host_failed(host, error)
            # The label shows the URL for an unnamed calendar; add it for a named one.
            detail = str(error) if calendar.name else error.problem
            raise _Failure(f"{calendar.label}: {detail}", error) from None
        self._hosts.record(host, self._clock(), failed=False)
        if result.body is None:
            return _Fetched(result, None)
        digest = hashlib.blake2b(result.body, digest_size=16).hexdigest()
        body_hash = f"{digest}:{inputs}"
        if not fresh and body_hash == state.body_hash:
            return _Fetched(result, None)
        return _Fetched(result, body_hash, reexpand)

    def _host_failed(self, host: str, error: FetchError) -> None:
        """Count a failure the host is to blame for; say so when it rests the host."""
        if not _host_to_blame(error):
            return  # the feed's own problem (404, 500, not a calendar, blocked)
        before = self._hosts.circuit(host).state
        circuit = self._hosts.record(host, self._clock(), failed=True)
        if circuit.state is CircuitState.OPEN and before is CircuitState.CLOSED:
            assert circuit.next_probe_at is not None
            logger.warning(
                "host %s failed %d fetches in a row: its feeds rest until %s, "
                "then one probes it",
                host,
                circuit.consecutive_failures,
                circuit.next_probe_at.isoformat(),
                extra={"calsync_host": host},
            )

    def _limiter(self) -> HostLimiter:
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = HostLimiter(
                concurrency=self._settings.per_host_concurrency,
                rate=self._settings.per_host_rate,
                burst=self._settings.per_host_concurrency,
            )
        return limiter

    # -- parsing -----------------------------------------------------------

    async def _parse(
        self, calendar: Calendar, fetched: FetchResult, now: datetime
    ) -> ParsedCalendar:
        assert fetched.body is not None
        window = _window(calendar, now)
        timeout = self._settings.parse_timeout.total_seconds()
        try:
            if self._pool is None:
                return await self._parse_here(calendar, fetched.body, window, timeout)
            return await self._pool.parse(
                calendar.id,
                fetched.body,
                window,
                default_tz=calendar.tz or "UTC",
                max_occurrences=self._settings.max_occurrences,
                timeout=timeout,
                limits=self._limits,
            )
        except (TimeoutError, ParseTimedOut):
            ended = "stopped" if self._pool is not None else "abandoned"
            raise _Failure(
                f"parsing the feed of {calendar.label} took longer than "
                f"{timeout:g} s and was {ended}: the feed is too large or expands "
                "to too many occurrences (raise [engine] parse_timeout, "
                "CALSYNC_ENGINE_PARSE_TIMEOUT, or narrow the calendar's horizon)"
            ) from None
        except ParseOutOfMemory:
            limit = (self._settings.parse_memory_limit or 0) // 2**20
            raise _Failure(
                f"parsing the feed of {calendar.label} needed more than {limit} MiB "
                "and was stopped: the feed is too large or expands to too many "
                "occurrences (raise [engine] parse_memory_limit, "
                "CALSYNC_ENGINE_PARSE_MEMORY_LIMIT, or narrow the calendar's horizon)"
            ) from None
        except ParseCrashed as error:
            raise _Failure(
                f"parsing the feed of {calendar.label} failed: {error.detail}; "
                "nothing of it was stored and the next sync tries again"
            ) from None
        except CalsyncError as error:
            raise _Failure(f"{calendar.label}: {error}", error) from None
        except Exception as error:
            logger.exception(
                "unexpected error parsing %s",
                calendar.label,
                extra={"calsync_calendar_id": calendar.id},
            )
            raise _Failure(
                f"{calendar.label}: the feed could not be parsed "
                f"({type(error).__name__}); see the log for details",
                error,
            ) from None

    async def _parse_here(
        self, calendar: Calendar, body: bytes, window: Window, timeout: float
    ) -> ParsedCalendar:
        """Parse in a thread of this process (``parse_isolation`` off): unstoppable."""
        parse = functools.partial(
            parse_ics,
            body,
            window,
            default_tz=calendar.tz or "UTC",
            max_occurrences=self._settings.max_occurrences,
            cache=self._cache(calendar.id),
            **attrs.asdict(self._limits),
        )
        try:
            async with self._parse_slot():
                parsed = await asyncio.wait_for(asyncio.to_thread(parse), timeout)
        except TimeoutError:
            # The thread runs on; its cache must not be reused.
            self._caches.pop(calendar.id, None)
            self._cache_sizes.pop(calendar.id, None)
            raise
        self._weigh(calendar.id)
        return parsed

    def _parse_slot(self) -> asyncio.Semaphore:
        # Parsing holds the GIL: a few at a time keep the loop and memory calm.
        loop = asyncio.get_running_loop()
        slot = self._parse_slots.get(loop)
        if slot is None:
            slot = asyncio.Semaphore(self._settings.parse_concurrency)
            self._parse_slots[loop] = slot
        return slot

    def _cache(self, calendar_id: str) -> ParseCache | None:
        size = self._settings.parse_cache_size
        if size == 0:
            return None
        cache = self._caches.pop(calendar_id, None) or ParseCache()
        self._caches[calendar_id] = cache
        while len(self._caches) > size:
            evicted, _ = self._caches.popitem(last=False)
            self._cache_sizes.pop(evicted, None)
        return cache

    def _weigh(self, calendar_id: str) -> None:
        """Note a cache's bytes after its parse; drop the oldest past the budget."""
        cache = self._caches.get(calendar_id)
        if cache is None:
            return
        stats = cache.stats
        # A parse that only reused groups can only have dropped some: the old
        # count stands above (counting walks every group).
        if calendar_id not in self._cache_sizes or stats.whole or stats.groups_expanded:
            self._cache_sizes[calendar_id] = cache.nbytes
        held = sum(self._cache_sizes.values())
        while self._caches and held > self._settings.parse_cache_memory:
            evicted, _ = self._caches.popitem(last=False)
            held -= self._cache_sizes.pop(evicted, 0)

    @property
    def parse_cache_bytes(self) -> int:
        """Estimated bytes held by the parse caches (and kept results), all told."""
        if self._pool is not None:
            return self._pool.cache_bytes
        return sum(self._cache_sizes.values())

    @property
    def parse_cache_budget(self) -> int:
        """The bytes `parse_cache_bytes` stays within (0: no cache kept)."""
        if self._settings.parse_cache_size == 0:
            return 0
        return self._settings.parse_cache_memory

    @property
    def parse_cached_calendars(self) -> int:
        """How many calendars have a parse cache kept."""
        if self._pool is not None:
            return self._pool.cached_calendars
        return len(self._caches)

    @property
    def parse_pool(self) -> ParsePool | None:
        """The worker processes feeds are parsed in; None with isolation off."""
        return self._pool

    def prepare(self) -> None:
        """Get the parse workers' launcher going, so the first parse need not wait.

        Called by the first sync (its fetch runs meanwhile), so a process that
        never syncs, such as `calsync list`, starts no launcher.
        """
        if self._pool is not None and not self._prepared:
            self._prepared = True
            self._pool.prepare()

    async def aclose(self) -> None:
        """End the parse workers and drop the parse caches."""
        self._caches.clear()
        self._written.clear()
        self._written_count = 0
        self._cache_sizes.clear()
        if self._pool is not None:
            await self._pool.close()

    # -- writing -----------------------------------------------------------

    async def _unchanged(
        self, lease: Lease, fetched: FetchResult, now: datetime
    ) -> SyncResult:
        calendar = lease.calendar
        state = self._succeeded(calendar, fetched, now, calendar.state.refresh_interval)
        if calendar.state.consecutive_failures == 0:
            # A warning of the last parse (events kept unread) holds for the same body.
            state = attrs.evolve(state, last_error=calendar.state.last_error)
        cancel, keep = await self._stale(calendar, None)
        write = SyncWrite(state, cancel=cancel, keep_leads=keep)
        applied = await self._write(lease, write, now)
        return _result(
            calendar,
            SyncOutcome.UNCHANGED,
            not_modified=not fetched.modified,
            next_sync_at=state.next_sync_at,
            notifications_cancelled=applied.cancelled,
        )

    async def _apply(
        self,
        lease: Lease,
        fetched: _Fetched,
        parsed: ParsedCalendar,
        now: datetime,
        *,
        confirm: bool,
    ) -> SyncResult:
        calendar = lease.calendar
        window = _window(calendar, now)
        truncated = _truncated(fetched.result.body or b"")
        if truncated:
            parsed = attrs.evolve(parsed, problems=(*parsed.problems, _TRUNCATED))
        unreadable = parsed.unreadable_uids
        stored = await self._stored(calendar, unreadable)
        changes = diff(stored, parsed.occurrences, window, unreadable=unreadable)
        kept = _kept(stored, changes, unreadable)
        current = (
            *(o for o in parsed.occurrences if o.key.uid not in unreadable),
            *kept,
        )
        problems = list(parsed.problems)
        warnings = []
        if kept:
            warning = _kept_problem(kept)
            problems.append(warning)
            warnings.append(f"{calendar.label}: {warning.why}")
        parsed = attrs.evolve(parsed, problems=tuple(problems))
        live = live_count(changes)
        guarded = guard_removals(
            changes,
            current,
            minimum=self._settings.mass_deletion_min,
            fraction=self._settings.mass_deletion_fraction,
            previous_fingerprint=calendar.state.held_removals_hash,
            confirmed=confirm,
            suspicious=truncated,
        )
        changes = guarded.changes
        state = attrs.evolve(
            self._succeeded(calendar, fetched.result, now, parsed.refresh_interval),
            body_hash=fetched.body_hash,
            parsed_at=now,
            refresh_interval=parsed.refresh_interval,
            held_removals=guarded.held,
            held_removals_hash=guarded.fingerprint,
        )
        if guarded.held:
            why = "the feed is cut off" if truncated else "the feed dropped them"
            message = (
                f"{calendar.label}: held back {guarded.held} of {live} "
                f"events' removals ({why}); they are applied "
                "if the next sync says the same, or at once with "
                "sync_calendar(id, confirm_removals=True)"
            )
            # Parse again next time even if the body is the same: a repeat confirms.
            state = attrs.evolve(state, body_hash=None)
            warnings.insert(0, message)
        if warnings:
            state = attrs.evolve(state, last_error="; ".join(warnings))
            for warning_text in warnings:
                logger.warning(warning_text, extra={"calsync_calendar_id": calendar.id})
        # After a change of leads, zone or window every occurrence may owe reminders.
        fresh = current if fetched.reexpand else (*changes.added, *changes.updated)
        create, next_fire_at = self._reminders(calendar, fresh, now)
        cancel, keep = await self._stale(calendar, current)
        write = SyncWrite(
            state, _or_none(changes), create=create, cancel=cancel, keep_leads=keep
        )
        applied = await self._write(lease, write, now)
        if state.body_hash is not None and not unreadable:
            self._remember(calendar.id, _Written(state.body_hash, now, current))
        result = _changed_result(
            calendar, changes, guarded.held, parsed, state, applied
        )
        return attrs.evolve(result, next_fire_at=next_fire_at)

    async def _stored(
        self, calendar: Calendar, unreadable: frozenset[str]
    ) -> Sequence[Occurrence]:
        """Return the calendar's live occurrences: as last written here, or read.

        Read from the store when another write may have come between (its state
        names another parse), or when unreadable events keep stored versions.
        """
        written = self._written.pop(calendar.id, None)
        if written is not None:
            self._written_count -= len(written.occurrences)
        state = calendar.state
        if (
            written is not None
            and not unreadable
            and written.body_hash == state.body_hash
            and written.parsed_at == state.parsed_at
        ):
            return written.occurrences
        return await self._store.list_occurrences(calendar.id)

    def _remember(self, calendar_id: str, written: _Written) -> None:
        """Keep what a sync wrote, for as many calendars as parse caches (bounded)."""
        size = self._settings.parse_cache_size
        if size == 0 or len(written.occurrences) > _WRITTEN_LIMIT:
            return
        self._written[calendar_id] = written
        self._written_count += len(written.occurrences)
        while len(self._written) > size or self._written_count > _WRITTEN_LIMIT:
            _, dropped = self._written.popitem(last=False)
            self._written_count -= len(dropped.occurrences)

    def _succeeded(
        self,
        calendar: Calendar,
        fetched: FetchResult,
        now: datetime,
        refresh_interval: timedelta | None,
    ) -> SyncState:
        schedule = schedule_of(calendar.schedule, calendar.tz)
        cadence = schedule.next_after(now) - now
        return attrs.evolve(
            calendar.state,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            last_attempt_at=now,
            last_success_at=now,
            last_error=None,
            consecutive_failures=0,
            circuit=CircuitState.CLOSED,
            next_sync_at=next_sync_at(
                now, cadence, refresh_interval=refresh_interval, max_age=fetched.max_age
            ),
        )

    async def _rested(self, lease: Lease, rested: _Rested, now: datetime) -> SyncResult:
        """Put a calendar of a rested host off until the host may be tried again.

        Not a failure of the calendar: its own failure count and circuit stay.
        """
        calendar = lease.calendar
        state = attrs.evolve(calendar.state, next_sync_at=rested.until)
        await self._write(lease, SyncWrite(state), now)
        message = (
            f"{calendar.label}: not fetched, its host {rested.host} is rested after "
            f"failing fetch after fetch; next try {rested.until.isoformat()}"
        )
        return _result(
            calendar, SyncOutcome.SKIPPED, error=message, next_sync_at=rested.until
        )

    async def _failed(
        self, lease: Lease, failure: _Failure, now: datetime
    ) -> SyncResult:
        calendar = lease.calendar
        state = calendar.state
        circuit = self._settings.breaker.record_failure(_circuit_of(state, now), now)
        if circuit.state is CircuitState.CLOSED:
            retry_at = self._settings.retry.next_attempt(
                now, circuit.consecutive_failures, error=failure.error
            )
        else:
            assert circuit.next_probe_at is not None
            retry_at = circuit.next_probe_at
        message = redact_text(failure.message)
        state = attrs.evolve(
            state,
            last_attempt_at=now,
            last_error=message,
            consecutive_failures=circuit.consecutive_failures,
            circuit=circuit.state,
            next_sync_at=retry_at,
        )
        await self._write(lease, SyncWrite(state), now)
        logger.warning(
            "sync of %s failed (%d in a row, circuit %s, next try %s): %s",
            calendar.label,
            circuit.consecutive_failures,
            circuit.state,
            retry_at.isoformat(),
            message,
            extra={
                "calsync_calendar_id": calendar.id,
                "calsync_failures": circuit.consecutive_failures,
            },
        )
        return _result(
            calendar, SyncOutcome.FAILED, error=message, next_sync_at=retry_at
        )

    async def _write(
        self, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        ttl = self._settings.lease_ttl
        if lease.expires_at - now < ttl / 2:
            lease = await self._store.renew_lease(lease, now, ttl)
        return await self._group_commit().apply(lease, write)

    def _group_commit(self) -> GroupCommit:
        """Return the running loop's group commit (syncs ending together share one)."""
        loop = asyncio.get_running_loop()
        commit = self._commits.get(loop)
        if commit is None:
            commit = self._commits[loop] = GroupCommit(self._store, self._clock)
        return commit

    # -- notifications -----------------------------------------------------

    def _reminders(
        self, calendar: Calendar, occurrences: Sequence[Occurrence], now: datetime
    ) -> tuple[tuple[Notification, ...], datetime | None]:
        """Return new or changed occurrences' due reminders and next fire time.

        The due ones go into the same write; the fire time lets a runtime wake.
        """
        grace = self._settings.late_grace
        lookahead = self._settings.alarm_lookahead
        # Nothing starting further ahead than the longest lead can be due yet.
        reach = max(
            (*calendar.leads, lookahead if calendar.use_alarms else timedelta(0))
        )
        due: list[Notification] = []
        fire_times: list[datetime] = []
        for occurrence in occurrences:
            leads = leads_for(calendar, occurrence, lookahead)
            if occurrence.start - now <= reach:
                due.extend(
                    notifications_due(
                        [occurrence], leads=leads, now=now, late_grace=grace
                    )
                )
            if (fire_at := next_fire_after(occurrence, leads, now)) is not None:
                fire_times.append(fire_at)
        return tuple(due), min(fire_times, default=None)

    async def _stale(
        self, calendar: Calendar, current: Iterable[Occurrence] | None
    ) -> tuple[tuple[Notification, ...], frozenset[timedelta] | None]:
        """Return what a sync's write cancels of reminders of dropped leads.

        Without alarms, the store cancels every other lead's (``keep_leads``, no
        read); with alarms, each occurrence's own leads count, so they are read.
        """
        if not calendar.use_alarms:
            return (), frozenset(calendar.leads)
        if current is None:  # unchanged: the alarms' leads are as they were
            return (), None
        return await self.stale_leads(calendar, current), None

    async def stale_leads(
        self, calendar: Calendar, current: Iterable[Occurrence] | None = None
    ) -> tuple[Notification, ...]:
        """Pending reminders whose lead the calendar no longer has: to cancel."""
        pending = await self._store.list_notifications(
            calendar_id=calendar.id,
            status=NotificationStatus.PENDING,
            limit=_PENDING_SCAN_LIMIT,
        )
        if not pending:
            return ()
        alarms: dict[object, tuple[timedelta, ...]] = {}
        if calendar.use_alarms and current is not None:
            alarms = {occurrence.key: occurrence.alarms for occurrence in current}
        lookahead = self._settings.alarm_lookahead
        stale = []
        for record in pending:
            notification = record.notification
            if notification.lead in calendar.leads:
                continue
            if calendar.use_alarms and (
                current is None
                or (
                    notification.lead in alarms.get(notification.key, ())
                    and notification.lead <= lookahead
                )
            ):
                continue
            stale.append(notification)
        return tuple(stale)


_TRUNCATED = Problem(
    "feed truncated",
    "the body ends before END:VCALENDAR: it was cut off on the way or by the "
    "server; what it holds was read, and removals are held back",
)
_CALENDAR_END = re.compile(rb"END:VCALENDAR\s*$", re.IGNORECASE)


def _truncated(body: bytes) -> bool:
    """Whether a body stops before its calendar's end (a cut-off transfer)."""
    return _CALENDAR_END.search(body[-256:]) is None


def _kept(
    stored: Iterable[Occurrence], changes: ChangeSet, unreadable: frozenset[str]
) -> tuple[Occurrence, ...]:
    """Return the stored occurrences of unreadable events, which stay (unexpired)."""
    if not unreadable:
        return ()
    expired = {occurrence.key for occurrence in changes.expired}
    return tuple(
        occurrence
        for occurrence in stored
        if occurrence.key.uid in unreadable and occurrence.key not in expired
    )


def _kept_problem(kept: Sequence[Occurrence]) -> Problem:
    """Return the problem reporting events kept as stored, their copy unreadable."""
    count = len({occurrence.key.uid for occurrence in kept})
    events = "event" if count == 1 else "events"
    return Problem(
        "events kept unread",
        f"{count} {events} of the feed could not be read; their stored versions "
        "and pending reminders were kept (see the sync's other problems for why)",
    )


# Answers that speak for a whole host (overloaded, gateway down), not one feed.
_HOST_STATUSES = frozenset({429, 502, 503, 504})


def _host_to_blame(error: FetchError) -> bool:
    """Whether a failed fetch says the host is unwell: timeout, refused, 429/5xx."""
    if isinstance(error, FetchStatusError):
        return error.status in _HOST_STATUSES
    return isinstance(error, FetchTimeout | FetchConnectionError) and error.transient


def _window(calendar: Calendar, now: datetime) -> Window:
    return Window(now - calendar.window_past, now + calendar.horizon)


def _window_stale(state: SyncState, now: datetime, reparse_after: timedelta) -> bool:
    """Whether the window slid far enough since the last parse to expand again."""
    return state.parsed_at is None or now - state.parsed_at >= reparse_after


def _circuit_of(state: SyncState, now: datetime) -> Circuit:
    if state.circuit is CircuitState.CLOSED:
        return Circuit(CircuitState.CLOSED, state.consecutive_failures)
    return Circuit(state.circuit, state.consecutive_failures, state.next_sync_at or now)


def _or_none(changes: ChangeSet) -> ChangeSet | None:
    touched = changes.added or changes.updated or changes.removed or changes.expired
    return changes if touched else None


def _fetch_attributes(fetched: FetchResult) -> dict[str, int | bool]:
    return {
        "http.response.body.size": fetched.bytes_read,
        "calsync.fetch.not_modified": not fetched.modified,
    }


def _parse_attributes(parsed: ParsedCalendar) -> dict[str, int]:
    return {
        "calsync.occurrences": len(parsed.occurrences),
        "calsync.problems": len(parsed.problems),
    }


def _result(calendar: Calendar, outcome: SyncOutcome, **fields: object) -> SyncResult:
    return SyncResult(calendar.id, calendar.label, outcome, **fields)  # type: ignore[arg-type]


def _changed_result(
    calendar: Calendar,
    changes: ChangeSet,
    held: int,
    parsed: ParsedCalendar,
    state: SyncState,
    applied: AppliedSync,
) -> SyncResult:
    if held:
        outcome = SyncOutcome.HELD
    elif _or_none(changes) is not None:
        outcome = SyncOutcome.CHANGED
    else:
        outcome = SyncOutcome.UNCHANGED
    return SyncResult(
        calendar.id,
        calendar.label,
        outcome,
        added=len(changes.added),
        updated=len(changes.updated),
        removed=len(changes.removed),
        expired=len(changes.expired),
        unchanged=changes.unchanged,
        held_removals=held,
        problems=parsed.problems,
        notifications_created=applied.created,
        notifications_cancelled=applied.cancelled,
        next_sync_at=state.next_sync_at,
    )
