"""`SQLiteStore`: the embedded default, one file, safe for several processes.

The store is `SQLStore` on SQLite: one connection on one dedicated thread;
write transactions start with ``BEGIN IMMEDIATE``, so claims are serialized
across processes on one host. Instants are integer microseconds since the
epoch, booleans 0/1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

from calsync.stores.dialects import SQLiteBackend
from calsync.stores.sql import SQLStore

__all__ = ["SQLiteStore"]


class SQLiteStore(SQLStore):
    """A `Store` in one SQLite file: the embedded default.

    Several processes on one host may share the file; each store object holds
    one connection on its own thread. ``busy_timeout`` is how long a write
    waits for another connection's write to finish before it fails.
    ``secret_keys`` (Fernet keys, newest first) encrypt feed secrets at rest;
    see `reseal_secrets` to rotate them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: timedelta = timedelta(seconds=30),
        secret_keys: Sequence[str] = (),
    ) -> None:
        super().__init__(SQLiteBackend(path, busy_timeout), secret_keys=secret_keys)
        self._path = os.fspath(path)

    def __repr__(self) -> str:
        state = "open" if self._executor is not None else "closed"
        return f"SQLiteStore({self._path!r}, {state})"
