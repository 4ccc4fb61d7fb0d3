"""`MariaDBStore`: the Store contract on MariaDB (10.6 or newer), for many workers.

The store is `SQLStore` on MariaDB through PyMySQL: claims lock rows with
``FOR UPDATE SKIP LOCKED`` and are fenced by a token; every method is one
transaction at READ COMMITTED. Needs the ``mariadb`` extra (PyMySQL):
``pip install -e '.[mariadb]'``.
"""

from __future__ import annotations

from collections.abc import Sequence

from calsync.stores.dialects import MariaDBBackend
from calsync.stores.sql import SQLStore

__all__ = ["MariaDBStore"]


class MariaDBStore(SQLStore):
    """A `Store` in MariaDB: one database shared by any number of workers.

    ``url`` is ``mysql://user:password@host:3306/database``; its password never
    appears in `repr`, errors or logs. The tables live in that database, or in
    ``schema`` (a MariaDB database, created if missing) when given.
    ``min_size``/``max_size`` bound the connection pool; ``secret_keys``
    (Fernet keys, newest first) encrypt feed secrets at rest.

    MariaDB cannot index unbounded text, so keys are bounded: calendar ids and
    owners up to 191 characters, URLs (their look-up form) up to 512, event
    UIDs up to 500.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        secret_keys: Sequence[str] = (),
    ) -> None:
        backend = MariaDBBackend(url, schema, min_size, max_size)
        super().__init__(backend, secret_keys=secret_keys)
        self._target = backend.target()
        self._schema = schema

    def __repr__(self) -> str:
        return f"MariaDBStore({self._target!r})"

    @property
    def schema(self) -> str | None:
        """The MariaDB database that holds this store's tables (None: the URL's)."""
        return self._schema
