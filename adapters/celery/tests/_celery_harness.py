"""The harness: real Celery workers and beat on a real broker, a store, feeds.

Workers and beat run as ``celery -A _celery_test_app`` processes, each in a
session of its own so a test can SIGKILL a whole node; every run has its own
queue, Redis key prefix and PostgreSQL schema, so runs never see each other.
The feed server runs in the test's event loop: tests wait by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from aiohttp import web

import calsync

HERE = Path(__file__).resolve().parent
POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL")
BROKERS = {
    "redis": os.environ.get("CALSYNC_TEST_REDIS_URL"),
    "amqp": os.environ.get("CALSYNC_TEST_AMQP_URL"),
}
VARIABLES = {"redis": "CALSYNC_TEST_REDIS_URL", "amqp": "CALSYNC_TEST_AMQP_URL"}
LEAD = timedelta(minutes=5)
# Real seconds any machine, however busy, needs for what a test waits for: a wait
# fails only when the awaited never happens, never because the machine is slow.
# Two minutes: worker and beat processes start and connect to a broker first.
SAFETY = 120.0

needs_postgres = pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL to test against",
)


def _broker_param(name: str) -> Any:
    return pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(
            BROKERS[name] is None,
            reason=f"{VARIABLES[name]} is not set: no {name} broker to test against",
        ),
    )


BROKER_PARAMS = [_broker_param("redis"), _broker_param("amqp")]


def feed(*events: tuple[str, datetime, str]) -> str:
    """An iCalendar feed of (uid, start, summary) events, 30 minutes each."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calsync//celery tests//EN"]
    for uid, start, summary in events:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
            "DURATION:PT30M",
            f"SUMMARY:{summary}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def soon(minutes: float = 4) -> datetime:
    """A whole second ``minutes`` from now: with a 5 minute lead, already due."""
    instant = datetime.now(UTC) + timedelta(minutes=minutes)
    return instant.replace(microsecond=0)


def expected_id(calendar: calsync.Calendar, uid: str, start: datetime) -> str:
    """The id of the reminder of a one-off event: the handler's idempotency key."""
    notification = calsync.Notification(
        key=calsync.core.OccurrenceKey(uid), lead=LEAD, start=start
    )
    return calsync.stores.notification_id(calendar.id, notification)


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, within: float = SAFETY, what: str
) -> None:
    """Poll ``condition`` every 0.25 s until it holds; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.25)


# -- feeds ---------------------------------------------------------------------


class Feeds:
    """An aiohttp feed server on 127.0.0.1 that counts arrivals and can stall.

    A path put on `hold` answers nothing until `release`: a fetch of it is under
    way for as long as the test wants, however slow the machine.
    """

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        self.arrived: Counter[str] = Counter()
        self.port = 0
        self._held: dict[str, asyncio.Event] = {}
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hold(self, path: str) -> None:
        """Keep requests for ``path`` waiting until `release`."""
        self._held[path] = asyncio.Event()

    def release(self, path: str) -> None:
        """Answer the held requests for ``path``, and later ones at once."""
        held = self._held.pop(path, None)
        if held is not None:
            held.set()

    async def _answer(self, request: web.Request) -> web.Response:
        self.arrived[request.path] += 1
        held = self._held.get(request.path)
        if held is not None:
            await held.wait()
        body = self.bodies.get(request.path)
        if body is None:
            return web.Response(status=404)
        return web.Response(text=body, content_type="text/calendar")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for path in list(self._held):
            self.release(path)
        if self._runner is not None:
            await self._runner.cleanup()


# -- the store -----------------------------------------------------------------


class Store:
    """The test's view of the PostgreSQL store the workers share."""

    def __init__(self, engine: calsync.Engine, schema: str) -> None:
        self.engine = engine
        self.schema = schema

    async def deliveries(self) -> Counter[str]:
        """How often the handler was called, per notification id."""
        assert POSTGRES_URL is not None
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as connection:
            cursor = await connection.execute(
                f'SELECT id FROM "{self.schema}".deliveries'
            )
            return Counter(row[0] for row in await cursor.fetchall())

    async def loops_by_process(self) -> dict[int, set[int]]:
        """The event loops each worker process delivered on."""
        assert POSTGRES_URL is not None
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as connection:
            cursor = await connection.execute(
                f'SELECT pid, loop FROM "{self.schema}".deliveries'
            )
            loops: dict[int, set[int]] = {}
            for pid, loop in await cursor.fetchall():
                loops.setdefault(pid, set()).add(loop)
            return loops

    async def delivered_ids(self) -> set[str]:
        """The ids the store records as delivered."""
        records = await self.engine.store.list_notifications(
            status=calsync.stores.NotificationStatus.DELIVERED, limit=10_000
        )
        return {record.id for record in records}

    async def synced(self, calendar_ids: list[str]) -> int:
        """How many of these calendars have a successful sync recorded."""
        calendars = {c.id: c for c in await self.engine.list_calendars()}
        return sum(calendars[i].state.last_success_at is not None for i in calendar_ids)


# -- a way to PostgreSQL that a test opens late ---------------------------------


