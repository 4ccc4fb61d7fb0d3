"""Shared by the benchmarks: A/B order that alternates, min/median/max, tables.

Not a benchmark itself (``nox -s bench`` runs ``bench_*.py`` only).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence


def alternating(names: Sequence[str], runs: int) -> Iterator[tuple[int, list[str]]]:
    """Yield each run's number and the names in its order: A B, then B A, ...

    Each run starts one name further along, so every name goes first as often
    as the others and machine noise (warm caches, load) hits them alike.
    """
    for run in range(runs):
        shift = run % len(names)
        yield run, [*names[shift:], *names[:shift]]


class Samples:
    """Measurements by name, several runs each."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def ratio(self, name: str, base: str) -> float:
        """The median of ``name`` over the median of ``base``."""
        return self.median(name) / self.median(base)

    def paired(self, name: str, base: str) -> list[float]:
        """Each run's ratio ``name`` / ``base`` (the runs were interleaved)."""
        return [
            a / b for a, b in zip(self.values[name], self.values[base], strict=True)
        ]

    def spread(self, name: str, scale: float = 1.0, digits: int = 3) -> str:
        return spread(self.values[name], scale, digits)


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """Return ``min / median / max`` of ``values`` times ``scale``."""
    low, middle, high = min(values), statistics.median(values), max(values)
    return " / ".join(number(v * scale, digits) for v in (low, middle, high))


def number(value: float, digits: int = 3) -> str:
    """Return ``value`` with ``digits`` significant digits, whole numbers in full."""
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table: the first column left-aligned, the others right."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [
        max(len(header[i]), *(len(row[i]) for row in cells)) for i in range(len(header))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    print(line(header))
    print(
        "| "
        + " | ".join(
            ["-" * widths[0], *("-" * (width - 1) + ":" for width in widths[1:])]
        )
        + " |"
    )
    for row in cells:
        print(line(row))


def service_url(variable: str, given: str | None, what: str) -> str | None:
    """Return the URL of a service to measure, or None after saying why not."""
    url = given or os.environ.get(variable)
    if not url:
        print(f"skipped {what}: {variable} is not set (nor given)", flush=True)
    return url or None
