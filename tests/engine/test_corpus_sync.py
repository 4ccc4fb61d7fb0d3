"""The whole corpus through the Engine: every real-world feed syncs or fails
alone with a clear error, and what the store holds is exactly what the parser saw.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calsync import Engine, FileFetcher, ParseError, Store, Window, parse_ics
from calsync.engine import SyncOutcome
from calsync.testing import ManualClock

from .conftest import Recorder, settings

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
FILES = sorted(CORPUS.rglob("*.ics"))
NOW = datetime(2019, 6, 1, 8, 0, tzinfo=UTC)
PAST, HORIZON = timedelta(days=1), timedelta(days=90)


def _expected(path: Path, now: datetime) -> set[tuple[str, str, str]] | None:
    window = Window(now - PAST, now + HORIZON)
    try:
        parsed = parse_ics(path.read_bytes(), window, max_occurrences=20_000)
    except ParseError:
        return None
    return {
        (o.key.uid, o.key.recurrence_id, o.content_hash) for o in parsed.occurrences
    }


@pytest.mark.filterwarnings("ignore")
async def test_every_corpus_feed_syncs_or_fails_alone_and_is_stored_as_parsed(
    store: Store,
) -> None:
    assert len(FILES) > 250, f"expected the corpus at {CORPUS}"
    clock = ManualClock(NOW)
    config = settings(mass_deletion_min=10**6, mass_deletion_fraction=1.0)
    fetcher = FileFetcher(root=CORPUS)
    async with Engine(store, fetcher, settings=config, clock=clock) as engine:
        paths = {}
        for path in FILES:
            calendar = await engine.add_calendar(str(path), name=path.name)
            paths[calendar.id] = path
        for _ in range(2):  # the second day slides the window: a fresh parse
            cycle = await engine.sync_due()
            assert len(cycle.results) == len(FILES)
            for result in cycle.results:
                path = paths[result.calendar_id]
                expected = _expected(path, clock())
                if expected is None:
                    assert result.outcome is SyncOutcome.FAILED, path
                    assert result.error is not None
                    assert path.name in result.error
                    continue
                assert result.ok, (path, result.error)
                stored = await engine.store.list_occurrences(result.calendar_id)
                got = {(o.key.uid, o.key.recurrence_id, o.content_hash) for o in stored}
                assert got == expected, path
            await engine.check_notifications()
            await engine.dispatch_notifications(Recorder())
            clock.advance(timedelta(days=1))
            for calendar_id in paths:
                await engine.request_sync(calendar_id)