class LatePostgres:
    """A TCP proxy to PostgreSQL on a port reserved now, listening only once opened.

    Until `open`, connections to ``url`` are refused: the database is down.
    """

    def __init__(self) -> None:
        assert POSTGRES_URL is not None
        target = psycopg.conninfo.conninfo_to_dict(POSTGRES_URL)
        self._target = (
            str(target.get("host", "127.0.0.1")),
            int(target.get("port", 5432)),
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = psycopg.conninfo.make_conninfo(
            POSTGRES_URL, host="127.0.0.1", port=self.port
        )
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        sink.close()


# -- the cluster ---------------------------------------------------------------


class Cluster:
    """Celery worker nodes and a beat, as processes in sessions of their own."""

    def __init__(self, broker: str, url: str, schema: str, folder: Path) -> None:
        self.broker = broker
        self.url = url
        run = uuid.uuid4().hex[:8]
        self.marker = f"calsync-celery-test-{run}"
        self.queue = self.marker
        self.folder = folder
        self.trace = folder / "trace.jsonl"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(HERE), os.environ.get("PYTHONPATH", "")]
            ),
            "CALSYNC_CELERY_BROKER": url,
            "CALSYNC_CELERY_QUEUE": self.queue,
            "CALSYNC_CELERY_PREFIX": f"{self.marker}:",
            "CALSYNC_CELERY_SCHEMA": schema,
            "CALSYNC_CELERY_TRACE": str(self.trace),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, *arguments: str) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "_celery_test_app", *arguments],
            cwd=HERE,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start_worker(self, name: str, pool: str = "prefork") -> None:
        concurrency = ["--concurrency", "2"] if pool != "solo" else []
        self._start(
            name,
            "worker",
            "--pool",
            pool,
            *concurrency,
            "-n",
            f"{name}-{self.marker}@%h",
            "-Q",
            self.queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
        )

    def start_beat(self) -> None:
        schedule = self.folder / "beat-schedule"
        self._start(
            "beat", "beat", "-s", str(schedule), "--loglevel", "INFO", "--pidfile="
        )

    def send(self, task: str) -> None:
        """Send one task to the cluster's queue, as beat or a host app would."""
        from celery import Celery

        app = Celery("calsync_celery_test_sender", broker=self.url)
        app.conf.update(
            task_default_queue=self.queue,
            broker_transport_options=_transport(self.marker),
        )
        with app:
            app.send_task(task)

    def engines_made(self) -> list[int]:
        """The pid of the process each time the app's engine_factory ran."""
        made = Path(f"{self.trace}.engines")
        return [int(pid) for pid in made.read_text().split()] if made.exists() else []

    def traced(self) -> list[dict[str, Any]]:
        """Every task start so far: pid, node, task, args, kwargs."""
        if not self.trace.exists():
            return []
        lines = self.trace.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def runs_of(self, task: str) -> list[dict[str, Any]]:
        """Every start of ``task`` so far (retries and redeliveries included)."""
        return [t for t in self.traced() if t["task"] == task]

    async def more_beats(self, beats: int = 2) -> None:
        """Wait for ``beats`` more ``sync_due`` runs (beat sends one every 2 s).

        What happens after a delivery has had those cycles to happen: a test
        waits for them, not for a while, before it counts duplicates.
        """
        seen = len(self.runs_of("calsync.sync_due"))

        async def ran() -> bool:
            return len(self.runs_of("calsync.sync_due")) >= seen + beats

        await eventually(ran, what=f"{beats} more sync_due runs")

    def node_of(self, hostname: str) -> str:
        """The worker name (as started) of a node's hostname."""
        return hostname.split("@")[0].removesuffix(f"-{self.marker}")

    def kill(self, name: str) -> None:
        """SIGKILL a whole node (its main process and its pool)."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)

    def stop(self) -> None:
        """TERM every process group, then KILL what is left after a few seconds."""
        for process in self.processes.values():
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            _signal_group(process.pid, signal.SIGKILL)  # the pool children too
            process.wait(5)

    def logs(self) -> str:
        parts = []
        for name in self.processes:
            text = (self.folder / f"{name}.log").read_text(errors="replace")
            parts.append(
                f"--- {name} (last 40 lines)\n" + "\n".join(text.splitlines()[-40:])
            )
        return "\n".join(parts)

    def purge(self) -> None:
        """Drop the run's queue (RabbitMQ), or every key of its prefix (Redis)."""
        from kombu import Connection

        with Connection(self.url, transport_options=_transport(self.marker)) as conn:
            channel = conn.default_channel
            try:
                channel.queue_purge(self.queue)
                if self.broker == "amqp":
                    channel.queue_delete(self.queue)
            except conn.channel_errors:
                pass  # RabbitMQ: the queue was never declared
        if self.broker == "redis":
            import redis

            with redis.Redis.from_url(self.url) as client:
                for key in client.scan_iter(f"{self.marker}:*"):
                    client.delete(key)


def _transport(marker: str) -> dict[str, str]:
    return {"global_keyprefix": f"{marker}:"}


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
