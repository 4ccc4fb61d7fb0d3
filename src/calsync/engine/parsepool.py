"""Isolated parse workers: a parse past its limit is killed and its memory returned.

A `ParsePool` runs `parse_ics` in a few worker processes forked lazily from a
zygote (a small process with calsync imported, so a worker starts in
milliseconds). Each worker
has a pipe of its own, a memory ceiling (``RLIMIT_AS``) and the `ParseCache`s
of the calendars it parsed last; a calendar goes to the same worker whenever it
is free. A parse that outlives its time limit, hits the memory ceiling or kills
its worker ends that worker: it is killed, reaped, and replaced on next use, so
there are never more parses alive than workers. The pool keeps the
last result of each calendar, so a worker sends only the UID groups that
changed since the result it last sent (see "sending only what changed").
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ctypes
import logging
import math
import operator
import os
import pickle
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import typing
import weakref
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, tzinfo
from multiprocessing.connection import Connection
from typing import Any

import attrs

from calsync.core.errors import CalsyncError
from calsync.core.incremental import ParseCache
from calsync.core.limits import Limits
from calsync.core.model import Occurrence, OccurrenceKey, ParsedCalendar, Window
from calsync.core.parse import parse_ics

__all__ = [
    "ParseCrashed",
    "ParseOutOfMemory",
    "ParsePool",
    "ParsePoolStats",
    "ParseStopped",
    "ParseTimedOut",
]

logger = logging.getLogger("calsync.parsepool")

_PROTOCOL = 5
CACHE_BYTES = 192 * 2**20
"""The default budget of a pool's caches and kept results, bytes (estimated)."""
_LIMITS = Limits()
_JOIN_SECONDS = 5.0


class ParseStopped(Exception):
    """A parse did not finish in its worker; the worker was ended and reaped."""


class ParseTimedOut(ParseStopped):
    """The parse ran past its time limit."""


class ParseOutOfMemory(ParseStopped):
    """The parse needed more memory than a worker may use."""


