"""`FileFetcher`: feeds from ``file://`` URLs or plain paths, for local development.

It answers like `HttpFetcher` does: a validator pair made from the file's
modification time and size gives ``not_modified`` when nothing changed, the same
size cap applies, and a body that is not iCalendar is refused the same way.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from datetime import timedelta
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import attrs

from calsync.core.auth import Auth
from calsync.core.errors import ValidationError
from calsync.fetch.content import describe_non_calendar, is_calendar
from calsync.fetch.failures import (
    FetchBlocked,
    FetchConnectionError,
    FetchError,
    FetchInvalidURL,
    FetchNotCalendar,
    FetchTooLarge,
)
from calsync.fetch.fetcher import FetchResult

__all__ = ["FileFetcher"]

MB = 1024 * 1024


@attrs.frozen
class _Snapshot:
    body: bytes | None
    etag: str
    last_modified: str


class FileFetcher:
    """Read calendar feeds from local files (``file:///path/cal.ics`` or a path).

    With *root*, only files inside that directory (after resolving symlinks) are
    read; anything else raises `FetchBlocked`. Without it any readable file is,
    so never hand a FileFetcher URLs from untrusted users without a root.
    `auth` is accepted for interface compatibility and ignored.
    """

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] | None = None,
        max_body_bytes: int = 20 * MB,
    ) -> None:
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise ValidationError("max_body_bytes must be a positive integer")
        if max_body_bytes < 1:
            raise ValidationError("max_body_bytes must be a positive integer")
        self._root = Path(root).resolve() if root is not None else None
        self._max_body = max_body_bytes

    def __repr__(self) -> str:
        return f"FileFetcher(root={self._root}, max_body_bytes={self._max_body})"

    async def aclose(self) -> None:
        """Nothing to release; present so FileFetcher satisfies `Fetcher`."""

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        auth: Auth | None = None,
    ) -> FetchResult:
        """Read the file behind *url*; ``not_modified`` when the validators match."""
        started = time.perf_counter()
        path = self._path(url)
        snapshot = await asyncio.to_thread(self._read, url, path, etag, last_modified)
        elapsed = timedelta(seconds=time.perf_counter() - started)
        if snapshot.body is None:
            return FetchResult(
                "not_modified",
                final_url=url,
                etag=snapshot.etag,
                last_modified=snapshot.last_modified,
                elapsed=elapsed,
            )
        if not is_calendar(snapshot.body):
            raise FetchNotCalendar(url, describe_non_calendar(snapshot.body), None)
        return FetchResult(
            "fetched",
            final_url=url,
            body=snapshot.body,
            etag=snapshot.etag,
            last_modified=snapshot.last_modified,
            elapsed=elapsed,
            bytes_read=len(snapshot.body),
        )

    def check_url(self, url: str) -> None:
        """Refuse a URL that is not a local path, or one outside the root."""
        self._path(url)

    def _path(self, url: str) -> Path:
        parts = urlsplit(url)
        if parts.scheme.lower() == "file":
            if parts.netloc not in ("", "localhost"):
                raise FetchInvalidURL(url, "a file: URL must name a local path")
            path = Path(url2pathname(unquote(parts.path)))
        elif parts.scheme and len(parts.scheme) > 1:
            raise FetchInvalidURL(
                url, f"FileFetcher reads file: URLs, not {parts.scheme}:"
            )
        else:
            path = Path(url)
        path = path.expanduser().resolve()
        if self._root is not None and not path.is_relative_to(self._root):
            raise FetchBlocked(url, "a file", "it is outside the FileFetcher's root")
        return path

    def _read(
        self, url: str, path: Path, etag: str | None, last_modified: str | None
    ) -> _Snapshot:
        error: FetchError
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # never open a FIFO or device
                raise IsADirectoryError
            with path.open("rb") as handle:
                status = os.fstat(handle.fileno())
                current_etag = f'"{status.st_mtime_ns:x}-{status.st_size:x}"'
                current_modified = formatdate(status.st_mtime, usegmt=True)
                if etag == current_etag or (
                    etag is None and last_modified == current_modified
                ):
                    return _Snapshot(None, current_etag, current_modified)
                if status.st_size > self._max_body:
                    raise FetchTooLarge(url, self._max_body, "declared")
                body = handle.read(self._max_body + 1)
        except FileNotFoundError:
            error = FetchConnectionError(url, "no such file", transient=False)
        except IsADirectoryError:
            error = FetchConnectionError(url, "not a regular file", transient=False)
        except PermissionError:
            error = FetchConnectionError(url, "permission denied", transient=False)
        except OSError as os_error:
            error = FetchConnectionError(
                url, f"the file could not be read ({os_error.strerror})"
            )
        else:
            if len(body) > self._max_body:
                raise FetchTooLarge(url, self._max_body, "body")
            return _Snapshot(body, current_etag, current_modified)
        raise error
