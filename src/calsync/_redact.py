"""Secret-free rendering of feed URLs for logs, errors and reprs.

Calendar URLs often carry a secret: user info, a token in the query string, or a
private path segment (Google's ``private-…``, Outlook's long hex ids). `redact`
is the one place that decides what of a URL may be shown.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = ["redact", "redact_text"]

MASK = "***"

# A path segment that looks like a credential: Google's "private-<hex>", or a
# long run of letters and digits (Outlook, Fastmail, Nextcloud share tokens).
_SECRET_SEGMENT = re.compile(
    r"^(?:private-.+|(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_\-.%=@+]{16,})$"
)
_KNOWN_FILE = re.compile(r"^[\w\-.]{1,64}\.(?:ics|ical|ifb|icalendar|vcs)$", re.I)
# What a query parameter name may look like to be shown: a short plain word.
_PLAIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-.\[\]]{0,31}$")
# "user:password@" at the start of a scheme-less value such as "u:p@host/cal.ics".
_LEADING_USERINFO = re.compile(r"^[^/?#]*@")


def redact(url: str) -> str:
    """Return *url* with user info, query values, fragment and secret-like parts masked.

    Query parameter names stay visible when they are plain words (``token=***``);
    a bare or odd-looking parameter is masked whole. Idempotent, and never raises:
    a URL that cannot be split is masked whole.
    """
    return _redact(str(url))


# A URL in prose: it does not end with the punctuation that follows it.
_URL_IN_TEXT = re.compile(
    r"\b(?:https?|webcal|wss?|ftp|postgres(?:ql)?|redis|amqp)://"
    r"[^\s'\"<>]*[^\s'\"<>.,;:!?)\]]",
    re.I,
)


def redact_text(text: str) -> str:
    """Return free text (a handler's error message, say) with every URL redacted."""
    return _URL_IN_TEXT.sub(lambda match: _redact(match.group(0)), str(text))


# Feed URLs repeat every sync, and every log line and result needs them redacted.
@functools.lru_cache(maxsize=4096)
def _redact(url: str) -> str:
    text = url.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if not parts.netloc:
        return _redact_path_only(text)
    netloc = _netloc(parts, host, port) if host else MASK
    path = "/".join(_segment(segment) for segment in parts.path.split("/"))
    query = _query(parts.query)
    return urlunsplit((parts.scheme.lower(), netloc, path, query, ""))


def _netloc(parts: SplitResult, host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    if port is not None:
        shown = f"{shown}:{port}"
    if parts.username is not None or parts.password is not None:
        shown = f"{MASK}@{shown}"
    return shown


def _segment(segment: str) -> str:
    if _KNOWN_FILE.match(segment) and not segment.lower().startswith("private-"):
        return segment
    return MASK if _SECRET_SEGMENT.match(segment) else segment


def _query(query: str) -> str:
    if not query:
        return ""
    return "&".join(_parameter(pair) for pair in query.split("&") if pair)


def _parameter(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    if not equals or not _PLAIN_NAME.match(name) or _SECRET_SEGMENT.match(name):
        return MASK
    return f"{name}={MASK}"


def _redact_path_only(text: str) -> str:
    """Mask a scheme-less or host-less value (a file path, ``u:p@host/x``, garbage)."""
    text = text.split("#", 1)[0]
    path, _, query = text.partition("?")
    path = _LEADING_USERINFO.sub(f"{MASK}@", path, count=1)
    shown = "/".join(_segment(segment) for segment in path.split("/"))
    return f"{shown}?{_query(query)}" if query else shown