class ParseCrashed(ParseStopped):
    """The worker died mid-parse, or the parse raised an unexpected error.

    ``detail`` says which (killed by a signal, the system's OOM killer, ...).
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@attrs.frozen
class ParsePoolStats:
    """What a pool did so far, for metrics and tests.

    ``warm`` counts parses that found their calendar's `ParseCache` in the worker,
    ``partial`` those answered with only the UID groups that changed, and
    ``occurrences_sent`` the occurrences that crossed from the workers.
    ``evicted`` counts caches the workers dropped to stay within their bytes.
    """

    started: int = 0
    stopped: int = 0
    parses: int = 0
    warm: int = 0
    partial: int = 0
    occurrences_sent: int = 0
    evicted: int = 0


class _Worker:
    """One worker process (a child of the zygote) and our end of its socket."""

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self._pidfd = _pidfd(pid)
        self._ending = threading.Lock()

    def ask(self, request: bytes, body: bytes) -> bytes:
        """Send one parse and wait for its reply; EOFError if the worker died."""
        self.conn.send_bytes(request)
        self.conn.send_bytes(body)
        return self.conn.recv_bytes()

    def alive(self) -> bool:
        """Whether the process still runs."""
        return not _exited(self.pid, self._pidfd, 0)

    def kill(self) -> None:
        """Send SIGKILL (no-op once ended)."""
        if not self.conn.closed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def end(self) -> None:
        """Kill the process, wait until it is gone (reaped) and close the socket."""
        with self._ending:
            if self.conn.closed:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            if not _exited(self.pid, self._pidfd, _JOIN_SECONDS):
                logger.error("parse worker %d did not end after SIGKILL", self.pid)
            self.conn.close()
            if self._pidfd is not None:
                os.close(self._pidfd)


class ParsePool:
    """At most ``workers`` parse processes, each under ``memory_limit`` bytes.

    At most ``cache_size`` calendars' `ParseCache`s are kept across the workers
    (0: none), and the last result of calendars parsed with one in this process
    (a worker then sends only what changed), together within ``cache_bytes``
    (estimated; least recently parsed dropped first): a third for the results,
    unless ``result_bytes`` says otherwise, the rest shared by the workers.
    Safe to share between event loops; `close` ends every worker.
    """

    def __init__(
        self,
        *,
        workers: int,
        memory_limit: int | None,
        cache_size: int,
        cache_bytes: int = CACHE_BYTES,
        result_bytes: int | None = None,
    ) -> None:
        self._size = workers
        self._memory_limit = memory_limit
        self._cache_size = math.ceil(cache_size / workers) if cache_size else 0
        if result_bytes is None:
            result_bytes = cache_bytes // 3
        self._budget = cache_bytes if cache_size else 0
        self._worker_bytes = max(0, cache_bytes - result_bytes) // workers
        self._results = _Results(result_bytes if cache_size else 0)
        self._held = [(0, 0)] * workers  # each worker's caches: bytes, calendars
        self._workers: list[_Worker | None] = [None] * workers
        self._idle = set(range(workers))
        self._guard = threading.Lock()
        self._closed = False
        self._stats = ParsePoolStats()
        self._slots: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._finalizer = weakref.finalize(self, _end_all, self._workers)

    def __repr__(self) -> str:
        return f"<ParsePool of {self._size} workers, {len(self.pids())} running>"

    def prepare(self) -> None:
        """Get ready to start workers (in the background): call it when opening."""
        _ZYGOTE.start_soon()

    @property
    def stats(self) -> ParsePoolStats:
        """Counts of workers started and stopped, parses and warm parses."""
        return self._stats

    @property
    def results_size(self) -> int:
        """Estimated bytes of the last results kept to rebuild the next ones."""
        return self._results.size

    @property
    def cache_bytes(self) -> int:
        """Estimated bytes held: the workers' caches (as last told) and the results."""
        return sum(size for size, _ in self._held) + self._results.size

    @property
    def cache_budget(self) -> int:
        """The bytes `cache_bytes` stays within (0: nothing is kept)."""
        return self._budget

    @property
    def cached_calendars(self) -> int:
        """How many calendars' `ParseCache`s the workers hold (as last told)."""
        return sum(count for _, count in self._held)

    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        with self._guard:
            workers = [worker for worker in self._workers if worker is not None]
        return [worker.pid for worker in workers]

    async def parse(
        self,
        calendar_id: str,
        body: bytes,
        window: Window,
        *,
        default_tz: str,
        max_occurrences: int,
        timeout: float,
        limits: Limits = _LIMITS,
    ) -> ParsedCalendar:
        """Parse ``body`` in a worker, with the calendar's cache if it has one there.

        Raises what `parse_ics` raises on purpose (`ParseError`, ...), or a
        `ParseStopped` after ending the worker.
        """
        base = self._results.get(calendar_id)
        self._results.put(calendar_id, None)  # kept again once the answer is in
        parse = (
            calendar_id,
            window,
            default_tz,
            max_occurrences,
            self._cache_size,
            self._worker_bytes,
            limits,
        )
        try:
            result = await self._parse(parse, base, body, timeout)
        except _Mismatch:
            logger.error("a parse worker answered for another result; asking again")
            result = await self._parse(parse, None, body, timeout)
        self._results.put(calendar_id, result)
        return result.parsed

    async def _parse(
        self, parse: tuple[Any, ...], base: _Result | None, body: bytes, timeout: float
    ) -> _Result:
        """Ask a worker for a parse; the answer builds on ``base`` if it can."""
        token = None if base is None else base.token
        request = pickle.dumps((token, *parse), protocol=_PROTOCOL)
        async with self._slot(parse[0]) as index:
            worker = await self._worker(index)
            reply = await self._ask(index, worker, request, body, timeout)
            if reply[0] in ("ok", "error"):
                self._held[index] = reply[3][:2]
        return self._answer(reply, base)

    @contextlib.asynccontextmanager
    async def _slot(self, calendar_id: str) -> AsyncIterator[int]:
        """Hold a free worker slot, the calendar's own if it is free."""
        if self._closed:
            raise RuntimeError("the parse pool is closed")
        loop = asyncio.get_running_loop()
        limit = self._slots.get(loop)
        if limit is None:
            limit = self._slots[loop] = asyncio.Semaphore(self._size)
        async with limit:
            preferred = zlib.crc32(calendar_id.encode()) % self._size
            # Only an Engine shared by two loops at once can find none free here.
            while (index := self._take(preferred)) is None:
                await asyncio.sleep(0.05)
            try:
                yield index
            finally:
                with self._guard:
                    self._idle.add(index)

    def _take(self, preferred: int) -> int | None:
        with self._guard:
            if not self._idle:
                return None
            index = preferred if preferred in self._idle else min(self._idle)
            self._idle.discard(index)
            return index

    async def _worker(self, index: int) -> _Worker:
        worker = self._workers[index]
        if worker is not None and worker.alive():
            return worker
        if worker is not None:  # died while idle (the system's OOM killer, say)
            await self._end(index, worker)
        return await asyncio.to_thread(self._start, index)

    def _start(self, index: int) -> _Worker:
        worker = _ZYGOTE.spawn(self._memory_limit)
        with self._guard:
            if self._closed:
                worker.end()
                raise RuntimeError("the parse pool is closed")
            self._workers[index] = worker
            self._stats = attrs.evolve(self._stats, started=self._stats.started + 1)
        return worker

    async def _ask(
        self, index: int, worker: _Worker, request: bytes, body: bytes, timeout: float
    ) -> tuple[Any, ...]:
        asking = asyncio.ensure_future(asyncio.to_thread(worker.ask, request, body))
        try:
            done, _ = await asyncio.wait({asking}, timeout=timeout)
        except asyncio.CancelledError:
            await asyncio.shield(self._end(index, worker, asking))
            raise
        if not done:
            await self._end(index, worker, asking)
            raise ParseTimedOut(f"the parse took longer than {timeout:g} s")
        try:
            reply: tuple[Any, ...] = pickle.loads(asking.result())
        except (EOFError, OSError):
            await self._end(index, worker)
            raise ParseCrashed(
                "its worker process died mid-parse (killed, or out of memory)"
            ) from None
        self._count(reply)
        if reply[0] in ("memory", "crashed"):
            await self._end(index, worker)  # its heap is in an unknown state
        return reply

    def _count(self, reply: tuple[Any, ...]) -> None:
        ok = reply[0] == "ok"
        sent = len(reply[1][3]) if ok else 0
        with self._guard:
            stats = self._stats
            self._stats = attrs.evolve(
                stats,
                parses=stats.parses + 1,
                warm=stats.warm + (ok and reply[2]),
                partial=stats.partial + (ok and reply[1][1] is not None),
                occurrences_sent=stats.occurrences_sent + sent,
                evicted=stats.evicted + (reply[3][2] if ok else 0),
            )

    async def _end(
        self, index: int, worker: _Worker, asking: asyncio.Future[bytes] | None = None
    ) -> None:
        """Kill and reap a worker; its slot gets a new one on next use."""
        with self._guard:
            if self._workers[index] is worker:
                self._workers[index] = None
                self._held[index] = (0, 0)
                self._stats = attrs.evolve(self._stats, stopped=self._stats.stopped + 1)
        worker.kill()
        if asking is not None:  # the thread sees the pipe close; wait it out
            await asyncio.wait({asking})
            if not asking.cancelled():
                asking.exception()
        await asyncio.to_thread(worker.end)

    def _answer(self, reply: tuple[Any, ...], base: _Result | None) -> _Result:
        kind = reply[0]
        if kind == "ok":
            return _assembled(reply[1], base)
        if kind == "error":
            error: BaseException = reply[1]
            raise error
        if kind == "memory":
            raise ParseOutOfMemory("the parse ran out of memory")
        logger.error("a parse worker failed:\n%s", reply[2])
        raise ParseCrashed(f"unexpected {reply[1]} in the parse worker")

    async def close(self) -> None:
        """End every worker and refuse new parses; waits until they are reaped."""
        with self._guard:
            self._closed = True
            self._held = [(0, 0)] * self._size
        self._results.clear()
        await asyncio.to_thread(_end_all, self._workers)


