"""`EngineThread`: an Engine for code that does not run async (task queues, WSGI).

The event loop thread, its start and stop, and cancelling across threads come
from an anyio blocking portal; this module adds one Engine per process on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import ExitStack
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from calsync.engine.jobs import Job
from calsync.engine.results import JobResult
from calsync.engine.service import Engine

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

__all__ = ["EngineThread"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class EngineThread:
    """One Engine per process, open on an event loop thread of its own.

    Call `run_job` or `call` from any thread: the work runs on that one loop,
    where the Engine's connections live, and the call blocks for its result (an
    interrupted wait cancels it). The Engine comes from ``engine_factory`` and
    opens on first use; a forked child (a prefork pool) makes one of its own.
    """

    def __init__(self, engine_factory: Callable[[], Engine]) -> None:
        self._factory = engine_factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stack = ExitStack()
        self._portal: BlockingPortal | None = None
        self._opening: Future[Engine] | None = None

    def start(self) -> None:
        """Begin opening this process's Engine without waiting (a start-up hook)."""
        self._open()

    def call(self, function: Callable[[Engine], Awaitable[_T]]) -> _T:
        """Return ``await function(engine)``, run on the Engine's loop.

        Raises what opening the Engine raised (a later call tries again), or
        what ``function`` raised.
        """
        portal, opening = self._open()
        # The work waits for ``ready``: an interruption while it is being handed
        # over leaves it waiting, never running unowned (`stop` cancels it).
        ready: Future[None] = Future()
        future = portal.start_task_soon(_when_ready, ready, function, opening.result())
        try:
            ready.set_result(None)
            return future.result()
        except BaseException:
            future.cancel()  # a time limit or a shutdown interrupted the wait
            raise

    def run_job(self, job: Job | str, **arguments: Any) -> JobResult:
        """Run one `Engine.run_job` and return its result."""
        return self.call(lambda engine: engine.run_job(job, **arguments))

    def now(self) -> datetime:
        """Return the current time by the Engine's clock (opening it if need be)."""
        return self._open()[1].result().now()

    def stop(self) -> None:
        """Close this process's Engine and end its loop thread (no-op if none)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            portal, opening, stack = self._portal, self._opening, self._stack
            self._pid, self._portal, self._opening = None, None, None
        with stack:  # stops the portal's loop on the way out
            if portal is None or opening is None or _failed(opening):
                return  # an Engine that failed to open was closed then
            try:
                portal.call(opening.result().close)
            except Exception:
                logger.exception("closing the calsync engine failed")
            portal.call(portal.stop, True)  # cancel work whose caller went away

    def _open(self) -> tuple[BlockingPortal, Future[Engine]]:
        """Return this process's portal and Engine (open or opening), made if needed."""
        from anyio.from_thread import start_blocking_portal  # for sync hosts only

        with self._lock:
            portal = self._portal
            if portal is None or self._pid != os.getpid():  # a fork has no loop
                self._stack = ExitStack()
                portal = self._stack.enter_context(start_blocking_portal())
                self._pid, self._portal, self._opening = os.getpid(), portal, None
            if self._opening is None or _failed(self._opening):
                self._opening = portal.start_task_soon(self._opened)
            return portal, self._opening

    async def _opened(self) -> Engine:
        engine = self._factory()
        try:
            await engine.open()
        except BaseException:
            await engine.close()
            raise
        return engine


async def _when_ready(
    ready: Future[None], function: Callable[[Engine], Awaitable[_T]], engine: Engine
) -> _T:
    await asyncio.wrap_future(ready)
    return await function(engine)


def _failed(future: Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)
