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

import bisect
import re
from datetime import UTC, datetime, timedelta

import attrs
from icalendar.parser.content_line import UFOLD

from calsync.core.ics import uid_lines
from calsync.core.vtimezone import read_components
from calsync.core.zones import is_iana

__all__ = ["Layout", "blank_far_events", "split_calendar", "wrapped"]

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
    # Where each of ``events`` starts and ends in the body.
    event_spans: list[tuple[int, int]] = attrs.field(factory=list)


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
                if name == "VEVENT":
                    layout.event_spans.append((block_start, mark))
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


# --- events the text alone places far from a window -----------------------

# Every instant icalendar and calsync read from a DTSTART or DTEND lies within a
# day of its wall-clock time read as UTC: zoneinfo and the feed's VTIMEZONEs
# (icalendar refuses offsets of 24 hours) never stray further. The expander
# looks a day beyond the window; three days of slack keep well clear of both.
_SLACK = timedelta(days=3)
_YEARS = range(2, 9998)  # far from datetime's bounds, where placing overflows
# The forms of DTSTART and DTEND read here; any other form is not read.
_TIME_LINE = re.compile(
    r"(DTSTART|DTEND)(;VALUE=DATE|;TZID=[A-Za-z][A-Za-z0-9_+/-]*)?:"
    r"([0-9]{8})(?:T([0-9]{6})Z?)?"
)
# Names that make an event recurring, or that this reading does not place.
_UNPLACED = frozenset({"RRULE", "RDATE", "RECURRENCE-ID", "DURATION"})
_DELIMITER = re.compile("[:;]")
_BLANKS = re.compile("[ \t]+")
# A line break not followed by a fold or a line with a plain name.
_ODD_LINE = re.compile(r"\n(?![ \t]|[A-Z0-9-]+[:;])")
_FOLD = re.compile(r"\r?\n[ \t]")
# The lines of a plain block read here, with their folds.
_READ_LINE = re.compile(
    r"^(RRULE|RDATE|RECURRENCE-ID|DURATION|UID|DTSTART|DTEND|BEGIN|END)[:;]"
    r"[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*",
    re.MULTILINE,
)
# A content line as icalendar splits unfolded text (it skips empty ones).
_CONTENT_LINE = re.compile(r"(?:[^\r\n]|\r(?!\n))+")


# What an event block's text tells: its UID (None: not for sure) and the span
# of its wall times (None: the text does not place it).
_Reading = tuple[str | None, tuple[datetime, datetime] | None]
_Line = tuple[str | None, str, int, int]  # name, unfolded line, where in the text


def blank_far_events(
    text: str, layout: Layout, start: datetime, end: datetime
) -> str | None:
    """Blank out the events far outside ``start``-``end``, if the text proves it.

    A UID group is blanked out only when every one of its events, read from the
    text alone, is a single event (no RRULE, RDATE, RECURRENCE-ID) whose DTSTART
    and DTEND lie more than `_SLACK` outside the window, in a form icalendar
    reads the same way, whose UID is stated plainly and whose nested components
    icalendar reads: the expander would drop such a group unexpanded. Every
    other event's UID must be plain too (a group is only known whole then).
    The blocks become line breaks, so line numbers stay. None: nothing to blank.
    """
    low = start.astimezone(UTC).replace(tzinfo=None) - _SLACK
    high = end.astimezone(UTC).replace(tzinfo=None) + _SLACK
    readable: dict[str, bool] = {}
    uids: list[str] = []
    far: dict[str, bool] = {}
    for block in layout.events:
        uid, span = _read_plainly(block, readable)
        if uid is None:
            return None
        outside = span is not None and (span[1] < low or span[0] > high)
        far[uid] = far.get(uid, True) and outside
        uids.append(uid)
    blanked = [far[uid] for uid in uids]
    if not any(blanked) or _numbers_kept(text, layout, blanked, far):
        return None
    pieces = []
    mark = 0
    for blank, block, (block_start, block_end) in zip(
        blanked, layout.events, layout.event_spans, strict=True
    ):
        if blank:
            pieces += [text[mark:block_start], "\n" * block.count("\n")]
            mark = block_end
    pieces.append(text[mark:])
    return "".join(pieces)


def _numbers_kept(
    text: str, layout: Layout, blanked: list[bool], far: dict[str, bool]
) -> bool:
    """Whether a blanked event holds a line that numbers a kept event's problems."""
    starts = [block_start for block_start, _ in layout.event_spans]
    for position, uid in uid_lines(text):
        if far.get(uid, True):
            continue  # not the UID of a kept event
        block = bisect.bisect_right(starts, position) - 1
        if block >= 0 and position < layout.event_spans[block][1] and blanked[block]:
            return True
    return False


