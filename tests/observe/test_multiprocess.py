"""Celery-style workers in multiprocess mode: one scrape adds up every process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from calsync import Engine, SQLiteStore, Settings
    from calsync.observe import Metrics

    async def main() -> None:
        store = SQLiteStore(sys.argv[1])
        async with Engine(store, settings=Settings(worker=sys.argv[2])) as engine:
            Metrics(engine, registry=None)
            await engine.check_notifications()

    asyncio.run(main())
    """
)

SCRAPER = textwrap.dedent(
    """
    import asyncio, sys
    from calsync import Engine, SQLiteStore, Settings
    from calsync.observe import Metrics

    async def main() -> None:
        store = SQLiteStore(sys.argv[1])
        async with Engine(store, settings=Settings(worker="scraper")) as engine:
            body, _ = await Metrics(engine, registry=None).exposition()
            sys.stdout.write(body.decode())

    asyncio.run(main())
    """
)


def run(script: str, *args: str, directory: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_scrape_adds_up_the_runs_of_every_worker_process(tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    database = str(tmp_path / "calsync.db")
    run(WORKER, database, "worker-1", directory=shared)
    run(WORKER, database, "worker-2", directory=shared)

    text = run(SCRAPER, database, directory=shared)

    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    runs = frozenset({("job_name", "check_notifications"), ("outcome", "ok")})
    assert samples[("calsync_job_runs_total", runs)] == 2
    assert samples[("calsync_feeds", frozenset({("state", "ok")}))] == 0
    assert samples[("calsync_store_up", frozenset())] == 1
