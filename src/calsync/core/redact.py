"""Secret-free rendering of feed URLs for logs, errors and reprs.

Calendar URLs often carry a secret: user info, a token in the query string, or a
private path segment (Google's ``private-…``, Outlook's long hex ids). `redact`
is the one place that decides what of a URL may be shown.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit, urlunsplit

__all__ = ["is_conninfo", "redact", "redact_text", "scrub_secrets"]

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
# A key=value connection string (libpq's "host=db user=app password=..."): each
# value bare, or single-quoted with backslash escapes.
_CONNINFO_PAIR = re.compile(r"([A-Za-z_]\w*)\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)")
_CONNINFO = re.compile(rf"^\s*(?:{_CONNINFO_PAIR.pattern}\s*)+$")
# Keys of a connection string whose values may be shown: where it points, no secret.
_SHOWN_KEYS = frozenset(
    {"host", "hostaddr", "port", "dbname", "user", "sslmode", "connect_timeout"}
)
# "password=..." in free text (a driver's message, say).
_PASSWORD_IN_TEXT = re.compile(
    r"\b(password|passwd|pwd)(\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s,;&)]+)", re.I
)


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
    """Return free text (a handler's error message, say) with every URL redacted.

    ``password=...`` outside a URL (a key=value connection string) is masked too.
    """
    text = _URL_IN_TEXT.sub(lambda match: _redact(match.group(0)), str(text))
    return _PASSWORD_IN_TEXT.sub(rf"\1\2{MASK}", text)


def is_conninfo(text: str) -> bool:
    """Whether *text* is a key=value connection string (``host=db dbname=app``)."""
    return "://" not in text and _CONNINFO.match(text) is not None


def scrub_secrets(text: str, url: str) -> str:
    """Return *text* with every secret of *url* masked, in whatever form it holds.

    For a driver's message that may quote the password of the connection string
    it was given (``invalid percent-encoded token: "s3cr%etPW"``): the user
    info's password, raw and decoded, ``password=`` in the query, and the
    ``password`` of a key=value string. Then `redact_text` runs over the result.
    """
    secrets = sorted(_secrets_of(str(url)), key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return redact_text(text)


def _secrets_of(url: str) -> set[str]:
    """Every form of the secrets a URL or key=value connection string carries."""
    found: set[str] = set()
    if is_conninfo(url):
        for key, value in _CONNINFO_PAIR.findall(url):
            if key.lower() not in _SHOWN_KEYS and value:
                found |= {value, value.strip("'")}
        return {secret for secret in found if secret}
    netloc = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    userinfo = netloc.rpartition("@")[0]
    if userinfo:
        password = userinfo.partition(":")[2]
        found |= {userinfo, password, unquote(password), unquote(userinfo)}
    query = url.partition("?")[2].split("#", 1)[0]
    for pair in query.split("&"):
        value = pair.partition("=")[2]
        found |= {value, unquote(value)}
    found |= {value for _, value in parse_qsl(query, keep_blank_values=False)}
    return {secret for secret in found if secret}


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
        if _CONNINFO.match(text):
            return _redact_conninfo(text)
        return _PASSWORD_IN_TEXT.sub(rf"\1\2{MASK}", _redact_path_only(text))
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


def _redact_conninfo(text: str) -> str:
    """Show a key=value connection string: where it points, every other value masked."""

    def shown(match: re.Match[str]) -> str:
        key, value = match.group(1), match.group(2)
        return f"{key}={value if key.lower() in _SHOWN_KEYS else MASK}"

    return " ".join(shown(match) for match in _CONNINFO_PAIR.finditer(text))


def _redact_path_only(text: str) -> str:
    """Mask a scheme-less or host-less value (a file path, ``u:p@host/x``, garbage)."""
    text = text.split("#", 1)[0]
    path, _, query = text.partition("?")
    path = _LEADING_USERINFO.sub(f"{MASK}@", path, count=1)
    shown = "/".join(_segment(segment) for segment in path.split("/"))
    return f"{shown}?{_query(query)}" if query else shown
