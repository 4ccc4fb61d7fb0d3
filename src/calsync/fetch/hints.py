"""Read a server's politeness hints: Retry-After and Cache-Control max-age.

Pure functions over header values; a malformed hint is ignored (None), never an
error, since it comes from a server calsync does not control.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime

from calsync.fetch.failures import RetryAfter

__all__ = ["parse_max_age", "parse_retry_after"]

# Larger values are nonsense (or hostile) and would overflow timedelta.
_MAX_SECONDS = 10 * 365 * 24 * 3600
_MAX_AGE = re.compile(r'^max-age\s*=\s*"?(\d{1,12})"?$', re.I)


def parse_retry_after(value: str | None) -> RetryAfter | None:
    """Return Retry-After as a delay (seconds) or an aware UTC instant (a date)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=min(int(text), _MAX_SECONDS))
    try:
        instant = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)  # RFC 9110: HTTP-dates are in GMT
    return instant.astimezone(UTC)


def parse_max_age(cache_control: str | None) -> timedelta | None:
    """Return Cache-Control's max-age, or None when absent or no-cache/no-store."""
    if not cache_control:
        return None
    directives = [part.strip() for part in cache_control.split(",")]
    lowered = {directive.lower() for directive in directives}
    if lowered & {"no-cache", "no-store"}:
        return None
    for directive in directives:
        match = _MAX_AGE.match(directive)
        if match:
            return timedelta(seconds=min(int(match.group(1)), _MAX_SECONDS))
    return None
