"""Time zone lookup with clear errors; calsync ships its zone data through tzdata."""

from __future__ import annotations

import functools
from datetime import tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from calsync.core.errors import TimezoneError

__all__ = ["is_iana", "resolve_zone", "zone_name"]


def resolve_zone(zone: str | tzinfo) -> tzinfo:
    """Return the tzinfo for an IANA name (or pass a tzinfo through).

    Raises `TimezoneError` naming the zone when it is unknown or malformed.
    """
    if isinstance(zone, tzinfo):
        return zone
    return _zone_by_name(zone)


def zone_name(zone: tzinfo) -> str:
    """Return the IANA key of a zone, or its ``str`` for other tzinfo objects."""
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else str(zone)


@functools.cache
def _zone_by_name(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise TimezoneError(
            f"time zone must be an IANA name like 'Europe/Berlin', got {name!r}"
        )
    try:
        return ZoneInfo(name.strip())
    # A folder such as "Europe" raises OSError, a malformed name ValueError.
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise TimezoneError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin'"
        ) from error


def is_iana(name: str) -> bool:
    """Whether a name is exactly one of tzdata's zones (case and all)."""
    return name in _iana_names()


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())
