"""The mass-deletion guard: a feed that suddenly drops most events is held back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import attrs

from calsync.core.model import ChangeSet, Occurrence

__all__ = ["Guarded", "guard_removals", "live_count"]


@attrs.frozen
class Guarded:
    """A ChangeSet after the guard: ``held`` removals kept back, and a fingerprint."""

    changes: ChangeSet
    held: int = 0
    fingerprint: str | None = None


def guard_removals(
    changes: ChangeSet,
    current: Iterable[Occurrence],
    *,
    minimum: int,
    fraction: float,
    previous_fingerprint: str | None,
    confirmed: bool = False,
    suspicious: bool = False,
) -> Guarded:
    """Hold back the removals of a sync that would remove too much of a calendar.

    Weighed are the removals of events the feed dropped (their UID is gone from
    ``current``, the feed's occurrences now); instances of an event the feed
    still has, re-keyed by a new zone or an edited rule, are applied. Too much:
    all of the calendar's live occurrences (`live_count`: stored and in the
    window, so nothing that slid out dilutes the count), or more than
    ``fraction`` of them and more than ``minimum``. Held removals are applied
    when the feed says the same again: the UIDs of ``current`` fingerprint what
    it said, so neither a new DTSTAMP nor the sliding window makes a repeat look
    new. ``confirmed`` applies them at once; ``suspicious`` (a truncated body)
    holds any removal, however few.
    """
    if not changes.removed or confirmed:
        return Guarded(changes)
    current = tuple(current)
    uids = {occurrence.key.uid for occurrence in current}
    dropped = tuple(o for o in changes.removed if o.key.uid not in uids)
    live = live_count(changes)
    everything = bool(dropped) and len(dropped) >= live
    too_many = len(dropped) > minimum and len(dropped) > live * fraction
    if not (everything or too_many or suspicious):
        return Guarded(changes)
    fingerprint = _fingerprint(current)
    if fingerprint == previous_fingerprint:
        return Guarded(changes)
    held = changes.removed if suspicious else dropped
    held_keys = {occurrence.key for occurrence in held}
    applied = tuple(o for o in changes.removed if o.key not in held_keys)
    return Guarded(attrs.evolve(changes, removed=applied), len(held), fingerprint)


def live_count(changes: ChangeSet) -> int:
    """How many stored occurrences were live and in the window before this sync.

    Those the feed kept (updated or unchanged) and those it dropped (removed);
    the ``expired`` ones slid out of the window and do not count.
    """
    return len(changes.removed) + len(changes.updated) + changes.unchanged


def _fingerprint(current: Iterable[Occurrence]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for uid in sorted({occurrence.key.uid for occurrence in current}):
        digest.update(uid.encode() + b"\x1e")
    return digest.hexdigest()
