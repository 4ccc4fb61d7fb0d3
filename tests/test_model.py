"""The value types of the pure core: Window, OccurrenceKey, Occurrence, ..."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

from calsync import Notification, Occurrence, Problem, ValidationError, Window
from calsync.core import OccurrenceKey

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
BERLIN_WINTER = timezone(timedelta(hours=1))


def occurrence(**overrides: object) -> Occurrence:
    fields: dict[str, object] = {
        "key": OccurrenceKey("standup"),
        "start": T0,
        "end": T0 + HOUR,
        "summary": "Standup",
        "location": "Room 1",
        "description": "Daily",
        "status": "CONFIRMED",
    }
    fields.update(overrides)
    return Occurrence(**fields)  # type: ignore[arg-type]


# Window


def test_window_rejects_naive_start() -> None:
    with pytest.raises(ValidationError, match="naive"):
        Window(datetime(2026, 3, 1), T0 + HOUR)  # noqa: DTZ001


def test_window_rejects_naive_end() -> None:
    with pytest.raises(ValidationError, match="naive"):
        Window(T0, datetime(2026, 3, 2))  # noqa: DTZ001


def test_window_rejects_end_equal_to_start() -> None:
    with pytest.raises(ValidationError, match="after its start"):
        Window(T0, T0)


def test_window_rejects_end_before_start() -> None:
    with pytest.raises(ValidationError, match="after its start"):
        Window(T0, T0 - HOUR)


def test_window_converts_aware_non_utc_times_to_utc() -> None:
    window = Window(
        datetime(2026, 3, 1, 10, 0, tzinfo=BERLIN_WINTER),
        datetime(2026, 3, 1, 12, 0, tzinfo=BERLIN_WINTER),
    )
    assert window.start == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert window.start.tzinfo is UTC
    assert window.end == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert window.end.tzinfo is UTC


def test_window_validation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="after its start"):
        Window(T0, T0)


def test_window_overlaps_occurrence_spanning_its_start() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert window.overlaps(T0 - HOUR, T0 + HOUR)


def test_window_overlaps_occurrence_spanning_its_end() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert window.overlaps(T0 + 3 * HOUR, T0 + 5 * HOUR)


def test_window_overlaps_occurrence_covering_it_entirely() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert window.overlaps(T0 - HOUR, T0 + 5 * HOUR)


def test_window_does_not_overlap_occurrence_ending_at_its_start() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert not window.overlaps(T0 - HOUR, T0)


def test_window_does_not_overlap_occurrence_starting_at_its_end() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert not window.overlaps(T0 + 4 * HOUR, T0 + 5 * HOUR)


def test_window_overlaps_zero_length_occurrence_at_its_start() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert window.overlaps(T0, T0)


def test_window_does_not_overlap_zero_length_occurrence_at_its_end() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert not window.overlaps(T0 + 4 * HOUR, T0 + 4 * HOUR)


def test_window_does_not_overlap_zero_length_occurrence_before_it() -> None:
    window = Window(T0, T0 + 4 * HOUR)
    assert not window.overlaps(T0 - HOUR, T0 - HOUR)


def test_window_around_spans_past_before_and_horizon_after_now() -> None:
    window = Window.around(T0, past=timedelta(days=1), horizon=timedelta(days=90))
    assert window == Window(T0 - timedelta(days=1), T0 + timedelta(days=90))


def test_window_around_converts_now_to_utc() -> None:
    now = datetime(2026, 3, 1, 10, 0, tzinfo=BERLIN_WINTER)
    window = Window.around(now, past=HOUR, horizon=HOUR)
    assert window.start == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_window_around_rejects_naive_now() -> None:
    with pytest.raises(ValidationError, match="naive"):
        Window.around(datetime(2026, 3, 1), past=HOUR, horizon=HOUR)  # noqa: DTZ001


# OccurrenceKey


def test_occurrence_key_of_non_recurring_event_prints_as_uid() -> None:
    assert str(OccurrenceKey("abc")) == "abc"


def test_occurrence_key_of_recurring_instance_prints_uid_at_recurrence_id() -> None:
    assert str(OccurrenceKey("abc", "20260301T090000Z")) == "abc@20260301T090000Z"


def test_occurrence_keys_order_by_uid_first() -> None:
    assert OccurrenceKey("a", "20260302T090000Z") < OccurrenceKey("b", "")


def test_occurrence_keys_of_one_uid_order_by_recurrence_id() -> None:
    keys = [
        OccurrenceKey("a", "20260302T090000Z"),
        OccurrenceKey("a", "20260301T090000Z"),
        OccurrenceKey("a"),
    ]
    assert sorted(keys) == [
        OccurrenceKey("a"),
        OccurrenceKey("a", "20260301T090000Z"),
        OccurrenceKey("a", "20260302T090000Z"),
    ]


def test_occurrence_keys_with_same_fields_are_equal_and_hash_alike() -> None:
    assert OccurrenceKey("a", "x") == OccurrenceKey("a", "x")
    assert len({OccurrenceKey("a", "x"), OccurrenceKey("a", "x")}) == 1


# Occurrence


def test_occurrence_rejects_naive_start() -> None:
    with pytest.raises(ValidationError, match="naive"):
        occurrence(start=datetime(2026, 3, 1, 9, 0))  # noqa: DTZ001


def test_occurrence_rejects_naive_end() -> None:
    with pytest.raises(ValidationError, match="naive"):
        occurrence(end=datetime(2026, 3, 1, 10, 0))  # noqa: DTZ001


def test_occurrence_rejects_end_before_start() -> None:
    with pytest.raises(ValidationError, match="ends"):
        occurrence(end=T0 - timedelta(minutes=1))


def test_occurrence_may_have_zero_length() -> None:
    assert occurrence(end=T0).duration == timedelta(0)


def test_occurrence_converts_aware_non_utc_times_to_utc() -> None:
    local = occurrence(
        start=datetime(2026, 3, 1, 10, 0, tzinfo=BERLIN_WINTER),
        end=datetime(2026, 3, 1, 11, 0, tzinfo=BERLIN_WINTER),
    )
    assert local.start == T0
    assert local.start.tzinfo is UTC
    assert local.end.tzinfo is UTC


def test_occurrence_duration_is_end_minus_start() -> None:
    assert occurrence(end=T0 + 90 * timedelta(minutes=1)).duration == timedelta(
        minutes=90
    )


def test_occurrence_converts_none_text_fields_to_empty_strings() -> None:
    bare = occurrence(summary=None, location=None, description=None, status=None)
    assert (bare.summary, bare.location, bare.description, bare.status) == (
        "",
        "",
        "",
        "",
    )


def test_content_hash_is_stable_for_equal_occurrences() -> None:
    assert occurrence().content_hash == occurrence().content_hash


def test_content_hash_is_the_same_for_the_same_instant_in_another_zone() -> None:
    local = occurrence(
        start=datetime(2026, 3, 1, 10, 0, tzinfo=BERLIN_WINTER),
        end=datetime(2026, 3, 1, 11, 0, tzinfo=BERLIN_WINTER),
    )
    assert local.content_hash == occurrence().content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"start": T0 - timedelta(minutes=30)},
        {"end": T0 + 2 * HOUR},
        {"all_day": True},
        {"summary": "Standup (moved)"},
        {"location": "Room 2"},
        {"description": "Weekly"},
        {"status": "CANCELLED"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_content_hash_changes_with_what_a_user_sees(change: dict[str, object]) -> None:
    assert occurrence(**change).content_hash != occurrence().content_hash


@pytest.mark.parametrize(
    "change",
    [
        {"sequence": 7},
        {"tzid": "Europe/Berlin"},
        {"alarms": (timedelta(minutes=15),)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_content_hash_ignores_bookkeeping(change: dict[str, object]) -> None:
    assert occurrence(**change).content_hash == occurrence().content_hash


def test_content_hash_does_not_confuse_adjacent_text_fields() -> None:
    shifted = occurrence(summary="Standup Room", location="1")
    assert shifted.content_hash != occurrence().content_hash


def test_occurrence_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        occurrence().summary = "changed"  # type: ignore[misc]


# Notification


def test_notification_fires_lead_before_start() -> None:
    notification = Notification(
        key=OccurrenceKey("standup"), lead=timedelta(minutes=10), start=T0
    )
    assert notification.fire_at == T0 - timedelta(minutes=10)


def test_notification_with_zero_lead_fires_at_start() -> None:
    notification = Notification(
        key=OccurrenceKey("standup"), lead=timedelta(0), start=T0
    )
    assert notification.fire_at == T0


def test_notification_rejects_negative_lead() -> None:
    with pytest.raises(ValidationError, match="lead"):
        Notification(key=OccurrenceKey("standup"), lead=timedelta(minutes=-1), start=T0)


def test_notification_rejects_naive_start() -> None:
    with pytest.raises(ValidationError, match="naive"):
        Notification(
            key=OccurrenceKey("standup"),
            lead=timedelta(minutes=10),
            start=datetime(2026, 3, 1, 9, 0),  # noqa: DTZ001
        )


def test_notification_identity_is_key_lead_and_start() -> None:
    key = OccurrenceKey("standup", "20260301T090000Z")
    notification = Notification(key=key, lead=timedelta(minutes=10), start=T0)
    assert notification.identity == (key, timedelta(minutes=10), T0)


def test_notification_start_is_stored_in_utc() -> None:
    notification = Notification(
        key=OccurrenceKey("standup"),
        lead=timedelta(minutes=10),
        start=datetime(2026, 3, 1, 10, 0, tzinfo=BERLIN_WINTER),
    )
    assert notification.start == T0
    assert notification.start.tzinfo is UTC
    assert notification.fire_at.tzinfo is UTC


def test_notifications_order_by_fire_at_first() -> None:
    later = Notification(key=OccurrenceKey("a"), lead=timedelta(0), start=T0)
    earlier = Notification(key=OccurrenceKey("z"), lead=HOUR, start=T0)
    assert sorted([later, earlier]) == [earlier, later]


# Problem


def test_problem_where_names_uid_and_line() -> None:
    problem = Problem(what="bad DTSTART", why="not a date", uid="abc", line=12)
    assert problem.where == "UID 'abc', line 12"


def test_problem_where_names_uid_alone() -> None:
    assert Problem(what="w", why="y", uid="abc").where == "UID 'abc'"


def test_problem_where_names_line_alone() -> None:
    assert Problem(what="w", why="y", line=3).where == "line 3"


def test_problem_where_falls_back_to_the_calendar() -> None:
    assert Problem(what="w", why="y").where == "calendar"


def test_problem_str_says_what_where_and_why() -> None:
    problem = Problem(what="bad DTSTART", why="not a date", uid="abc", line=12)
    assert str(problem) == "bad DTSTART (UID 'abc', line 12): not a date"


def test_values_survive_pickling_for_worker_processes() -> None:
    occurrence = Occurrence(
        OccurrenceKey("uid", "20260101T000000Z"),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 1, tzinfo=UTC),
        summary="Standup",
    )
    notification = Notification(
        key=occurrence.key, lead=timedelta(minutes=10), start=occurrence.start
    )
    for value in (occurrence, notification, Window(occurrence.start, occurrence.end)):
        assert pickle.loads(pickle.dumps(value)) == value
    assert (
        pickle.loads(pickle.dumps(occurrence)).content_hash == occurrence.content_hash
    )


def test_nul_characters_are_dropped_from_text_and_keys() -> None:
    occurrence = Occurrence(
        key=OccurrenceKey("a\x00b", "2026\x00"),
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=datetime(2026, 3, 1, 1, tzinfo=UTC),
        summary="Stand\x00-up",
    )
    assert occurrence.key == OccurrenceKey("ab", "2026")
    assert occurrence.summary == "Stand-up"
