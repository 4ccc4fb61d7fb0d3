"""Compare two expansions of one calendar: what was added, updated, removed, expired."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from calsync.core.model import ChangeSet, Occurrence, Window

__all__ = ["diff"]


def diff(
    previous: Iterable[Occurrence],
    current: Iterable[Occurrence],
    window: Window,
    *,
    unreadable: Collection[str] = frozenset(),
) -> ChangeSet:
    """Return the `ChangeSet` that turns ``previous`` into ``current``.

    An occurrence of ``previous`` missing from ``current`` that lies before the
    start of ``window`` is ``expired`` (it slid out of the window), never
    ``removed``. ``updated`` means same key, different content hash or alarms.
    Events whose UID is in ``unreadable`` (the feed carries them but they could
    not be read) keep their stored versions: none is removed or updated, and
    ``current``'s occurrences of them are ignored. An occurrence that is the
    very object of ``previous`` (a cached parse reuses them) is not compared.
    """
    previous, current = tuple(previous), tuple(current)
    # Both are alive here, so an id names one object: the shared ones are unchanged.
    shared = set() if unreadable else {id(o) for o in previous} & set(map(id, current))
    before = {o.key: o for o in previous if id(o) not in shared}
    added: list[Occurrence] = []
    updated: list[Occurrence] = []
    unchanged = len(shared)
    seen = set()
    for occurrence in current:
        if id(occurrence) in shared or occurrence.key.uid in unreadable:
            continue
        seen.add(occurrence.key)
        old = before.get(occurrence.key)
        if old is None:
            added.append(occurrence)
        elif _changed(old, occurrence):
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
        elif key.uid in unreadable:
            unchanged += 1
        else:
            removed.append(old)
    return ChangeSet(
        added=tuple(added),
        updated=tuple(updated),
        removed=tuple(removed),
        expired=tuple(expired),
        unchanged=unchanged,
    )


def _changed(old: Occurrence, new: Occurrence) -> bool:
    """Whether a user would see a difference: content, or the event's own alarms."""
    return old.content_hash != new.content_hash or old.alarms != new.alarms


def _slid_out(occurrence: Occurrence, window: Window) -> bool:
    return occurrence.start < window.start and not window.overlaps(
        occurrence.start, occurrence.end
    )
