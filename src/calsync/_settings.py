"""How an `Engine` behaves: concurrency, leases, retries, guards and retention."""

from __future__ import annotations

import os
import secrets
import socket
from datetime import timedelta

import attrs

from ._errors import ValidationError
from ._fetch.breaker import CircuitBreaker
from ._fetch.policy import RetryPolicy

__all__ = ["Settings", "default_worker"]


def default_worker() -> str:
    """Return a worker name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _at_least_one(
    instance: object, attribute: attrs.Attribute[int], value: int
) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _positive(
    instance: object, attribute: attrs.Attribute[timedelta], value: timedelta
) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValidationError(
            f"{attribute.name} must be a timedelta > 0, got {value!r}"
        )


def _not_negative(
    instance: object, attribute: attrs.Attribute[timedelta], value: timedelta
) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ValidationError(
            f"{attribute.name} must be a timedelta >= 0, got {value!r}"
        )


def _fraction(
    instance: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{attribute.name} must be a number, got {value!r}")
    if not 0 < value <= 1:
        raise ValidationError(f"{attribute.name} must be in (0, 1], got {value!r}")


def _rate(
    instance: object, attribute: attrs.Attribute[float], value: float | None
) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
        raise ValidationError(
            f"{attribute.name} must be a number > 0 or None, got {value!r}"
        )


def _memory_limit(
    instance: object, attribute: attrs.Attribute[int], value: int
) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < 64 * 2**20
    ):
        raise ValidationError(
            f"{attribute.name} must be None or a number of bytes >= 64 MiB, "
            f"got {value!r}"
        )


@attrs.frozen
class Settings:
    """Tuning of an `Engine`; the defaults suit a service with thousands of calendars.

    Durations are timedeltas. ``worker`` names this process in leases and claims;
    it must differ between processes sharing a store. Feeds are parsed in
    ``parse_concurrency`` worker processes of at most ``parse_memory_limit``
    bytes each (None: no limit); ``parse_isolation=False`` parses in threads of
    this process instead, where a parse past its limit cannot be stopped.
    """

    worker: str = attrs.field(factory=default_worker)
    sync_concurrency: int = attrs.field(default=16, validator=_at_least_one)
    per_host_concurrency: int = attrs.field(default=4, validator=_at_least_one)
    per_host_rate: float | None = attrs.field(default=2.0, validator=_rate)
    lease_ttl: timedelta = attrs.field(
        default=timedelta(minutes=5), validator=_positive
    )
    parse_timeout: timedelta = attrs.field(
        default=timedelta(minutes=2), validator=_positive
    )
    max_occurrences: int = attrs.field(default=20_000, validator=_at_least_one)
    reparse_after: timedelta = attrs.field(
        default=timedelta(days=1), validator=_positive
    )
    late_grace: timedelta = attrs.field(default=timedelta(0), validator=_not_negative)
    alarm_lookahead: timedelta = attrs.field(
        default=timedelta(days=7), validator=_positive
    )
    mass_deletion_min: int = attrs.field(default=20, validator=_at_least_one)
    mass_deletion_fraction: float = attrs.field(default=0.5, validator=_fraction)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    breaker: CircuitBreaker = attrs.field(factory=CircuitBreaker)
    dispatch_batch: int = attrs.field(default=100, validator=_at_least_one)
    dispatch_concurrency: int = attrs.field(default=10, validator=_at_least_one)
    handler_timeout: timedelta = attrs.field(
        default=timedelta(seconds=30), validator=_positive
    )
    max_attempts: int = attrs.field(default=8, validator=_at_least_one)
    delivery_retry: RetryPolicy = attrs.field(
        factory=lambda: RetryPolicy(base=timedelta(seconds=30), cap=timedelta(hours=1))
    )
    keep_expired_occurrences: timedelta = attrs.field(
        default=timedelta(days=7), validator=_not_negative
    )
    keep_notifications: timedelta = attrs.field(
        default=timedelta(days=30), validator=_not_negative
    )
    keep_job_runs: timedelta = attrs.field(
        default=timedelta(days=30), validator=_not_negative
    )
    stale_factor: int = attrs.field(default=3, validator=_at_least_one)
    parse_cache_size: int = attrs.field(default=256, validator=attrs.validators.ge(0))
    parse_concurrency: int = attrs.field(default=2, validator=_at_least_one)
    parse_memory_limit: int | None = attrs.field(
        default=512 * 1024 * 1024, validator=_memory_limit
    )
    parse_isolation: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )

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