def _end_all(workers: list[_Worker | None]) -> None:
    for index, worker in enumerate(workers):
        if worker is not None:
            workers[index] = None
            worker.end()


def _pidfd(pid: int) -> int | None:
    """Return a pidfd to wait on the process with (Linux), or None to poll."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int, pidfd: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to end; whether it has."""
    if pidfd is not None:
        return bool(select.select([pidfd], [], [], timeout)[0])
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


class _Zygote:
    """A small process with calsync imported that forks parse workers on request.

    Never a fork of this (threaded, asyncio) process, and never a re-run of
    the host's ``__main__`` as multiprocessing's start methods do. Started once
    per process, on first use; it exits when this process does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = 0

    @property
    def pid(self) -> int | None:
        """The zygote's process id, if it runs; the workers are its children."""
        running = self._process is not None and self._owner == os.getpid()
        return self._process.pid if running and self._process is not None else None

    def start_soon(self) -> None:
        """Start the zygote in the background, so the first parse need not wait."""

        def start() -> None:
            try:
                with self._lock:
                    self._running()
            except OSError:
                logger.exception("could not start the parse worker launcher")

        threading.Thread(target=start, name="calsync-zygote", daemon=True).start()

    def spawn(self, memory_limit: int | None) -> _Worker:
        """Fork a new worker; return it with our end of its socket."""
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                sock = self._running()
                request = struct.pack("!q", memory_limit or 0)
                socket.send_fds(sock, [request], [theirs.fileno()])
                reply = _read_exactly(sock, 8)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        (pid,) = struct.unpack("!q", reply)
        return _Worker(pid, Connection(ours.detach()))

    def _running(self) -> socket.socket:
        if self._sock is not None and self._owner == os.getpid():
            assert self._process is not None
            if self._process.poll() is None:
                return self._sock
        ours, theirs = socket.socketpair()
        code = _ZYGOTE_CODE.format(
            package=os.path.dirname(os.path.abspath(__file__)), fd=theirs.fileno()
        )
        self._process = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=[theirs.fileno()]
        )
        theirs.close()
        self._sock, self._owner = ours, os.getpid()
        return ours


