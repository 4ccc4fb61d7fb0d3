"""The parser's own size limits, checked on the text before icalendar reads it.

A service parses feeds it does not control: the body's size, its number of
components, how deep they nest and how long one line is are bounded here, in
one linear pass over the text, so that no feed costs minutes or gigabytes.
"""

from __future__ import annotations

import re

import attrs

from calsync.core.errors import ParseError, ValidationError
from calsync.core.model import Problem

__all__ = [
    "MAX_BYTES",
    "MAX_COMPONENTS",
    "MAX_DEPTH",
    "MAX_LINE",
    "Limits",
]

# A fetcher's default body cap (max_body_bytes) is 20 MiB as well.
MAX_BYTES = 20 * 1024 * 1024
# 84 bytes a component in 20 MiB: smaller than any real event (a Google event is
# about 350 bytes), yet a 20 MiB feed of ~140,000 events with alarms still fits.
MAX_COMPONENTS = 250_000
# VCALENDAR > VEVENT > VALARM is three deep; nothing real comes close to this.
MAX_DEPTH = 32
# A content line, unfolded; a long DESCRIPTION is some kilobytes.
MAX_LINE = 1024 * 1024

# A BEGIN or END line after the first (a sure BEGIN:VCALENDAR), in any case.
_BEGIN_OR_END = re.compile(r"\n[ \t]*(?:([Bb])[Ee][Gg][Ii][Nn]|[Ee][Nn][Dd])[ \t]*[:;]")
# The end of a logical line: a line break not followed by a fold (RFC 5545 3.1).
_LINE_END = re.compile(r"\n(?![ \t])|\Z")
_BREAK = re.compile(r"\n(?![ \t])")
_FOLD = re.compile(r"\r?\n[ \t]")


def _limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be a positive integer, got {value!r}")
    return value


@attrs.frozen
class Limits:
    """The bounds of one parse; see `parse_ics` for what each one means."""

    max_bytes: int = attrs.field(default=MAX_BYTES)
    max_components: int = attrs.field(default=MAX_COMPONENTS)
    max_line: int = attrs.field(default=MAX_LINE)

    def __attrs_post_init__(self) -> None:
        for name in ("max_bytes", "max_components", "max_line"):
            _limit(name, getattr(self, name))

    def check_size(self, size: int) -> None:
        """Raise `ParseError` for a body over ``max_bytes``."""
        if size > self.max_bytes:
            raise ParseError(
                f"the body is {size:,} bytes, over the parser's limit of "
                f"{self.max_bytes:,} (parse_ics max_bytes, the Engine's "
                "parse_max_bytes)"
            )

    def check_lines(self, text: str, problems: list[Problem]) -> str:
        """Drop lines over ``max_line``.

        A dropped line becomes blank, so that later line numbers stay right,
        and is reported as a problem.
        """
        for start, end in reversed(self._long_lines(text)):
            logical = text[start:end]
            length = len(_FOLD.sub("", logical).rstrip("\r"))
            number = text.count("\n", 0, start) + 1
            problems.append(
                Problem(
                    "line too long",
                    f"{length:,} characters, over the parser's limit of "
                    f"{self.max_line:,} (parse_ics max_line, the Engine's "
                    "parse_max_line); the line was dropped",
                    line=number,
                )
            )
            text = text[:start] + "\n" * logical.count("\n") + text[end:]
        return text

    def _long_lines(self, text: str) -> list[tuple[int, int]]:
        """Return the spans of logical lines longer than ``max_line``, in order.

        Such a line holds two checkpoints ``max_line // 2`` apart, so only the
        lines at the checkpoints are looked at.
        """
        step = max(self.max_line // 2, 1)
        spans: list[tuple[int, int]] = []
        low = previous = 0  # where the line before the previous checkpoint's ended
        previous_end: re.Match[str] | None = None
        for checkpoint in range(0, len(text), step):
            end = _LINE_END.search(text, checkpoint)
            assert end is not None  # \Z always matches
            if previous_end is not None and previous_end.start() == end.start():
                if not spans or spans[-1][1] != end.start():
                    spans.append((_line_start(text, low, previous), end.start()))
            elif previous_end is not None:
                low = previous_end.end()
            previous, previous_end = checkpoint, end
        return [
            (start, end)
            for start, end in spans
            if len(_FOLD.sub("", text[start:end]).rstrip("\r")) > self.max_line
        ]

    @staticmethod
    def count(text: str) -> tuple[int, int]:
        """Count the components after the VCALENDAR and how deep they nest."""
        components, depth, deepest = 0, 1, 1  # in the VCALENDAR the text starts with
        for match in _BEGIN_OR_END.finditer(text):
            if match.group(1):
                components += 1
                depth += 1
                deepest = max(deepest, depth)
            else:
                depth = max(depth - 1, 0)
        return components, deepest

    def check_components(self, components: int, deepest: int) -> None:
        """Raise `ParseError` past ``max_components`` or the nesting depth."""
        if components > self.max_components:
            raise ParseError(
                f"the body holds {components:,} components, over the parser's "
                f"limit of {self.max_components:,} (parse_ics max_components, "
                "the Engine's parse_max_components)"
            )
        if deepest > MAX_DEPTH:
            raise ParseError(
                f"the body nests components {deepest:,} deep; calsync reads at "
                f"most {MAX_DEPTH} levels (VCALENDAR > VEVENT > VALARM is 3)"
            )


def _line_start(text: str, low: int, high: int) -> int:
    """Return where the logical line holding ``high`` starts, searching from ``low``."""
    start = low
    for match in _BREAK.finditer(text, low, high + 1):
        if match.end() <= high:
            start = match.end()
    return start
