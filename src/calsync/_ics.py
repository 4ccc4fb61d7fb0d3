"""Parse an iCalendar body into the occurrences inside a window (work in progress)."""

from __future__ import annotations

__all__ = ["parse_ics"]


def parse_ics(*args: object, **kwargs: object) -> object:
    """Placeholder."""
    raise NotImplementedError
