"""Credentials a calendar feed may need, kept out of every repr and log line."""

from __future__ import annotations

import attrs

__all__ = ["Auth", "BasicAuth", "BearerAuth"]


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string")


@attrs.frozen
class BasicAuth:
    """HTTP Basic credentials; the password never appears in `repr`."""

    username: str = attrs.field(validator=_non_empty)
    password: str = attrs.field(repr=lambda _: "***")


@attrs.frozen
class BearerAuth:
    """An OAuth-style bearer token; the token never appears in `repr`."""

    token: str = attrs.field(validator=_non_empty, repr=lambda _: "***")


Auth = BasicAuth | BearerAuth
