"""The circuit breaker: a pure state machine driven by plain values and given times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from calsync import ValidationError
from calsync.core import Circuit, CircuitBreaker, CircuitState
from calsync.core.breaker import HostCircuits
from calsync.stores import SyncState

NOW = datetime(2026, 3, 26, 8, 0, tzinfo=UTC)
BREAKER = CircuitBreaker(
    failure_threshold=3,
    cool_down=timedelta(hours=1),
    probe_timeout=timedelta(minutes=5),
)


def failed(times: int, at: datetime = NOW) -> Circuit:
    circuit = Circuit()
    for _ in range(times):
        circuit = BREAKER.record_failure(circuit, at)
    return circuit


def test_a_new_circuit_is_closed_and_admits() -> None:
    assert BREAKER.admit(Circuit(), NOW) == Circuit()


def test_failures_below_the_threshold_keep_it_closed() -> None:
    circuit = failed(2)
    assert circuit == Circuit(CircuitState.CLOSED, 2)
    assert BREAKER.admit(circuit, NOW) is circuit


def test_the_threshold_failure_opens_it_for_the_cool_down() -> None:
    assert failed(3) == Circuit(CircuitState.OPEN, 3, NOW + timedelta(hours=1))


def test_an_open_circuit_refuses_before_the_cool_down_ends() -> None:
    assert BREAKER.admit(failed(3), NOW + timedelta(minutes=59)) is None


def test_after_the_cool_down_one_probe_is_admitted_half_open() -> None:
    later = NOW + timedelta(hours=1)
    probe = BREAKER.admit(failed(3), later)
    assert probe == Circuit(CircuitState.HALF_OPEN, 3, later + timedelta(minutes=5))


def test_a_second_attempt_during_the_probe_is_refused() -> None:
    later = NOW + timedelta(hours=1)
    probe = BREAKER.admit(failed(3), later)
    assert probe is not None
    assert BREAKER.admit(probe, later + timedelta(minutes=1)) is None


def test_a_probe_that_never_reports_back_frees_the_slot() -> None:
    later = NOW + timedelta(hours=1)
    probe = BREAKER.admit(failed(3), later)
    assert probe is not None
    assert BREAKER.admit(probe, later + timedelta(minutes=5)) is not None


def test_a_successful_probe_closes_the_circuit() -> None:
    probe = BREAKER.admit(failed(3), NOW + timedelta(hours=1))
    assert probe is not None
    assert BREAKER.record_success(probe) == Circuit()


def test_a_failed_probe_opens_it_for_another_cool_down() -> None:
    later = NOW + timedelta(hours=1)
    probe = BREAKER.admit(failed(3), later)
    assert probe is not None
    assert BREAKER.record_failure(probe, later) == Circuit(
        CircuitState.OPEN, 4, later + timedelta(hours=1)
    )


def test_success_resets_the_failure_count_of_a_closed_circuit() -> None:
    assert BREAKER.record_success(failed(2)) == Circuit()


def test_a_circuit_round_trips_through_sync_state_fields() -> None:
    circuit = failed(3)
    stored = SyncState(
        consecutive_failures=circuit.consecutive_failures,
        circuit=circuit.state,
        next_sync_at=circuit.next_probe_at,
    )
    restored = Circuit(stored.circuit, stored.consecutive_failures, stored.next_sync_at)
    assert restored == circuit


def test_a_circuit_is_plain_values() -> None:
    values = attrs.asdict(failed(3))
    assert values == {
        "state": "open",
        "consecutive_failures": 3,
        "next_probe_at": NOW + timedelta(hours=1),
    }
    assert Circuit(**values) == failed(3)


@pytest.mark.parametrize(
    "values",
    [
        {"state": "open"},
        {"state": "closed", "next_probe_at": NOW},
        {"state": "ajar", "next_probe_at": NOW},
        {"consecutive_failures": -1},
    ],
)
def test_impossible_circuits_are_refused(values: dict[str, object]) -> None:
    with pytest.raises((ValidationError, ValueError)):
        Circuit(**values)  # type: ignore[arg-type]


def test_a_breaker_needs_a_threshold_of_at_least_one() -> None:
    with pytest.raises(ValidationError):
        CircuitBreaker(failure_threshold=0)


# HostCircuits: the same machine, one circuit per host, in memory


def test_a_host_opens_after_the_threshold_and_others_stay_closed() -> None:
    hosts = HostCircuits(BREAKER)
    for _ in range(3):
        assert hosts.admit("down.example", NOW) is None
        hosts.record("down.example", NOW, failed=True)
    assert hosts.admit("down.example", NOW) == NOW + timedelta(hours=1)
    assert hosts.admit("up.example", NOW) is None


def test_a_rested_host_admits_one_probe_and_a_lost_probe_frees_the_slot() -> None:
    hosts = HostCircuits(BREAKER)
    for _ in range(3):
        hosts.record("down.example", NOW, failed=True)
    later = NOW + timedelta(hours=1)
    assert hosts.admit("down.example", later) is None  # the probe
    assert hosts.admit("down.example", later) == later + timedelta(minutes=5)
    assert hosts.admit("down.example", later + timedelta(minutes=5)) is None


def test_a_successful_probe_closes_the_host_and_a_failed_one_rests_it_again() -> None:
    hosts = HostCircuits(BREAKER)
    for _ in range(3):
        hosts.record("a.example", NOW, failed=True)
        hosts.record("b.example", NOW, failed=True)
    later = NOW + timedelta(hours=1)
    assert hosts.admit("a.example", later) is None
    assert hosts.record("a.example", later, failed=False) == Circuit()
    assert hosts.admit("a.example", later) is None
    assert hosts.admit("b.example", later) is None
    failed_probe = hosts.record("b.example", later, failed=True)
    assert failed_probe.state is CircuitState.OPEN
    assert hosts.admit("b.example", later) == later + timedelta(hours=1)