def _read_plainly(block: str, readable: dict[str, bool]) -> _Reading:
    """Read an event block's UID and span from its text, as icalendar would.

    A plainly written block is read from the lines that matter alone.
    """
    lines = _plain_lines(block)
    if lines is None:
        unfolded = UFOLD.sub("", block)
        return _reading(unfolded, _all_lines(unfolded), readable)
    return _reading(block, lines, readable)


def _reading(source: str, lines: list[_Line], readable: dict[str, bool]) -> _Reading:
    """Read the UID and span from a block's lines (``source``: their text).

    A nested component must be one icalendar reads, else it would refuse the
    whole block; the event itself tolerates broken lines.
    """
    uids: list[str | None] = []
    times: dict[str, datetime | None] = {}
    placed = True
    depth = nested = 0
    for name, line, start, end in lines:
        if name in ("BEGIN", "END"):  # the split made sure of their form
            depth += 1 if name == "BEGIN" else -1
            if depth == 2 and name == "BEGIN":
                nested = start
            elif depth == 1 and name == "END" and placed:
                placed = _reads(source[nested:end], readable)
        elif depth != 1:
            continue
        elif name == "UID":
            uids.append(_plain_value(line))
        elif name in _UNPLACED or name in times:
            placed = False
        elif name in ("DTSTART", "DTEND"):
            times[name] = _wall(line)
    uid = uids[0] if len(uids) == 1 else None
    values = [moment for moment in times.values() if moment is not None]
    if not placed or "DTSTART" not in times or len(values) != len(times):
        return uid, None
    return uid, (min(values), max(values))


def _plain_lines(block: str) -> list[_Line] | None:
    """Return the lines of a plainly written block whose names matter here.

    Plain: every line's name is written as icalendar reads it (upper case, no
    blanks), no blank lines and no lone carriage returns, so that unfolding is
    dropping line breaks before a blank. None: the block is not plain.
    """
    if _ODD_LINE.search(block) is not None or block.count("\r") != block.count("\r\n"):
        return None
    return [
        (match.group(1), _unfolded(match.group(0)), match.start(), match.end())
        for match in _READ_LINE.finditer(block)
    ]


def _unfolded(line: str) -> str:
    return _FOLD.sub("", line) if "\n" in line else line


def _all_lines(text: str) -> list[_Line]:
    """Return every content line of unfolded text, named as icalendar names it."""
    return [
        (_name(match.group(0)), match.group(0), match.start(), match.end())
        for match in _CONTENT_LINE.finditer(text)
    ]


def _name(line: str) -> str | None:
    """Return a content line's name as icalendar reads it (None: not a property).

    A name holding a quote or backslash is not a valid one (icalendar skips the
    line), and none of the names read here.
    """
    cut = _DELIMITER.search(line)
    if cut is None:
        return None
    return _BLANKS.sub("", line[: cut.start()].strip()).upper()


def _plain_value(line: str) -> str | None:
    """Return the UID of a plain ``UID:value`` line, as icalendar reads it."""
    if not line.startswith("UID:") or "\\" in line:
        return None
    return line[4:].strip() or None


def _wall(line: str) -> datetime | None:
    """Return the wall time of a plain DTSTART or DTEND line, else None."""
    match = _TIME_LINE.fullmatch(line)
    if match is None:
        return None
    _, param, day, clock = match.groups()
    if param == ";VALUE=DATE" and clock:
        return None  # icalendar reads no time in a DATE
    if param is not None and param.startswith(";TZID=") and not is_iana(param[6:]):
        return None  # another zone might not place it, or refuse it
    clock = clock or "000000"
    try:
        moment = datetime(  # noqa: DTZ001 (a wall time)
            int(day[:4]),
            int(day[4:6]),
            int(day[6:]),
            int(clock[:2]),
            int(clock[2:4]),
            int(clock[4:]),
        )
    except ValueError:
        return None
    return moment if moment.year in _YEARS else None


def _reads(text: str, readable: dict[str, bool]) -> bool:
    """Whether icalendar reads a nested component's text without refusing it."""
    known = readable.get(text)
    if known is None:
        try:
            known = len(read_components(text)) == 1
        except Exception:
            known = False
        readable[text] = known
    return known
