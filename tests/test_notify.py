"""The reminder rules: due when start - lead <= now < start + grace; missed; leads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calsync import Notification, Occurrence, ValidationError
from calsync import notifications_due as due
from calsync.core import OccurrenceKey
from calsync.core.model import EventStatus
from calsync.core.notify import leads_for, missed, next_fire_after

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TEN_MINUTES = timedelta(minutes=10)
SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)

Triple = tuple[OccurrenceKey, timedelta, datetime]


def occurrence(
    uid: str = "standup", start: datetime = START, status: str = "CONFIRMED"
) -> Occurrence:
    return Occurrence(
        key=OccurrenceKey(uid),
        start=start,
        end=start + timedelta(minutes=30),
        summary="Standup",
        status=status,
    )


# The due rule, at its edges


def test_not_due_just_before_fire_at() -> None:
    now = START - TEN_MINUTES - MICROSECOND
    assert due([occurrence()], leads=[TEN_MINUTES], now=now) == []


def test_due_exactly_at_fire_at() -> None:
    now = START - TEN_MINUTES
    assert due([occurrence()], leads=[TEN_MINUTES], now=now) == [
        Notification(key=OccurrenceKey("standup"), lead=TEN_MINUTES, start=START)
    ]


def test_due_between_fire_at_and_start() -> None:
    now = START - MICROSECOND
    assert len(due([occurrence()], leads=[TEN_MINUTES], now=now)) == 1


def test_not_due_exactly_at_start_without_grace() -> None:
    assert due([occurrence()], leads=[TEN_MINUTES], now=START) == []


def test_due_just_before_end_of_grace() -> None:
    grace = timedelta(minutes=5)
    now = START + grace - MICROSECOND
    assert len(due([occurrence()], leads=[TEN_MINUTES], now=now, late_grace=grace)) == 1


def test_not_due_exactly_at_end_of_grace() -> None:
    grace = timedelta(minutes=5)
    now = START + grace
    assert due([occurrence()], leads=[TEN_MINUTES], now=now, late_grace=grace) == []


def test_zero_lead_without_grace_is_never_due() -> None:
    for now in (START - SECOND, START, START + SECOND):
        assert due([occurrence()], leads=[timedelta(0)], now=now) == []


def test_zero_lead_with_grace_is_due_from_the_start() -> None:
    notifications = due(
        [occurrence()], leads=[timedelta(0)], now=START, late_grace=SECOND
    )
    assert [n.fire_at for n in notifications] == [START]


def test_already_started_event_gets_no_notification_without_grace() -> None:
    now = START + timedelta(minutes=2)
    assert due([occurrence()], leads=[TEN_MINUTES], now=now) == []


def test_already_started_event_gets_a_late_notification_within_grace() -> None:
    now = START + timedelta(minutes=2)
    notifications = due(
        [occurrence()], leads=[TEN_MINUTES], now=now, late_grace=timedelta(minutes=5)
    )
    assert [n.identity for n in notifications] == [
        (OccurrenceKey("standup"), TEN_MINUTES, START)
    ]


def test_now_in_another_zone_is_read_as_its_instant() -> None:
    berlin = timezone(timedelta(hours=1))
    now = datetime(2026, 3, 1, 9, 50, tzinfo=berlin)  # 08:50 UTC
    assert len(due([occurrence()], leads=[TEN_MINUTES], now=now)) == 1


# What is returned


def test_several_leads_give_one_notification_each() -> None:
    leads = [timedelta(hours=1), TEN_MINUTES, timedelta(minutes=5)]
    notifications = due([occurrence()], leads=leads, now=START - MICROSECOND)
    assert sorted(n.lead for n in notifications) == sorted(leads)


def test_only_leads_whose_fire_at_has_passed_are_due() -> None:
    leads = [timedelta(hours=1), TEN_MINUTES, timedelta(minutes=5)]
    now = START - TEN_MINUTES
    notifications = due([occurrence()], leads=leads, now=now)
    assert sorted(n.lead for n in notifications) == [TEN_MINUTES, timedelta(hours=1)]


def test_a_repeated_lead_gives_one_notification() -> None:
    notifications = due(
        [occurrence()], leads=[TEN_MINUTES, TEN_MINUTES], now=START - SECOND
    )
    assert len(notifications) == 1


def test_cancelled_occurrence_gets_no_notification() -> None:
    cancelled = occurrence(status="CANCELLED")
    assert due([cancelled], leads=[TEN_MINUTES], now=START - SECOND) == []


def test_cancelled_status_is_matched_case_insensitively() -> None:
    cancelled = occurrence(status="cancelled")
    assert due([cancelled], leads=[TEN_MINUTES], now=START - SECOND) == []


def test_tentative_occurrence_gets_a_notification() -> None:
    tentative = occurrence(status="TENTATIVE")
    assert len(due([tentative], leads=[TEN_MINUTES], now=START - SECOND)) == 1


def test_no_leads_give_no_notifications() -> None:
    assert due([occurrence()], leads=[], now=START - SECOND) == []


def test_results_are_sorted_by_fire_at() -> None:
    occurrences = [
        occurrence("late", START + timedelta(minutes=20)),
        occurrence("early", START),
        occurrence("middle", START + timedelta(minutes=10)),
    ]
    leads = [timedelta(minutes=30), timedelta(hours=1)]
    notifications = due(occurrences, leads=leads, now=START - SECOND)
    fire_times = [n.fire_at for n in notifications]
    assert len(notifications) == 6
    assert fire_times == sorted(fire_times)


def test_leads_may_be_any_iterable() -> None:
    notifications = due([occurrence()], leads=iter([TEN_MINUTES]), now=START - SECOND)
    assert len(notifications) == 1


# Invalid input


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValidationError, match="naive"):
        due(
            [occurrence()],
            leads=[TEN_MINUTES],
            now=datetime(2026, 3, 1, 8, 55),  # noqa: DTZ001
        )


def test_negative_lead_is_rejected() -> None:
    with pytest.raises(ValidationError, match="lead"):
        due([occurrence()], leads=[timedelta(minutes=-1)], now=START)


def test_negative_grace_is_rejected() -> None:
    with pytest.raises(ValidationError, match="late_grace"):
        due(
            [occurrence()],
            leads=[TEN_MINUTES],
            now=START,
            late_grace=timedelta(minutes=-1),
        )


def test_bare_timedelta_as_leads_is_rejected() -> None:
    with pytest.raises(ValidationError, match="collection"):
        due([occurrence()], leads=TEN_MINUTES, now=START)  # type: ignore[arg-type]


def test_non_timedelta_lead_is_rejected() -> None:
    with pytest.raises(ValidationError, match="lead"):
        due([occurrence()], leads=[600], now=START)  # type: ignore[list-item]


def test_non_timedelta_lead_among_timedeltas_is_rejected() -> None:
    with pytest.raises(ValidationError, match="lead"):
        due(
            [occurrence()],
            leads=[TEN_MINUTES, 600],  # type: ignore[list-item]
            now=START,
        )


def test_non_timedelta_grace_is_rejected() -> None:
    with pytest.raises(ValidationError, match="late_grace"):
        due(
            [occurrence()],
            leads=[TEN_MINUTES],
            now=START,
            late_grace=60,  # type: ignore[arg-type]
        )


# Exactly once across any sequence of checks

MINUTES = st.integers(min_value=-3 * 60, max_value=3 * 60)
LEADS = st.lists(
    st.integers(min_value=0, max_value=120).map(lambda m: timedelta(minutes=m)),
    max_size=4,
)
GRACES = st.integers(min_value=0, max_value=60).map(lambda m: timedelta(minutes=m))
SECONDS = st.integers(min_value=-5 * 3600, max_value=5 * 3600)


@st.composite
def occurrence_sets(draw: st.DrawFn) -> list[Occurrence]:
    """Up to six occurrences with unique keys, some of them cancelled."""
    uids = draw(st.sets(st.sampled_from("abcdefgh"), max_size=6))
    return [
        occurrence(
            uid,
            START + timedelta(minutes=draw(MINUTES)),
            status=draw(st.sampled_from(["CONFIRMED", "TENTATIVE", "CANCELLED"])),
        )
        for uid in sorted(uids)
    ]


@st.composite
def check_times(draw: st.DrawFn) -> list[datetime]:
    """An increasing sequence of `now` values, as successive checks would see."""
    offsets = draw(st.lists(SECONDS, min_size=1, max_size=12, unique=True))
    return [START + timedelta(seconds=s) for s in sorted(offsets)]


def windows_hit(
    occurrences: list[Occurrence],
    leads: list[timedelta],
    grace: timedelta,
    nows: list[datetime],
) -> set[Triple]:
    """Every (key, lead, start) whose [fire_at, start + grace) contains a `now`."""
    return {
        (o.key, lead, o.start)
        for o in occurrences
        if o.status != "CANCELLED"
        for lead in leads
        if any(o.start - lead <= now < o.start + grace for now in nows)
    }


@settings(max_examples=200, deadline=None)
@given(
    occurrences=occurrence_sets(),
    leads=LEADS,
    grace=GRACES,
    nows=check_times(),
)
def test_every_notification_is_created_exactly_once_across_checks(
    occurrences: list[Occurrence],
    leads: list[timedelta],
    grace: timedelta,
    nows: list[datetime],
) -> None:
    created: list[Triple] = []
    for now in nows:
        already = set(created)
        for notification in due(occurrences, leads=leads, now=now, late_grace=grace):
            if notification.identity not in already:
                created.append(notification.identity)

    assert len(created) == len(set(created)), "a notification was created twice"
    assert set(created) == windows_hit(occurrences, leads, grace, nows)


@settings(max_examples=200, deadline=None)
@given(
    occurrences=occurrence_sets(),
    leads=LEADS,
    grace=GRACES,
    now=SECONDS.map(lambda s: START + timedelta(seconds=s)),
)
def test_a_single_check_returns_each_triple_at_most_once_in_fire_at_order(
    occurrences: list[Occurrence],
    leads: list[timedelta],
    grace: timedelta,
    now: datetime,
) -> None:
    notifications = due(occurrences, leads=leads, now=now, late_grace=grace)
    identities = [n.identity for n in notifications]
    assert len(identities) == len(set(identities))
    assert [n.fire_at for n in notifications] == sorted(
        n.fire_at for n in notifications
    )
    assert set(identities) == windows_hit(occurrences, leads, grace, [now])


# The other pure rules: leads with VALARMs, missed reminders, cancellation


@attrs.frozen
class Leads:
    leads: tuple[timedelta, ...]
    use_alarms: bool = False


def test_leads_are_the_calendars_unless_alarms_are_used() -> None:
    with_alarm = attrs.evolve(occurrence(), alarms=(timedelta(hours=1),))
    plain = Leads((TEN_MINUTES,))
    assert leads_for(plain, with_alarm, timedelta(days=1)) == (TEN_MINUTES,)
    alarms = Leads((TEN_MINUTES,), use_alarms=True)
    assert leads_for(alarms, with_alarm, timedelta(days=1)) == (
        TEN_MINUTES,
        timedelta(hours=1),
    )
    assert leads_for(alarms, with_alarm, timedelta(minutes=59)) == (TEN_MINUTES,)


def test_missed_reminders_are_those_whose_whole_span_lay_between_checks() -> None:
    grace = timedelta(minutes=5)
    leads = (TEN_MINUTES, timedelta(hours=2))
    previous = START - timedelta(hours=1)
    after_grace = START + grace
    assert missed(occurrence(), leads, previous, after_grace, grace) == [
        Notification(key=OccurrenceKey("standup"), lead=TEN_MINUTES, start=START)
    ]
    assert missed(occurrence(), leads, previous, after_grace - SECOND, grace) == []
    cancelled = occurrence(status="cancelled")
    assert missed(cancelled, leads, previous, after_grace, grace) == []


@pytest.mark.parametrize(
    ("status", "cancelled"),
    [("CANCELLED", True), ("Cancelled", True), ("TENTATIVE", False), ("", False)],
)
def test_an_occurrence_is_cancelled_by_its_status_in_any_case(
    status: str, cancelled: bool
) -> None:
    assert occurrence(status=status).cancelled is cancelled
    assert (
        next_fire_after(
            occurrence(status=status), [TEN_MINUTES], START - 2 * TEN_MINUTES
        )
        is None
    ) is cancelled
    assert EventStatus.CANCELLED == "CANCELLED"
