"""Durations as people write them in configs and commands: ``10m``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

import attrs

from calsync.core.errors import ValidationError

__all__ = [
    "LONGEST",
    "DurationTooLong",
    "Span",
    "as_duration",
    "format_duration",
    "parse_duration",
]

_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
# ASCII digits only: Arabic-Indic or other Unicode digits are not read as numbers.
_PART = re.compile(r"([0-9]+)\s*([wdhms])", re.ASCII)
_WHOLE = re.compile(r"(?:[0-9]+\s*[wdhms]\s*)+", re.ASCII)


class DurationTooLong(ValidationError):
    """A duration is well written but longer than `LONGEST`."""


LONGEST = timedelta(days=3660)
"""The longest duration calsync reads (about 10 years): the widest setting, the
horizon, fits, and date arithmetic on anything this long cannot overflow."""


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``10m``, ``1h30m``, ``2d`` or ``1w`` (units w, d, h, m, s).

    Raises `ValidationError` with an example of what is expected.
    """
    if not isinstance(text, str):
        raise ValidationError(f"a duration must be text like '10m', got {text!r}")
    spec = text.strip().lower()
    if not spec or _WHOLE.fullmatch(spec) is None:
        raise ValidationError(
            f"bad duration {_quoted(text)}: expected a number and a unit w, d, h, m "
            "or s, like '10m', '1h30m' or '2d'"
        )
    parts = _PART.findall(spec)
    # A number of more than 12 digits is past LONGEST in any unit; int() of a
    # very long one would even fail on Python's digit limit.
    too_long = any(len(n.lstrip("0")) > 12 for n, _ in parts)
    seconds = 0 if too_long else sum(int(n) * _UNITS[unit] for n, unit in parts)
    if too_long or seconds > LONGEST.total_seconds():
        raise DurationTooLong(
            f"duration {_quoted(text)} is too long: at most {format_duration(LONGEST)} "
            "(about 10 years)"
        )
    return timedelta(seconds=seconds)


def _quoted(text: str) -> str:
    """Quote a user's text for a message, cut short if it is long."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


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


@attrs.frozen
class Span:
    """The range a duration setting accepts; `problem` says, in words, why not.

    One table of these serves the attrs validators (API) and the config and
    command-line readers, so every entry refuses the same values.
    """

    maximum: timedelta
    minimum: timedelta = timedelta(0)
    zero_ok: bool = True
    why: str = ""

    def problem(self, value: object) -> str | None:
        """Why *value* is not a fitting duration, or None when it is one."""
        if not isinstance(value, timedelta):
            return "must be a duration like '10m'"
        if value < self.minimum or (value == self.minimum and not self.zero_ok):
            low = "greater than" if not self.zero_ok else "at least"
            return f"must be {low} {format_duration(self.minimum)}"
        if value > self.maximum:
            why = f" ({self.why})" if self.why else ""
            return f"must be at most {format_duration(self.maximum)}{why}"
        return None

    def check(self, name: str, value: object) -> None:
        """Raise `ValidationError` naming *name* when *value* is out of range."""
        problem = self.problem(value)
        if problem is not None:
            shown = format_duration(value) if isinstance(value, timedelta) else value
            raise ValidationError(f"{name} {problem}, got {shown!r}")
