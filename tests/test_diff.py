"""diff: what turns one expansion of a calendar into the next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from calsync import Occurrence, Window, diff
from calsync.core import ChangeSet, OccurrenceKey
from calsync.core.deletions import guard_removals

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOW = Window(T0, T0 + timedelta(days=7))


def occurrence(
    uid: str, start: datetime, *, length: timedelta = HOUR, summary: str = "Standup"
) -> Occurrence:
    return Occurrence(
        key=OccurrenceKey(uid), start=start, end=start + length, summary=summary
    )


def keys(occurrences: tuple[Occurrence, ...]) -> set[OccurrenceKey]:
    return {occurrence.key for occurrence in occurrences}


# Examples


def test_identical_expansions_give_an_empty_change_set() -> None:
    a = occurrence("a", T0 + HOUR)
    b = occurrence("b", T0 + 2 * HOUR)
    changes = diff([a, b], [a, b], WINDOW)
    assert changes == ChangeSet(unchanged=2)


def test_new_occurrence_is_added() -> None:
    a = occurrence("a", T0 + HOUR)
    b = occurrence("b", T0 + 2 * HOUR)
    changes = diff([a], [a, b], WINDOW)
    assert changes == ChangeSet(added=(b,), unchanged=1)


def test_occurrence_with_same_key_and_new_content_is_updated() -> None:
    old = occurrence("a", T0 + HOUR)
    new = occurrence("a", T0 + HOUR, summary="Standup (moved room)")
    changes = diff([old], [new], WINDOW)
    assert changes == ChangeSet(updated=(new,))


def test_updated_occurrence_keeps_its_key_and_has_a_different_hash() -> None:
    old = occurrence("a", T0 + HOUR)
    new = occurrence("a", T0 + 3 * HOUR)
    (updated,) = diff([old], [new], WINDOW).updated
    assert updated.key == old.key
    assert updated.content_hash != old.content_hash


def test_updated_holds_the_current_version() -> None:
    old = occurrence("a", T0 + HOUR)
    new = occurrence("a", T0 + 3 * HOUR)
    (updated,) = diff([old], [new], WINDOW).updated
    assert updated is new


def test_bookkeeping_change_alone_leaves_occurrence_unchanged() -> None:
    old = occurrence("a", T0 + HOUR)
    new = attrs.evolve(old, sequence=old.sequence + 1, tzid="Europe/Berlin")
    assert diff([old], [new], WINDOW) == ChangeSet(unchanged=1)


def test_missing_occurrence_inside_window_is_removed() -> None:
    a = occurrence("a", T0 + HOUR)
    gone = occurrence("gone", T0 + 2 * HOUR)
    changes = diff([a, gone], [a], WINDOW)
    assert changes == ChangeSet(removed=(gone,), unchanged=1)


def test_missing_occurrence_before_window_is_expired_not_removed() -> None:
    past = occurrence("past", T0 - 3 * HOUR)
    changes = diff([past], [], WINDOW)
    assert changes == ChangeSet(expired=(past,))


def test_missing_occurrence_ending_at_window_start_is_expired() -> None:
    past = occurrence("past", T0 - HOUR)
    changes = diff([past], [], WINDOW)
    assert changes == ChangeSet(expired=(past,))


def test_missing_occurrence_still_overlapping_window_start_is_removed() -> None:
    running = occurrence("running", T0 - HOUR, length=2 * HOUR)
    changes = diff([running], [], WINDOW)
    assert changes == ChangeSet(removed=(running,))


def test_missing_zero_length_occurrence_at_window_start_is_removed() -> None:
    instant = occurrence("instant", T0, length=timedelta(0))
    changes = diff([instant], [], WINDOW)
    assert changes == ChangeSet(removed=(instant,))


def test_missing_zero_length_occurrence_before_window_is_expired() -> None:
    instant = occurrence("instant", T0 - HOUR, length=timedelta(0))
    changes = diff([instant], [], WINDOW)
    assert changes == ChangeSet(expired=(instant,))


def test_counts_of_a_mixed_change() -> None:
    kept = occurrence("kept", T0 + HOUR)
    old_moved = occurrence("moved", T0 + 2 * HOUR)
    new_moved = occurrence("moved", T0 + 5 * HOUR)
    deleted = occurrence("deleted", T0 + 3 * HOUR)
    past = occurrence("past", T0 - timedelta(days=1))
    fresh = occurrence("fresh", T0 + timedelta(days=6))

    changes = diff([kept, old_moved, deleted, past], [kept, new_moved, fresh], WINDOW)

    assert (
        len(changes.added),
        len(changes.updated),
        len(changes.removed),
        len(changes.expired),
        changes.unchanged,
    ) == (1, 1, 1, 1, 1)
    assert changes.added == (fresh,)
    assert changes.updated == (new_moved,)
    assert changes.removed == (deleted,)
    assert changes.expired == (past,)


def test_diff_accepts_any_iterables() -> None:
    a = occurrence("a", T0 + HOUR)
    changes = diff(iter([a]), (o for o in [a]), WINDOW)
    assert changes == ChangeSet(unchanged=1)


def test_an_edited_alarm_is_an_update() -> None:
    old = attrs.evolve(occurrence("a", T0 + HOUR), alarms=(timedelta(minutes=30),))
    new = attrs.evolve(old, alarms=(timedelta(minutes=15),))
    assert diff([old], [new], WINDOW).updated == (new,)


def test_an_unreadable_event_is_neither_removed_nor_updated() -> None:
    stored = occurrence("broken", T0 + HOUR)
    garbled = occurrence("broken", T0 + 2 * HOUR, summary="half read")
    other = occurrence("other", T0 + HOUR)
    assert diff([stored, other], [other], WINDOW, unreadable={"broken"}) == (
        ChangeSet(unchanged=2)
    )
    assert diff([stored], [garbled], WINDOW, unreadable={"broken"}) == ChangeSet(
        unchanged=1
    )


def test_an_unreadable_event_that_slid_out_still_expires() -> None:
    past = occurrence("broken", T0 - timedelta(days=1))
    assert diff([past], [], WINDOW, unreadable={"broken"}).expired == (past,)


# ChangeSet.is_empty


def test_change_set_with_only_unchanged_occurrences_is_empty() -> None:
    assert ChangeSet(unchanged=3).is_empty


def test_change_set_with_an_added_occurrence_is_not_empty() -> None:
    assert not ChangeSet(added=(occurrence("a", T0),)).is_empty


def test_change_set_with_an_updated_occurrence_is_not_empty() -> None:
    assert not ChangeSet(updated=(occurrence("a", T0),)).is_empty


def test_change_set_with_a_removed_occurrence_is_not_empty() -> None:
    assert not ChangeSet(removed=(occurrence("a", T0),)).is_empty


def test_change_set_with_an_expired_occurrence_is_not_empty() -> None:
    assert not ChangeSet(expired=(occurrence("a", T0),)).is_empty


# Properties

UIDS = st.sampled_from([f"uid-{n}" for n in range(8)])
RECURRENCE_IDS = st.sampled_from(["", "20260301T090000Z", "20260302T090000Z"])
STARTS = st.integers(min_value=-3 * 24 * 60, max_value=10 * 24 * 60).map(
    lambda minutes: T0 + timedelta(minutes=minutes)
)
LENGTHS = st.integers(min_value=0, max_value=6 * 60).map(
    lambda minutes: timedelta(minutes=minutes)
)
SUMMARIES = st.sampled_from(["Standup", "Review", "Lunch", ""])


@st.composite
def occurrences_of(draw: st.DrawFn, key: OccurrenceKey) -> Occurrence:
    start = draw(STARTS)
    return Occurrence(
        key=key, start=start, end=start + draw(LENGTHS), summary=draw(SUMMARIES)
    )


@st.composite
def expansions(draw: st.DrawFn) -> tuple[Occurrence, ...]:
    """A small set of occurrences with unique keys."""
    chosen = draw(st.sets(st.builds(OccurrenceKey, UIDS, RECURRENCE_IDS), max_size=10))
    return tuple(draw(occurrences_of(key)) for key in sorted(chosen))


@st.composite
def windows(draw: st.DrawFn) -> Window:
    start = draw(STARTS)
    return Window(start, start + draw(LENGTHS) + timedelta(minutes=1))


@st.composite
def successive_expansions(
    draw: st.DrawFn,
) -> tuple[tuple[Occurrence, ...], tuple[Occurrence, ...]]:
    """Two expansions that share some keys, some of those with changed content."""
    previous = draw(expansions())
    kept = [o for o in previous if draw(st.booleans())]
    edited = [draw(occurrences_of(o.key)) if draw(st.booleans()) else o for o in kept]
    fresh = [o for o in draw(expansions()) if o.key not in keys(previous)]
    current = tuple(edited + fresh)
    return previous, tuple(draw(st.permutations(current)))


def apply(
    changes: ChangeSet, previous: tuple[Occurrence, ...]
) -> dict[OccurrenceKey, Occurrence]:
    state = {o.key: o for o in previous}
    for gone in changes.removed + changes.expired:
        del state[gone.key]
    for new in changes.added:
        assert new.key not in state
        state[new.key] = new
    for new in changes.updated:
        assert new.key in state
        state[new.key] = new
    return state


@settings(max_examples=200, deadline=None)
@given(expansion=expansions(), window=windows())
def test_diff_of_an_expansion_with_itself_is_empty(
    expansion: tuple[Occurrence, ...], window: Window
) -> None:
    changes = diff(expansion, expansion, window)
    assert changes.is_empty
    assert changes.unchanged == len(expansion)


@settings(max_examples=200, deadline=None)
@given(pair=successive_expansions(), window=windows())
def test_applying_the_change_set_to_previous_gives_current(
    pair: tuple[tuple[Occurrence, ...], tuple[Occurrence, ...]], window: Window
) -> None:
    previous, current = pair
    state = apply(diff(previous, current, window), previous)
    assert {key: o.content_hash for key, o in state.items()} == {
        o.key: o.content_hash for o in current
    }


@settings(max_examples=200, deadline=None)
@given(pair=successive_expansions(), window=windows())
def test_change_categories_are_pairwise_disjoint_by_key(
    pair: tuple[tuple[Occurrence, ...], tuple[Occurrence, ...]], window: Window
) -> None:
    changes = diff(*pair, window)
    categories = [
        changes.added,
        changes.updated,
        changes.removed,
        changes.expired,
    ]
    total = sum(len(category) for category in categories)
    assert len(set().union(*(keys(category) for category in categories))) == total


@settings(max_examples=200, deadline=None)
@given(pair=successive_expansions(), window=windows())
def test_added_updated_and_unchanged_account_for_every_current_occurrence(
    pair: tuple[tuple[Occurrence, ...], tuple[Occurrence, ...]], window: Window
) -> None:
    previous, current = pair
    changes = diff(previous, current, window)
    assert len(changes.added) + len(changes.updated) + changes.unchanged == len(current)


@settings(max_examples=200, deadline=None)
@given(pair=successive_expansions(), window=windows())
def test_removed_and_expired_account_for_every_vanished_occurrence(
    pair: tuple[tuple[Occurrence, ...], tuple[Occurrence, ...]], window: Window
) -> None:
    previous, current = pair
    changes = diff(previous, current, window)
    assert keys(changes.removed) | keys(changes.expired) == keys(previous) - keys(
        current
    )


@settings(max_examples=200, deadline=None)
@given(pair=successive_expansions(), window=windows())
def test_only_occurrences_wholly_before_the_window_expire(
    pair: tuple[tuple[Occurrence, ...], tuple[Occurrence, ...]], window: Window
) -> None:
    changes = diff(*pair, window)
    for expired in changes.expired:
        assert expired.start < window.start
        assert not window.overlaps(expired.start, expired.end)
    for removed in changes.removed:
        assert removed.start >= window.start or window.overlaps(
            removed.start, removed.end
        )


# The mass-deletion guard


def _guard(changes: ChangeSet) -> int:
    guarded = guard_removals(
        changes, [], minimum=20, fraction=0.5, previous_fingerprint=None
    )
    return guarded.held


def test_guard_weighs_removals_against_live_occurrences_only() -> None:
    upcoming = tuple(occurrence(f"up{n}", T0 + n * HOUR) for n in range(3))
    slid = tuple(occurrence(f"old{n}", T0 - timedelta(days=2)) for n in range(40))
    assert _guard(ChangeSet(removed=upcoming, expired=slid[:1])) == 3
    thirty = tuple(occurrence(f"up{n}", T0 + n * HOUR) for n in range(30))
    assert _guard(ChangeSet(removed=thirty, expired=slid)) == 30


def test_guard_lets_a_few_removals_among_many_live_ones_through() -> None:
    gone = tuple(occurrence(f"g{n}", T0 + HOUR) for n in range(3))
    assert _guard(ChangeSet(removed=gone, unchanged=10)) == 0


def test_guard_applies_rekeyed_instances_of_an_event_the_feed_still_has() -> None:
    old = tuple(
        Occurrence(key=OccurrenceKey("daily", f"2026030{n}T080000Z"), start=T0, end=T0)
        for n in range(3, 8)
    )
    new = tuple(
        attrs.evolve(o, key=OccurrenceKey("daily", o.key.recurrence_id + "x"))
        for o in old
    )
    guarded = guard_removals(
        ChangeSet(added=new, removed=old),
        new,
        minimum=20,
        fraction=0.5,
        previous_fingerprint=None,
    )
    assert (guarded.held, guarded.changes.removed) == (0, old)


def test_shared_objects_diff_as_their_copies_do() -> None:
    # A cached parse hands back the very objects of the last one: not compared.
    a = occurrence("a", T0 - 2 * HOUR)  # slid out
    b = occurrence("b", T0 + HOUR)
    c = occurrence("c", T0 + 2 * HOUR)
    d = occurrence("d", T0 + 3 * HOUR)
    previous = [a, b, c, d]
    current = [b, attrs.evolve(c, summary="moved"), occurrence("e", T0 + HOUR)]
    copies = [attrs.evolve(o) for o in previous]
    assert diff(previous, current, WINDOW) == diff(copies, current, WINDOW)
    changes = diff(previous, current, WINDOW)
    assert (len(changes.added), len(changes.updated), changes.unchanged) == (1, 1, 1)
    assert (changes.expired, changes.removed) == ((a,), (d,))
