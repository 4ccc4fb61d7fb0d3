"""Compare two expansions of one calendar: what was added, updated, removed, expired."""

from __future__ import annotations

from collections.abc import Iterable

from ._model import ChangeSet, Occurrence, Window

__all__ = ["diff"]


def diff(
    previous: Iterable[Occurrence], current: Iterable[Occurrence], window: Window
) -> ChangeSet:
    """Return the `ChangeSet` that turns ``previous`` into ``current``.

    An occurrence of ``previous`` missing from ``current`` that lies before the
    start of ``window`` is ``expired`` (it slid out of the window), never
    ``removed``. ``updated`` means same key, different content hash.
    """
    before = {occurrence.key: occurrence for occurrence in previous}
    added: list[Occurrence] = []
    updated: list[Occurrence] = []
    unchanged = 0
    seen = set()
    for occurrence in current:
        seen.add(occurrence.key)
        old = before.get(occurrence.key)
        if old is None:
            added.append(occurrence)
        elif old.content_hash != occurrence.content_hash:
            updated.append(occurrence)
        else:
            unchanged += 1
    removed: list[Occurrence] = []
    expired: list[Occurrence] = []
    for key, old in before.items():
        if key in seen:
            continue
        if _slid_out(old, window):
            expired.append(old)
        else:
            removed.append(old)
    return ChangeSet(
        added=tuple(added),
        updated=tuple(updated),
        removed=tuple(removed),
        expired=tuple(expired),
        unchanged=unchanged,
    )


def _slid_out(occurrence: Occurrence, window: Window) -> bool:
    return occurrence.start < window.start and not window.overlaps(
        occurrence.start, occurrence.end
    )