# The zygote imports the parser alone: the packages' __init__ modules (the
# Engine, aiohttp, the stores) are left out, which halves its start and its
# workers' memory.
_ZYGOTE_CODE = """
import os, sys, types
engine = {package!r}
for name, path in (("calsync", os.path.dirname(engine)), ("calsync.engine", engine)):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
from calsync.engine.parsepool import _zygote
_zygote({fd})
"""
_ZYGOTE = _Zygote()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ParseCrashed(
                "the parse worker launcher exited (on a host that cannot start "
                "processes, set [engine] parse_isolation = false)"
            )
        data += chunk
    return data


_SAMPLE = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nX-WR-TIMEZONE:Europe/Berlin\r\n"
    "BEGIN:VEVENT\r\nUID:warm\r\nDTSTART;TZID=Europe/Berlin:20200302T100000\r\n"
    "DTEND;TZID=Europe/Berlin:20200302T110000\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\n"
    "EXDATE;TZID=Europe/Berlin:20200309T100000\r\nSUMMARY:warm\r\n"
    "BEGIN:VALARM\r\nTRIGGER:-PT10M\r\nACTION:DISPLAY\r\nEND:VALARM\r\n"
    "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:day\r\nDTSTART;VALUE=DATE:20200303\r\n"
    "SUMMARY:day\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def _warm_up() -> None:
    """Parse a small feed once, so every worker forked after starts warm."""
    window = Window(datetime(2020, 3, 1, tzinfo=UTC), datetime(2020, 4, 1, tzinfo=UTC))
    parse_ics(_SAMPLE, window, cache=ParseCache())


