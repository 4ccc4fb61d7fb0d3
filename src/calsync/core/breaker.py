"""Circuit breakers per calendar (a pure state machine the store persists) and per host.

closed ── N consecutive failures ──▶ open ── cool-down passed ──▶ half_open
   ▲                                  ▲                              │
   └──────────── probe succeeds ──────┼──────────────────────────────┤
                                      └──────── probe fails ─────────┘

Every transition takes the current `Circuit` (and `now` where time matters) and
returns the next one; nothing reads the clock.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

import attrs

from calsync.core.errors import ValidationError
from calsync.core.model import as_aware_utc, optional_aware_utc

__all__ = ["Circuit", "CircuitBreaker", "CircuitState", "HostCircuits"]


class CircuitState(enum.StrEnum):
    """Whether a calendar's feed is fetched normally, rested, or probed once."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


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


class HostCircuits:
    """One circuit per host, in memory: a host whose feeds all keep failing is rested.

    Every failed fetch that a host is to blame for (timeout, refused connection,
    5xx, 429) counts against its circuit; any other answer closes it. Once open,
    no calendar of the host is fetched until the cool-down has passed; then one
    fetch probes the host (half open) while the others wait, and a probe that
    never reports back frees the slot after ``probe_timeout``. Hosts are keyed by
    name without the port, as the per-host limits are. Per process: each worker
    learns about a failing host on its own.
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._circuits: dict[str, Circuit] = {}

    def __repr__(self) -> str:
        return f"HostCircuits(open={sorted(self._circuits)})"

    def admit(self, host: str, now: datetime) -> datetime | None:
        """Ask to fetch from *host* at *now*: None to go ahead, else when to retry.

        While the host is open nothing goes ahead; once its cool-down passed, the
        first caller becomes the probe and takes the slot (half open).
        """
        circuit = self._circuits.get(host)
        if circuit is None:
            return None
        admitted = self._breaker.admit(circuit, now)
        if admitted is None:
            return circuit.next_probe_at
        self._circuits[host] = admitted
        return None

    def record(self, host: str, now: datetime, *, failed: bool) -> Circuit:
        """Count a fetch's outcome against the host; return its circuit after it."""
        if not failed:
            self._circuits.pop(host, None)
            return Circuit()
        circuit = self._breaker.record_failure(self._circuits.get(host, Circuit()), now)
        self._circuits[host] = circuit
        return circuit

    def circuit(self, host: str) -> Circuit:
        """Return the host's circuit (closed if nothing failed lately)."""
        return self._circuits.get(host, Circuit())
