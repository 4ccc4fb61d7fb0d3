"""Shared test helpers: the ICS corpus and a tiny builder for hand-written feeds."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent / "corpus"


def ics(*events: str, header: str = "") -> str:
    """Wrap VEVENT bodies (property lines, without BEGIN/END) into a VCALENDAR."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calsync//tests//EN"]
    lines += [line.strip() for line in header.strip().splitlines() if line.strip()]
    for event in events:
        lines.append("BEGIN:VEVENT")
        lines += [line.strip() for line in event.strip().splitlines() if line.strip()]
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"the shared ICS corpus is missing at {CORPUS}")
    return CORPUS
