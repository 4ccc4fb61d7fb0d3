"""Feed secrets at rest: the SQL stores seal URLs with a secret, and credentials.

With ``secret_keys`` set (Fernet keys, newest first), a URL that carries a
secret (whatever `redact` would mask: user info, query values, a private path
segment) is stored encrypted, next to a look-up form: the redacted URL and a
keyed hash (HMAC-SHA256) of the whole URL, deterministic per key, which the
unique (owner, URL) constraint and look-ups use. Credentials are stored
encrypted. A copy of the database alone then reveals no feed secret. Without
keys, everything is stored in clear, as before; sealed values need a key to read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from calsync.core.errors import StoreError, ValidationError
from calsync.core.redact import redact

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = [
    "SEALED",
    "SecretBox",
    "carries_secret",
    "clear_secrets",
    "warn_clear_secrets",
]

logger = logging.getLogger(__name__)

SEALED = "fernet:"
"""The prefix of a sealed value in a column: what follows is a Fernet token."""

_LOOKUP = "#calsync-url-hmac="
"""Joins the redacted URL and the keyed hash in the look-up form of a secret URL."""

_SETTING = "[store] secret_keys (CALSYNC_STORE_SECRET_KEYS)"
_INSTALL_HINT = "pip install 'calsync[encryption]'"
_MAKE_KEY = (
    "make one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)


class SecretBox:
    """Seals and opens feed secrets with ``keys``; the first key seals, any opens.

    Raises `ValidationError` for a key that is not a Fernet key (never showing
    it), and `StoreError` if keys are given but ``cryptography`` is missing.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = tuple(keys)
        self._fernet: MultiFernet | None = None
        self._lookup_keys: tuple[bytes, ...] = ()
        if not self._keys:
            return
        _require_cryptography()
        from cryptography.fernet import Fernet, MultiFernet

        raw = [_key_bytes(key, position) for position, key in enumerate(self._keys, 1)]
        self._fernet = MultiFernet([Fernet(key) for key in self._keys])
        self._lookup_keys = tuple(
            hmac.new(key, b"calsync url look-up", hashlib.sha256).digest()
            for key in raw
        )

    def __repr__(self) -> str:
        return f"SecretBox(keys={len(self._keys)})"

    @property
    def sealing(self) -> bool:
        """Whether keys are set: secrets are stored encrypted."""
        return self._fernet is not None

    def seal(self, text: str) -> str:
        """Return ``text`` sealed with the first key, or as is without keys."""
        if self._fernet is None:
            return text
        return SEALED + self._fernet.encrypt(text.encode()).decode()

    def open(self, stored: str, calendar_id: str) -> str:
        """Return the clear text of a stored value (sealed or not).

        Raises `StoreError`, naming the setting, without a key or with none that fits.
        """
        if not stored.startswith(SEALED):
            return stored
        if self._fernet is None:
            raise StoreError(
                f"calendar {calendar_id!r}: its feed secrets are encrypted but no "
                f"key is set: set {_SETTING} to the key they were written with"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(stored[len(SEALED) :].encode()).decode()
        except InvalidToken:
            raise StoreError(
                f"calendar {calendar_id!r}: no key in {_SETTING} decrypts its feed "
                "secrets: add the key they were written with"
            ) from None

    def url_columns(self, url: str) -> tuple[str, str | None]:
        """Return what to store for ``url``: its look-up form and its sealed form.

        A URL without a secret, or any URL without keys, is stored as is (no
        sealed form). A secret URL is looked up by its redacted form and keyed hash.
        """
        if self._fernet is None or not carries_secret(url):
            return url, None
        return self._lookup_form(url, self._lookup_keys[0]), self.seal(url)

    def url_forms(self, url: str) -> list[str]:
        """Return every look-up form ``url`` may be stored under (any key, or clear)."""
        if not carries_secret(url):
            return [url]
        return [url, *(self._lookup_form(url, key) for key in self._lookup_keys)]

    def _lookup_form(self, url: str, key: bytes) -> str:
        digest = hmac.new(key, url.encode(), hashlib.sha256).hexdigest()
        return f"{redact(url)}{_LOOKUP}{digest}"


def carries_secret(url: str) -> bool:
    """Whether ``url`` holds something `redact` would hide (a token, a password)."""
    return redact(url) != url


def _require_cryptography() -> None:
    """Fail helpfully when keys are set but the optional package is missing."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise StoreError(
            f"{_SETTING} needs the cryptography package: {_INSTALL_HINT}"
        ) from None


def _key_bytes(key: str, position: int) -> bytes:
    """Return the 32 bytes of a Fernet key, or refuse it without showing it."""
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValidationError(
            f"{_SETTING}: key #{position} is not a Fernet key (44 characters of "
            f"URL-safe base64); {_MAKE_KEY}"
        )
    return raw


def clear_secrets(rows: Iterable[Mapping[str, Any]]) -> int:
    """Count calendar rows (id, url, url_sealed, auth) that keep a secret in clear."""
    return sum(
        1
        for row in rows
        if (row["auth"] is not None and not row["auth"].startswith(SEALED))
        or (row["url_sealed"] is None and carries_secret(row["url"]))
    )


def warn_clear_secrets(count: int, box: SecretBox, store: str) -> None:
    """Warn, at start, that ``count`` calendars keep feed secrets readable."""
    if count == 0:
        return
    remedy = (
        "call reseal_secrets() to encrypt them with the first key"
        if box.sealing
        else f"set {_SETTING} to encrypt them"
    )
    logger.warning(
        "%s: %d calendar(s) keep feed secrets (URL tokens, credentials) in clear "
        "text: %s",
        store,
        count,
        remedy,
        extra={"calsync_clear_secrets": count},
    )
