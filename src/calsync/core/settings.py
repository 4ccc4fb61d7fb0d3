"""How an `Engine` behaves: concurrency, leases, retries, guards and retention."""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from calsync.core.breaker import CircuitBreaker
from calsync.core.durations import LONGEST, Span, format_duration
from calsync.core.errors import ValidationError
from calsync.core.limits import MAX_BYTES, MAX_COMPONENTS, MAX_LINE
from calsync.core.retry import RetryPolicy

__all__ = [
    "SETTINGS_COUNTS",
    "SETTINGS_SPANS",
    "Checked",
    "Count",
    "HttpSettings",
    "Settings",
    "default_worker",
    "span_problem",
]


def default_worker() -> str:
    """Return a worker name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


DAY = timedelta(days=1)
WEEK = timedelta(days=7)
YEAR = timedelta(days=366)

SETTINGS_SPANS: dict[str, Span] = {
    "lease_ttl": Span(DAY, zero_ok=False, why="a crashed worker's calendars wait"),
    "parse_timeout": Span(DAY, zero_ok=False),
    "reparse_after": Span(YEAR, zero_ok=False),
    "late_grace": Span(WEEK, why="a reminder later than that is news, not a reminder"),
    "alarm_lookahead": Span(YEAR, zero_ok=False),
    "handler_timeout": Span(DAY, zero_ok=False),
    "keep_expired_occurrences": Span(LONGEST),
    "keep_notifications": Span(LONGEST),
    "keep_job_runs": Span(LONGEST),
    # Of the retry policies and the circuit breaker: a feed or a receiver that
    # fails is tried again at least once a week.
    "retry.base": Span(WEEK, zero_ok=False),
    "retry.cap": Span(WEEK, zero_ok=False),
    "retry.max_retry_after": Span(WEEK, zero_ok=False),
    "delivery_retry.base": Span(WEEK, zero_ok=False),
    "delivery_retry.cap": Span(WEEK, zero_ok=False),
    "delivery_retry.max_retry_after": Span(WEEK, zero_ok=False),
    "breaker.cool_down": Span(WEEK, zero_ok=False),
    "breaker.probe_timeout": Span(DAY, zero_ok=False),
}
"""The range of each duration setting; the config reader checks the same table."""


@attrs.frozen
class Count:
    """The range a whole-number setting accepts; `problem` says why not, in words."""

    minimum: int
    maximum: int

    def problem(self, value: object) -> str | None:
        """Why *value* is not a fitting whole number, or None when it is one."""
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be a whole number"
        if value < self.minimum:
            return f"must be a whole number >= {self.minimum}"
        if value > self.maximum:
            return f"must be from {self.minimum} to {self.maximum:,}"
        return None


SETTINGS_COUNTS: dict[str, Count] = {
    # Each concurrent sync or delivery is a task; more than this only thrashes.
    "sync_concurrency": Count(1, 1_000),
    "per_host_concurrency": Count(1, 1_000),
    "max_occurrences": Count(1, 10_000_000),
    "mass_deletion_min": Count(1, 10_000_000),
    "dispatch_batch": Count(1, 100_000),
    "dispatch_concurrency": Count(1, 1_000),
    "max_attempts": Count(1, 1_000),
    "stale_factor": Count(1, 1_000),
    "parse_cache_size": Count(0, 1_000_000),
    "parse_cache_memory": Count(0, 2**40),
    # Each parse slot is a worker process.
    "parse_concurrency": Count(1, 64),
    # The parser's own limits (parse_ics max_bytes, max_components, max_line).
    "parse_max_bytes": Count(1_024, 2**32),
    "parse_max_components": Count(1, 100_000_000),
    "parse_max_line": Count(75, 2**30),
    "breaker.failure_threshold": Count(1, 1_000),
}
"""The range of each whole-number setting."""

MAX_RATE = 1_000.0
"""The highest ``per_host_rate`` (requests per second): past it, no limit at all."""


def rate_problem(value: object) -> str | None:
    """Why *value* is not a per-host rate (requests per second > 0), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number of requests per second"
    if not math.isfinite(value) or not 0 < value <= MAX_RATE:
        return f"must be a number greater than 0 and at most {MAX_RATE:g}"
    return None