def _zygote(fd: int) -> None:
    """Fork a worker per request on socket ``fd``; runs in the zygote process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    sock = socket.socket(fileno=fd)
    _warm_up()
    while True:
        try:
            request, fds, _, _ = socket.recv_fds(sock, 8, 1)
        except OSError:
            return
        if len(request) < 8 or len(fds) != 1:
            return  # the parent closed its end: it is gone
        (memory_limit,) = struct.unpack("!q", request)
        pid = os.fork()
        if pid == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _serve(Connection(fds[0]), memory_limit or None)
            finally:
                os._exit(0)
        os.close(fds[0])
        sock.sendall(struct.pack("!q", pid))


# -- the compact form a parse crosses the pipe in -------------------------------
# Occurrences travel as tuples of their attrs fields (the key's fields first),
# read off the classes: a fraction of the cost of pickling attrs instances.
# Rebuilt without the validation the worker already did; slots are set through
# their descriptors, the classes being frozen.

_Row = tuple[Any, ...]
_KEY_FIELDS = tuple(field.name for field in attrs.fields(OccurrenceKey))
_FIELDS = tuple(field.name for field in attrs.fields(Occurrence) if field.name != "key")
_TAIL = tuple(
    field.name for field in attrs.fields(ParsedCalendar) if field.name != "occurrences"
)
_key_values = operator.attrgetter(*(f"key.{name}" for name in _KEY_FIELDS))
_values = operator.attrgetter(*_FIELDS)
_tail = operator.attrgetter(*_TAIL)
_KEY_SETTERS = tuple(OccurrenceKey.__dict__[name].__set__ for name in _KEY_FIELDS)
_SETTERS = tuple(Occurrence.__dict__[name].__set__ for name in _FIELDS)
_set_key = Occurrence.__dict__["key"].__set__
_TEXTS = (
    *(f"key.{name}" for name in _KEY_FIELDS),
    *(name for name in _FIELDS if typing.get_type_hints(Occurrence)[name] is str),
)
# What one restored occurrence costs the parent besides its texts (measured).
_OCCURRENCE_BYTES = 600
# Up to this many groups with new objects are sent without comparing values.
_FEW_GROUPS = 16


def _rows(occurrences: Iterable[Occurrence]) -> list[_Row]:
    """Return occurrences as plain tuples, cheap to pickle."""
    return [_key_values(o) + _values(o) for o in occurrences]


def _restored(rows: list[_Row]) -> tuple[list[Occurrence], int]:
    """Rebuild the occurrences of `_rows`; with the bytes they hold (estimated)."""
    new_key, new_occurrence = OccurrenceKey.__new__, Occurrence.__new__
    split = len(_KEY_FIELDS)
    occurrences = []
    for row in rows:
        key = new_key(OccurrenceKey)
        for set_field, value in zip(_KEY_SETTERS, row, strict=False):
            set_field(key, value)
        occurrence = new_occurrence(Occurrence)
        _set_key(occurrence, key)
        for set_field, value in zip(_SETTERS, row[split:], strict=True):
            set_field(occurrence, value)
        occurrences.append(occurrence)
    return occurrences, _size(occurrences)


def _size(occurrences: Iterable[Occurrence]) -> int:
    """Estimate the bytes the occurrences hold."""
    texts = operator.attrgetter(*_TEXTS)
    return sum(
        _OCCURRENCE_BYTES + sum(map(len, texts(occurrence)))
        for occurrence in occurrences
    )


# -- sending only what changed ----------------------------------------------------
# A worker remembers, per calendar, the result it last sent this parent and a
# token naming it; the parent keeps that result under the same token. The
# parent asks with its token; only if the worker last sent exactly that token
# does it answer with the UID groups that changed since (their occurrences, or
# none for a group that is gone), every other group being unchanged. A new
# worker, a dropped cache on either side or any other token means a whole
# result. Tokens are random, so a token names one result wherever it is seen.
#
# A group is unchanged when its occurrences are the very objects sent last time
# (the ParseCache hands back a reused group's objects): both results are alive
# while they are compared, so an object's id cannot stand for another's. When
# many groups have new objects (expanded again, as when the window slid), their
# occurrences are compared by value, which costs less than sending them.


class _Mismatch(Exception):
    """A worker's answer does not fit the result the parent kept."""


@attrs.frozen
class _Sent:
    """What a worker last sent of one calendar (worker side)."""

    token: int
    occurrences: dict[int, Occurrence]  # by id
    tail: tuple[Any, ...]


@attrs.define
class _Kept:
    """One calendar's state in a worker: its ParseCache, what was last sent, bytes."""

    cache: ParseCache
    sent: _Sent | None = None
    cost: int = 0


@attrs.frozen
class _Result:
    """The last result of one calendar, kept by the parent to rebuild the next."""

    token: int
    parsed: ParsedCalendar
    size: int  # estimated bytes of its occurrences

    @property
    def cost(self) -> int:
        """Estimated bytes it holds: its occurrences, its problems, itself."""
        return self.size + _OCCURRENCE_BYTES * (1 + len(self.parsed.problems))


# token, the token it builds on (None: whole), the UIDs of the groups replaced,
# their occurrences' rows, the number of occurrences, the tail (None: as before)
_Payload = tuple[int, int | None, list[str], list[_Row], int, tuple[Any, ...] | None]


