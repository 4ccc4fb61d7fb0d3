"""Group commit: syncs that finish while a write runs share the next transaction.

A sync's outcome is one store transaction (`Store.apply_sync`); on SQLite each
commit is an fsync, so a cycle of many quick syncs spends most of its time
committing one calendar at a time. `GroupCommit` writes whatever syncs queued
meanwhile with one `Store.apply_syncs` as soon as the previous write is done:
a lone sync waits for nothing, a busy cycle commits in batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from calsync.stores.records import AppliedSync, Lease, SyncWrite
from calsync.stores.store import Store, lease_lost

__all__ = ["GroupCommit"]

logger = logging.getLogger("calsync.sync")

MAX_BATCH = 100
"""Writes per transaction at most, so one never holds the store for long."""

_Queued = tuple[Lease, SyncWrite, "asyncio.Future[AppliedSync]"]


class GroupCommit:
    """Writes syncs' outcomes for one event loop, those that queue up together.

    `apply` returns what `Store.apply_sync` would (raising `LeaseLost` for a
    lost lease). A batch the store refuses is written again one write at a
    time, so a write that cannot be stored fails alone. A waiter that is
    cancelled before its batch starts takes its write out; once started, the
    write is committed or not as a whole with its batch, and either way the
    calendar is left consistent (its lease is released by the write or not).
    """

    def __init__(
        self, store: Store, clock: Callable[[], datetime], max_batch: int = MAX_BATCH
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_batch = max_batch
        self._queue: list[_Queued] = []
        self._writer: asyncio.Task[None] | None = None

    async def apply(self, lease: Lease, write: SyncWrite) -> AppliedSync:
        """Queue one sync's write, wait until it is committed, return what it did."""
        future: asyncio.Future[AppliedSync] = asyncio.get_running_loop().create_future()
        queued = (lease, write, future)
        self._queue.append(queued)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if queued in self._queue:  # not started: nothing of it is written
                self._queue.remove(queued)
            future.cancel()  # a batch under way skips its answer
            raise

    async def _write_all(self) -> None:
        batch: list[_Queued] = []
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                await self._commit(batch)
                batch = []
        except BaseException as error:
            # Cancelled with the loop, or a bug: no waiter may hang.
            for _, _, future in (*batch, *self._queue):
                if future.done():
                    continue
                if isinstance(error, Exception):
                    future.set_exception(error)
                else:
                    future.cancel()
            self._queue.clear()
            if not isinstance(error, Exception):
                raise  # cancelled with the loop; errors went to the waiters

    async def _commit(self, batch: list[_Queued]) -> None:
        if len(batch) > 1:
            try:
                applied = await self._store.apply_syncs(
                    [(lease, write) for lease, write, _ in batch], self._clock()
                )
            except Exception:
                logger.warning(
                    "a group commit of %d syncs failed; writing them one by one",
                    len(batch),
                    exc_info=True,
                )
            else:
                for (lease, _, future), result in zip(batch, applied, strict=True):
                    if future.done():
                        continue
                    if result is None:
                        future.set_exception(lease_lost(lease))
                    else:
                        future.set_result(result)
                return
        for lease, write, future in batch:
            try:
                result = await self._store.apply_sync(lease, write, self._clock())
            except Exception as error:
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)
