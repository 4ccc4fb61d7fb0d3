"""The `Fetcher` interface the Engine calls, and the `FetchResult` it returns."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import attrs

from calsync.core.auth import Auth
from calsync.core.errors import ValidationError
from calsync.core.model import as_aware_utc
from calsync.core.redact import redact
from calsync.fetch.failures import RetryAfter

__all__ = ["FetchResult", "FetchStatus", "Fetcher"]

FetchStatus = Literal["fetched", "not_modified"]


def _non_negative(
    instance: object, attribute: attrs.Attribute[int], value: int
) -> None:
    if value < 0:
        raise ValidationError(f"{attribute.name} must not be negative, got {value}")


_ZERO = timedelta(0)


def _non_negative_duration(
    instance: object,
    attribute: attrs.Attribute[Any],
    value: timedelta | None,
) -> None:
    if value is not None and value < _ZERO:
        raise ValidationError(f"{attribute.name} must not be negative, got {value}")


def _retry_after(value: RetryAfter | None) -> RetryAfter | None:
    return as_aware_utc(value) if isinstance(value, datetime) else value


def _body_repr(body: bytes | None) -> str:
    return "None" if body is None else f"<{len(body):,} bytes>"


@attrs.frozen
class FetchResult:
    """What one fetch of a feed brought back: a new body, or "not modified".

    `final_url` is redacted (the converter guarantees it); `body` is the decoded
    body for ``fetched`` and None for ``not_modified``. `bytes_read` counts bytes
    as transferred (compressed, if the server compressed). `etag` and
    `last_modified` are the validators to send next time: the server's new ones,
    or on a 304 without them, the ones sent. `retry_after` and `max_age` are the
    server's Retry-After and Cache-Control max-age hints, when it sent them.
    `unexpected_content_type` is true when the body is iCalendar but the server
    called it something else (text/plain, text/html, ...).
    """

    status: FetchStatus = attrs.field(
        validator=attrs.validators.in_(("fetched", "not_modified"))
    )
    final_url: str = attrs.field(converter=redact)
    body: bytes | None = attrs.field(default=None, repr=_body_repr)
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    unexpected_content_type: bool = False
    elapsed: timedelta = attrs.field(
        default=timedelta(0), validator=_non_negative_duration
    )
    bytes_read: int = attrs.field(default=0, validator=_non_negative)
    redirects: int = attrs.field(default=0, validator=_non_negative)
    retry_after: RetryAfter | None = attrs.field(default=None, converter=_retry_after)
    max_age: timedelta | None = attrs.field(
        default=None, validator=_non_negative_duration
    )

    def __attrs_post_init__(self) -> None:
        if (self.status == "fetched") != (self.body is not None):
            raise ValidationError(
                "a fetched result carries a body, a not_modified one none"
            )

    @property
    def modified(self) -> bool:
        """Whether the server sent a (possibly identical) body rather than a 304."""
        return self.status == "fetched"


class Fetcher(Protocol):
    """Gets a calendar feed's bytes; calsync's only network edge for feeds."""

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        auth: Auth | None = None,
    ) -> FetchResult:
        """Fetch *url*, conditionally when the validators of the last fetch are given.

        Returns a ``fetched`` result with the body, or ``not_modified`` when the
        server confirms the validators. Raises a `FetchError` subclass for every
        failure; never lets a transport library's exception escape.
        """
        ...

    def check_url(self, url: str) -> None:
        """Refuse a URL this fetcher could never fetch, before it is stored.

        Raises `FetchInvalidURL` (or `FetchBlocked` for a target the fetcher's
        policy forbids outright); does no I/O.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and other resources; the fetcher is unusable after."""
        ...