def fraction_problem(value: object) -> str | None:
    """Why *value* is not a fraction in (0, 1], or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if not 0 < value <= 1:  # NaN fails this too
        return "must be greater than 0 and at most 1, like 0.5"
    return None


@attrs.frozen
class Checked:
    """An attrs validator over a rule ``problem(name, value)`` (None: the value fits).

    A config reader asks `problem` before it builds the object, so code and config
    refuse the same values in the same words; ``name`` is the field, or
    ``field.part`` for a part of a nested policy (``retry.cap``).
    """

    problem: Callable[[str, Any], str | None]

    def __call__(
        self, instance: object, attribute: attrs.Attribute[Any], value: object
    ) -> None:
        """Raise `ValidationError` naming the field when its value is out of range."""
        problem = self.problem(attribute.name, value)
        if problem is not None:
            raise ValidationError(f"{attribute.name} {problem}, got {_shown(value)!r}")


def _shown(value: object) -> object:
    return format_duration(value) if isinstance(value, timedelta) else value


def span_problem(span: Span, value: object) -> str | None:
    """Why *value* is not in *span*; a duration that must be positive says so."""
    if isinstance(value, timedelta) and not span.zero_ok and value <= span.minimum:
        return "must be a duration greater than zero, like '10m'"
    return span.problem(value)


def _in_table(name: str, value: object) -> str | None:
    rule = SETTINGS_SPANS.get(name) or SETTINGS_COUNTS[name]
    if isinstance(rule, Span):
        return span_problem(rule, value)
    return rule.problem(value)


_span = _count = Checked(_in_table)


@attrs.frozen
class _Parts(Checked):
    """Range-check each part of a retry policy or circuit breaker by its dotted name."""

    def __call__(
        self, instance: object, attribute: attrs.Attribute[Any], value: object
    ) -> None:
        """Raise `ValidationError` naming ``field.part`` for a part out of range."""
        for name in (*SETTINGS_SPANS, *SETTINGS_COUNTS):
            owner, _, part = name.partition(".")
            if owner == attribute.name:
                found = getattr(value, part)
                problem = self.problem(name, found)
                if problem is not None:
                    raise ValidationError(f"{name} {problem}, got {_shown(found)!r}")


_nested = _Parts(_in_table)
_fraction = Checked(lambda name, value: fraction_problem(value))
_rate = Checked(lambda name, value: None if value is None else rate_problem(value))


def _memory_problem(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 64 * 2**20:
        return "must be a number of bytes >= 64 MiB (67108864)"
    return None


_memory_limit = Checked(_memory_problem)


@attrs.frozen
class Settings:
    """Tuning of an `Engine`; the defaults suit a service with thousands of calendars.

    Durations are timedeltas. ``worker`` names this process in leases and claims;
    it must differ between processes sharing a store. Feeds are parsed in
    ``parse_concurrency`` worker processes of at most ``parse_memory_limit``
    bytes each (None: no limit); ``parse_isolation=False`` parses in threads of
    this process instead, where a parse past its limit cannot be stopped.
    ``parse_max_bytes``, ``parse_max_components`` and ``parse_max_line`` are
    the parser's own limits (`parse_ics` ``max_bytes`` and so on).
    ``parse_cache_size`` calendars' parse caches are kept at most, within
    ``parse_cache_memory`` bytes all told (estimated; least recently parsed
    dropped first).

    Each field is also an ``[engine]`` key of ``calsync.toml`` and a
    ``CALSYNC_ENGINE_<KEY>`` variable, read by its type and checked by its
    validator's rule (`Checked`), with no other edit.
    """

    worker: str = attrs.field(factory=default_worker)
    sync_concurrency: int = attrs.field(default=16, validator=_count)
    per_host_concurrency: int = attrs.field(default=4, validator=_count)
    per_host_rate: float | None = attrs.field(default=2.0, validator=_rate)
    lease_ttl: timedelta = attrs.field(default=timedelta(minutes=5), validator=_span)
    parse_timeout: timedelta = attrs.field(
        default=timedelta(minutes=2), validator=_span
    )
    max_occurrences: int = attrs.field(default=20_000, validator=_count)
    reparse_after: timedelta = attrs.field(default=timedelta(days=1), validator=_span)
    late_grace: timedelta = attrs.field(default=timedelta(0), validator=_span)
    alarm_lookahead: timedelta = attrs.field(default=timedelta(days=7), validator=_span)
    mass_deletion_min: int = attrs.field(default=20, validator=_count)
    mass_deletion_fraction: float = attrs.field(default=0.5, validator=_fraction)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, validator=_nested)
    breaker: CircuitBreaker = attrs.field(factory=CircuitBreaker, validator=_nested)
    dispatch_batch: int = attrs.field(default=100, validator=_count)
    dispatch_concurrency: int = attrs.field(default=10, validator=_count)
    handler_timeout: timedelta = attrs.field(
        default=timedelta(seconds=30), validator=_span
    )
    max_attempts: int = attrs.field(default=8, validator=_count)
    delivery_retry: RetryPolicy = attrs.field(
        factory=lambda: RetryPolicy(base=timedelta(seconds=30), cap=timedelta(hours=1)),
        validator=_nested,
    )
    keep_expired_occurrences: timedelta = attrs.field(
        default=timedelta(days=7), validator=_span
    )
    keep_notifications: timedelta = attrs.field(
        default=timedelta(days=30), validator=_span
    )
    keep_job_runs: timedelta = attrs.field(default=timedelta(days=30), validator=_span)
    stale_factor: int = attrs.field(default=3, validator=_count)
    parse_cache_size: int = attrs.field(default=10_000, validator=_count)
    parse_cache_memory: int = attrs.field(default=192 * 2**20, validator=_count)
    parse_concurrency: int = attrs.field(default=2, validator=_count)
    parse_memory_limit: int | None = attrs.field(
        default=512 * 1024 * 1024, validator=_memory_limit
    )
    parse_isolation: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )
    parse_max_bytes: int = attrs.field(default=MAX_BYTES, validator=_count)
    parse_max_components: int = attrs.field(default=MAX_COMPONENTS, validator=_count)
    parse_max_line: int = attrs.field(default=MAX_LINE, validator=_count)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.worker, str) or not self.worker.strip():
            raise ValidationError("worker must name this process")
        if self.parse_timeout >= self.lease_ttl:
            raise ValidationError(
                "parse_timeout must be shorter than lease_ttl, or a lease could expire "
                "while its calendar is still being parsed"
            )
        if self.handler_timeout * 2 > self.lease_ttl:
            raise ValidationError(
                "handler_timeout must be at most half of lease_ttl: a claim must "
                "outlast the handler call it covers"
            )


def _bind_problem(name: str, value: object) -> str | None:
    """Why *value* is not ``host:port`` (``[::1]:8080`` for IPv6), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        return "must be host:port, like '127.0.0.1:8080'"
    host, colon, port = value.rpartition(":")
    if not colon or not host.strip("[]") or not port.isdigit():
        return "must be host:port, like '127.0.0.1:8080'"
    if not 0 <= int(port) <= 65_535:
        return "must name a port from 0 to 65535"
    return None


def _hidden(value: object) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen
class HttpSettings:
    """``[http]``: the HTTP API and dashboard that ``calsync run --http`` serves.

    ``bind`` is ``host:port`` (None: no HTTP server). ``token`` is the bearer
    token every API request and dashboard login must present; without one the
    server refuses any bind but loopback. ``owner_header`` names a header the
    host's reverse proxy sets to scope each request to one owner (tenant).
    """

    bind: str | None = attrs.field(default=None, validator=Checked(_bind_problem))
    token: str | None = attrs.field(
        default=None, metadata={"secret": True}, repr=_hidden
    )
    owner_header: str | None = None
