"""Durations as people write them in configs and commands: ``10m``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

from ._errors import ValidationError

__all__ = ["as_duration", "format_duration", "parse_duration"]

_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)\s*([wdhms])")
_WHOLE = re.compile(r"(?:\d+\s*[wdhms]\s*)+")


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``10m``, ``1h30m``, ``2d`` or ``1w`` (units w, d, h, m, s).

    Raises `ValidationError` with an example of what is expected.
    """
    if not isinstance(text, str):
        raise ValidationError(f"a duration must be text like '10m', got {text!r}")
    spec = text.strip().lower()
    if not spec or _WHOLE.fullmatch(spec) is None:
        raise ValidationError(
            f"bad duration {text!r}: expected a number and a unit w, d, h, m or s, "
            "like '10m', '1h30m' or '2d'"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(spec))
    return timedelta(seconds=seconds)


def as_duration(value: timedelta | str) -> timedelta:
    """Return a timedelta as is, or parse a duration text."""
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def format_duration(value: timedelta) -> str:
    """Write a duration as `parse_duration` reads it: ``1h30m``; ``0s`` for zero."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in _UNITS.items():
        if unit == "w":
            continue
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
