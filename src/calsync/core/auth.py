"""Credentials a calendar feed may need, kept out of every repr and log line."""

from __future__ import annotations

import re

import attrs

from calsync.core.errors import ValidationError

__all__ = ["Auth", "BasicAuth", "BearerAuth"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{attribute.name} must be a non-empty string")


def _header_safe(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    # The message never shows the value: it may be the secret itself.
    if not isinstance(value, str) or _CONTROL.search(value):
        raise ValidationError(
            f"{attribute.name} must be a string without control characters"
        )


def _no_colon(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if ":" in value:
        raise ValidationError(f"{attribute.name} must not contain ':' (RFC 7617)")


@attrs.frozen
class BasicAuth:
    """HTTP Basic credentials; the password never appears in `repr`."""

    username: str = attrs.field(validator=[_non_empty, _header_safe, _no_colon])
    password: str = attrs.field(validator=_header_safe, repr=lambda _: "***")


@attrs.frozen
class BearerAuth:
    """An OAuth-style bearer token; the token never appears in `repr`."""

    token: str = attrs.field(validator=[_non_empty, _header_safe], repr=lambda _: "***")


Auth = BasicAuth | BearerAuth