def _delta(parsed: ParsedCalendar, sent: _Sent | None) -> tuple[_Payload, _Sent]:
    """Return what to send of ``parsed`` given what the parent holds (worker side)."""
    occurrences = parsed.occurrences
    by_id = dict(zip(map(id, occurrences), occurrences, strict=True))
    tail = _tail(parsed)
    now_sent = _Sent(int.from_bytes(os.urandom(8), "big"), by_id, tail)
    count = len(occurrences)
    if sent is None:
        return (now_sent.token, None, [], _rows(occurrences), count, tail), now_sent
    changed = _changed(occurrences, by_id, sent.occurrences)
    rows = _rows(o for o in occurrences if o.key.uid in changed) if changed else []
    same_tail = None if tail == sent.tail else tail
    payload = (now_sent.token, sent.token, list(changed), rows, count, same_tail)
    return payload, now_sent


def _changed(
    occurrences: tuple[Occurrence, ...],
    by_id: dict[int, Occurrence],
    old: dict[int, Occurrence],
) -> set[str]:
    """Return the UIDs of the groups whose occurrences differ from the old ones."""
    changed = {by_id[new].key.uid for new in by_id.keys() - old.keys()}
    changed.update(old[gone].key.uid for gone in old.keys() - by_id.keys())
    if len(changed) <= _FEW_GROUPS:
        return changed
    before, after = _grouped(old.values(), changed), _grouped(occurrences, changed)
    return {uid for uid in changed if before.get(uid) != after.get(uid)}


def _grouped(
    occurrences: Iterable[Occurrence], uids: set[str]
) -> dict[str, list[Occurrence]]:
    """Return the occurrences of the given UIDs by UID, in their order."""
    groups: dict[str, list[Occurrence]] = {}
    for occurrence in occurrences:
        uid = occurrence.key.uid
        if uid in uids:
            groups.setdefault(uid, []).append(occurrence)
    return groups


def _assembled(payload: _Payload, base: _Result | None) -> _Result:
    """Rebuild the worker's result from ``payload`` and the kept ``base`` (parent side).

    Raises `_Mismatch` if the payload does not build on ``base`` (never by design).
    """
    token, builds_on, changed, rows, count, tail = payload
    new, size = _restored(rows)
    if builds_on is None:
        assert tail is not None
        return _Result(token, ParsedCalendar(tuple(new), *tail), size)
    if base is None or base.token != builds_on:
        raise _Mismatch("the payload builds on another result")
    occurrences = base.parsed.occurrences
    if changed:
        replaced = set(changed)
        kept = [o for o in occurrences if o.key.uid not in replaced]
        size += base.size - _size(o for o in occurrences if o.key.uid in replaced)
        occurrences = tuple(_merged(kept, new))
    else:
        size = base.size
    if len(occurrences) != count:
        raise _Mismatch("the rebuilt result does not add up")
    parsed = ParsedCalendar(occurrences, *(tail or _tail(base.parsed)))
    return _Result(token, parsed, size)


def _merged(kept: list[Occurrence], new: list[Occurrence]) -> list[Occurrence]:
    """Merge sorted ``new`` into sorted ``kept``, in a ParsedCalendar's order."""
    if len(new) * 16 < len(kept):  # a few: find their places
        for occurrence in new:
            bisect.insort(kept, occurrence, key=_order)
        return kept
    kept += new
    kept.sort(key=_order)
    return kept


def _order(occurrence: Occurrence) -> tuple[datetime, str, str]:
    """Return the sort key of a ParsedCalendar's occurrences: start, then key."""
    key = occurrence.key
    return (occurrence.start, key.uid, key.recurrence_id)


class _Results:
    """The parent's last result per calendar, at most ``budget`` bytes (LRU)."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._results: OrderedDict[str, _Result] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Estimated bytes held."""
        return self._size

    def get(self, calendar_id: str) -> _Result | None:
        with self._lock:
            result = self._results.get(calendar_id)
            if result is not None:
                self._results.move_to_end(calendar_id)
            return result

    def put(self, calendar_id: str, result: _Result | None) -> None:
        """Keep ``result`` for the calendar (None: forget it), evicting the oldest."""
        with self._lock:
            old = self._results.pop(calendar_id, None)
            if old is not None:
                self._size -= old.cost
            if result is None or result.cost > self._budget:
                return
            self._results[calendar_id] = result
            self._size += result.cost
            while self._size > self._budget:
                _, evicted = self._results.popitem(last=False)
                self._size -= evicted.cost

    def clear(self) -> None:
        with self._lock:
            self._results.clear()
            self._size = 0


