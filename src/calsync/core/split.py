"""Split a feed body into its calendar properties and top-level blocks, unparsed.

The split works on the text alone, so that a parse can read the blocks a few
at a time, and a cache can tell which blocks changed before icalendar reads any
of them. It accepts only bodies whose
structure icalendar reads the same way block by block as in one go: one
VCALENDAR, BEGIN and END lines in plain form that pair up, no VEVENT or
VTIMEZONE nested in another component. For any other body it returns ``None``
and the caller parses the whole body instead.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["Layout", "split_calendar", "wrapped"]

# A BEGIN or END line as icalendar reads it: the name may be any case, spread
# over folds and padded with blanks (dotless i, U+0131, upper-cases to "I"). Only
# the plain form
# "BEGIN:NAME" on a line of its own, not folded on, is understood here.
_LINE = (
    r"(?:(BEGIN|END):([A-Za-z0-9-]+)(?=\r?\n(?!(?:\r?\n)*[ \t])|\Z)"
    r"|[^\S\n]*(?:[Bb]\s*[Ee]\s*[Gg]\s*[Ii\u0131]\s*[Nn]|[Ee]\s*[Nn]\s*[Dd])\s*[:;])"
)
_FIRST_LINE = re.compile(_LINE)
_NEXT_LINE = re.compile("\n" + _LINE)
_BLANK = re.compile(r"(?:\r?\n)*")
# Components a whole parse finds at any depth, but the split only at the top.
_TOP_ONLY = frozenset({"VEVENT", "VTIMEZONE"})


@attrs.frozen
class Layout:
    """A body cut into the texts icalendar would read, in the body's order.

    ``header`` is the VCALENDAR with its own properties only; the other fields
    hold whole top-level components, from their BEGIN line to their END line.
    """

    header: str
    events: list[str]
    timezones: list[str]
    others: list[str]
    components: int = 0  # BEGIN lines after the calendar's own
    depth: int = 1  # of the deepest component, the VCALENDAR being 1


def split_calendar(text: str) -> Layout | None:
    """Cut a body into header and top-level blocks; ``None`` if not plainly built."""
    first = _FIRST_LINE.match(text) or _NEXT_LINE.search(text)
    if first is None or first.group(1, 2) != ("BEGIN", "VCALENDAR"):
        return None
    if _BLANK.fullmatch(text, 0, first.start(1)) is None:
        return None  # icalendar refuses lines outside the VCALENDAR
    layout = Layout("", [], [], [])
    kinds = {"VEVENT": layout.events, "VTIMEZONE": layout.timezones}
    header: list[str] = []
    stack: list[str] = []
    components = depth = 0
    mark = block_start = first.end(2)
    for line in _NEXT_LINE.finditer(text, mark):
        keyword, name = line.group(1, 2)
        if keyword is None:
            return None  # a BEGIN or END line in a form not understood here
        name = name.upper()
        if keyword == "BEGIN":
            if name == "VCALENDAR" or (stack and name in _TOP_ONLY):
                return None  # a second calendar, or an event or zone nested deeper
            if not stack:
                start = line.start(1)
                if start - mark > 2:  # more than the line break after the last block
                    header.append(text[mark:start])
                block_start = start
            stack.append(name)
            components += 1
            depth = max(depth, len(stack))
        elif stack:
            if stack.pop() != name:
                return None
            if not stack:
                mark = line.end(2)
                kinds.get(name, layout.others).append(text[block_start:mark])
        elif name != "VCALENDAR" or _BLANK.fullmatch(text, line.end(2)) is None:
            return None  # END of nothing, or lines after the calendar
        else:
            header.append(text[mark : line.start(1)])
            return attrs.evolve(
                layout,
                header=wrapped(header),
                components=components,
                depth=depth + 1,
            )
    return None


def wrapped(blocks: list[str]) -> str:
    """Return blocks (or header lines) as the body of one VCALENDAR."""
    return "BEGIN:VCALENDAR\r\n" + "\r\n".join(blocks) + "\r\nEND:VCALENDAR\r\n"
