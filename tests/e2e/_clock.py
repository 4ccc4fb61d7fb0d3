"""A virtual clock shared by the test and its runner processes through one file.

The file holds the instant as POSIX seconds. The test writes it (`set`, `advance`,
atomically); a runner child reads it as its Engine's clock and sleeps on it
(``Runner(..., sleep=clock.sleep, monotonic=clock.monotonic)``), so the children's
time stands still until the test moves it, however slow the machine is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

# How often a sleeping child looks at the file: real time, costs nothing else.
_POLL = 0.01


class FileClock:
    """The instant in ``path``: call it for the time, `sleep` on it, move it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __call__(self) -> datetime:
        """The instant the file holds, aware and in UTC."""
        return datetime.fromtimestamp(self.monotonic(), UTC)

    @property
    def now(self) -> datetime:
        return self()

    def monotonic(self) -> float:
        """The instant in POSIX seconds (the runner's watchdog measures with it)."""
        return float(self.path.read_text())

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Return once the file's instant is ``seconds`` past the one at the call."""
        return self._sleep_until(self.monotonic() + seconds)

    async def _sleep_until(self, until: float) -> None:
        await asyncio.sleep(0)
        while self.monotonic() < until:
            await asyncio.sleep(_POLL)

    def set(self, instant: datetime) -> datetime:
        """Write ``instant`` (aware) to the file, atomically; it is the time now."""
        if instant.tzinfo is None:
            raise ValueError(f"the shared clock takes aware instants, got {instant!r}")
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.write_text(repr(instant.timestamp()))
        os.replace(temporary, self.path)
        return self()

    def advance(self, by: timedelta) -> datetime:
        """Move the instant forward by ``by``."""
        if by < timedelta(0):
            raise ValueError(f"the shared clock only moves forward, got {by!r}")
        return self.set(self() + by)