# -- the worker process ---------------------------------------------------------


def _serve(conn: Connection, memory_limit: int | None) -> None:
    """Answer parses from ``conn`` until it closes; runs in the worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends its workers
    _die_with_parent()
    if memory_limit is not None:
        ceiling = _address_space() + memory_limit
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    caches: OrderedDict[str, _Kept] = OrderedDict()
    while True:
        try:
            request = conn.recv_bytes()
            body = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        except MemoryError:  # the body alone is over the limit
            conn.send_bytes(pickle.dumps(("memory", None, False), protocol=_PROTOCOL))
            return
        reply = _handle(pickle.loads(request), body, caches)
        del body
        conn.send_bytes(reply)


def _handle(
    request: tuple[Any, ...], body: bytes, caches: OrderedDict[str, _Kept]
) -> bytes:
    (
        token,
        calendar_id,
        window,
        default_tz,
        max_occurrences,
        cache_size,
        cache_bytes,
        limits,
    ) = request
    kept = caches.pop(calendar_id, None)
    evicted = 0
    warm = kept is not None
    try:
        if kept is None and cache_size:
            kept = _Kept(ParseCache())
        cache = None if kept is None else kept.cache
        parsed = _parse(
            body, window, default_tz, max_occurrences, cache, caches, limits
        )
        sent = None if kept is None else kept.sent
        payload, now_sent = _delta(parsed, sent if _known(sent, token) else None)
        if kept is not None:
            kept.sent = now_sent
            if _reweigh(kept):
                kept.cost = kept.cache.nbytes + _SENT_BYTES * len(parsed.occurrences)
            caches[calendar_id] = kept
            evicted = _evict(caches, cache_size, cache_bytes)
        held = (sum(k.cost for k in caches.values()), len(caches), evicted)
        return pickle.dumps(("ok", payload, warm, held), protocol=_PROTOCOL)
    except CalsyncError as error:
        held = (sum(k.cost for k in caches.values()), len(caches), evicted)
        return pickle.dumps(("error", error, warm, held), protocol=_PROTOCOL)
    except MemoryError:
        caches.clear()
        return pickle.dumps(("memory", None, warm), protocol=_PROTOCOL)
    except Exception as error:
        caches.clear()
        text = traceback.format_exc()
        return pickle.dumps(("crashed", type(error).__name__, text), protocol=_PROTOCOL)


# What a worker's record of one sent occurrence costs (its entry in _Sent).
_SENT_BYTES = 100


def _reweigh(kept: _Kept) -> bool:
    """Whether a cache's bytes must be counted again: it expanded a group, or is new.

    Counting walks every group (3 ms for the Google export); a parse that only
    reused groups can only have dropped some, so the old count stands above.
    """
    stats = kept.cache.stats
    return kept.cost == 0 or stats.whole or stats.groups_expanded > 0


def _evict(caches: OrderedDict[str, _Kept], count: int, budget: int) -> int:
    """Drop the least recently parsed caches past ``count`` or ``budget`` bytes.

    Return how many were dropped; the newest goes too if alone it is over.
    """
    held = sum(kept.cost for kept in caches.values())
    evicted = 0
    while caches and (len(caches) > count or held > budget):
        _, dropped = caches.popitem(last=False)
        held -= dropped.cost
        evicted += 1
    return evicted


def _known(sent: _Sent | None, token: int | None) -> bool:
    """Whether the parent holds what this worker last sent (it asks with its token)."""
    return sent is not None and token is not None and sent.token == token


def _parse(
    body: bytes,
    window: Window,
    default_tz: str | tzinfo,
    max_occurrences: int,
    cache: ParseCache | None,
    caches: OrderedDict[str, _Kept],
    limits: Limits,
) -> ParsedCalendar:
    """Parse; out of memory with other calendars' caches held, drop them and retry."""

    def parse() -> ParsedCalendar:
        return parse_ics(
            body,
            window,
            default_tz=default_tz,
            max_occurrences=max_occurrences,
            cache=cache,
            **attrs.asdict(limits),
        )

    try:
        return parse()
    except MemoryError:
        if not caches:
            raise
    caches.clear()
    if cache is not None:
        cache.clear()
    return parse()


def _address_space() -> int:
    """Return the worker's virtual memory size in bytes (its ceiling's base)."""
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent (the zygote) goes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
