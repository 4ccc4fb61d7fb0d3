"""`PostgresStore`: the Store contract on PostgreSQL, shared by many workers and hosts.

The store is `SQLStore` on PostgreSQL: leases and claims are row locks taken
with ``FOR UPDATE SKIP LOCKED`` and fenced by a token; every method is one
transaction. Tables live in their own schema (default ``calsync``). Needs the
``postgres`` extra (psycopg 3): ``pip install -e '.[postgres]'``.
"""

from __future__ import annotations

from collections.abc import Sequence

from calsync.stores.dialects import PostgresBackend
from calsync.stores.sql import SQLStore

__all__ = ["PostgresStore"]


class PostgresStore(SQLStore):
    """A `Store` in PostgreSQL: one database shared by any number of workers.

    ``url`` is a libpq connection string or URI; its password never appears in
    `repr`, errors or logs. ``schema`` names the PostgreSQL schema that holds
    the tables; ``min_size``/``max_size`` bound the connection pool.
    ``secret_keys`` (Fernet keys, newest first) encrypt feed secrets at rest;
    see `reseal_secrets` to rotate them.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "calsync",
        min_size: int = 1,
        max_size: int = 10,
        secret_keys: Sequence[str] = (),
    ) -> None:
        backend = PostgresBackend(url, schema, min_size, max_size)
        super().__init__(backend, secret_keys=secret_keys)
        self._shown = backend.shown
        self._schema = schema

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown!r}, schema={self._schema!r})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema that holds this store's tables."""
        return self._schema
