"""A circuit breaker per calendar, as a pure state machine the store can persist.

closed ── N consecutive failures ──▶ open ── cool-down passed ──▶ half_open
   ▲                                  ▲                              │
   └──────────── probe succeeds ──────┼──────────────────────────────┤
                                      └──────── probe fails ─────────┘

Every transition takes the current `Circuit` (and `now` where time matters) and
returns the next one; nothing reads the clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from calsync._errors import ValidationError
from calsync._model import as_aware_utc, optional_aware_utc
from calsync._records import CircuitState

__all__ = ["Circuit", "CircuitBreaker"]


@attrs.frozen
class Circuit:
    """A calendar's circuit in plain values, as `SyncState` stores them.

    `state` and `consecutive_failures` map to the fields of the same names on
    `SyncState`; `next_probe_at` to its ``next_sync_at`` while the circuit is
    not closed. It is when an open circuit lets one probe through, or, while
    half open, when a probe that never reported back stops holding the slot.
    """

    state: CircuitState = attrs.field(
        default=CircuitState.CLOSED, converter=CircuitState
    )
    consecutive_failures: int = attrs.field(default=0)
    next_probe_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )

    def __attrs_post_init__(self) -> None:
        if isinstance(self.consecutive_failures, bool) or self.consecutive_failures < 0:
            raise ValidationError("consecutive_failures must be an integer >= 0")
        closed = self.state is CircuitState.CLOSED
        if closed and self.next_probe_at is not None:
            raise ValidationError("a closed circuit has no next_probe_at")
        if not closed and self.next_probe_at is None:
            raise ValidationError(f"a {self.state} circuit needs next_probe_at")


@attrs.frozen
class CircuitBreaker:
    """Stop syncing a calendar that keeps failing; after a cool-down, try one probe.

    Opens after `failure_threshold` consecutive failures. Once `cool_down` has
    passed, `admit` lets exactly one attempt through (half open); its success
    closes the circuit, its failure opens it for another cool-down. A probe
    that does not report back within `probe_timeout` frees the slot for another.
    """

    failure_threshold: int = attrs.field(default=5)
    cool_down: timedelta = attrs.field(default=timedelta(hours=1))
    probe_timeout: timedelta = attrs.field(default=timedelta(minutes=10))

    def __attrs_post_init__(self) -> None:
        if isinstance(self.failure_threshold, bool) or self.failure_threshold < 1:
            raise ValidationError("failure_threshold must be an integer >= 1")
        if self.cool_down <= timedelta(0) or self.probe_timeout <= timedelta(0):
            raise ValidationError("cool_down and probe_timeout must be positive")

    def admit(self, circuit: Circuit, now: datetime) -> Circuit | None:
        """Return the circuit to store before an attempt at *now*; None refuses it."""
        now = as_aware_utc(now)
        if circuit.state is CircuitState.CLOSED:
            return circuit
        if circuit.next_probe_at is not None and now < circuit.next_probe_at:
            return None
        return attrs.evolve(
            circuit,
            state=CircuitState.HALF_OPEN,
            next_probe_at=now + self.probe_timeout,
        )

    def record_success(self, circuit: Circuit) -> Circuit:
        """Close the circuit after a successful sync; the failure count resets."""
        return Circuit()

    def record_failure(self, circuit: Circuit, now: datetime) -> Circuit:
        """Count a failed sync; open at the threshold, or again after a failed probe."""
        failures = circuit.consecutive_failures + 1
        if circuit.state is CircuitState.CLOSED and failures < self.failure_threshold:
            return Circuit(CircuitState.CLOSED, failures)
        return Circuit(CircuitState.OPEN, failures, as_aware_utc(now) + self.cool_down)
