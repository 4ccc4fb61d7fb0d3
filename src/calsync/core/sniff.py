"""What a body that should be iCalendar is instead; one judgement for all callers."""

from __future__ import annotations

__all__ = ["EMPTY", "OTHER_BLOCK", "SOMETHING_ELSE", "kind_of"]

_MARKER = "BEGIN:VCALENDAR"
EMPTY = "empty"
OTHER_BLOCK = "a vCard or other BEGIN: block"
SOMETHING_ELSE = "something else"


def kind_of(head: str) -> str | None:
    """Return None when ``head`` starts an iCalendar body, else what it looks like.

    ``head`` is the start of the body after any BOM and leading whitespace.
    """
    if head[: len(_MARKER)].upper() == _MARKER:
        return None
    if not head:
        return EMPTY
    if head.startswith("<"):
        return "an HTML or XML page"
    if head[0] in "{[":
        return "JSON"
    if head[:6].upper() == "BEGIN:":
        return OTHER_BLOCK
    return SOMETHING_ELSE
