"""`calsync.toml` and ``CALSYNC_*`` variables: one validated `Config` and its builders.

Values are read from the TOML file, then from the legacy variables
``SYNC_INTERVAL_MINUTES``, ``NOTIFY_INTERVAL_SECONDS`` and ``NOTIFY_BEFORE_MINUTES``,
then from ``CALSYNC_<SECTION>_<KEY>``; a later source wins. Every bad or unknown
key raises `ConfigError` naming the key, where it came from and what is expected.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from calsync.core.durations import DurationTooLong, Span, parse_duration
from calsync.core.errors import ValidationError
from calsync.core.redact import is_conninfo, redact
from calsync.core.schedule import schedule_or_interval
from calsync.core.settings import (
    SETTINGS_COUNTS,
    SETTINGS_SPANS,
    fraction_problem,
    rate_problem,
)
from calsync.core.zones import resolve_zone
from calsync.fetch.ssrf import host_problem
from calsync.stores.records import CALENDAR_SPANS

if TYPE_CHECKING:
    from calsync.core.settings import Settings
    from calsync.engine.service import Engine
    from calsync.fetch.http import HttpFetcher
    from calsync.handlers.delivery import Handler
    from calsync.stores.store import Store

__all__ = [
    "CalendarConfig",
    "Config",
    "ConfigError",
    "DefaultsConfig",
    "EngineConfig",
    "FetchConfig",
    "HandlerConfig",
    "LoggingConfig",
    "RunnerConfig",
    "StoreConfig",
    "build_engine",
    "build_fetcher",
    "build_handler",
    "build_settings",
    "load_config",
    "open_store",
    "parse_duration",
]

ENV_PREFIX = "CALSYNC_"
_HIDDEN = "***"
_MB = 1024 * 1024


class ConfigError(ValidationError):
    """A configuration value is missing, unknown or invalid.

    ``key`` is the dotted key (``engine.late_grace``); ``source`` is the file or
    environment variable it came from.
    """

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.source = source


class _Invalid(Exception):
    """A value does not fit its key; the loader adds the key and the source."""


class _EnvText(str):
    """An environment variable's text: the one place a number may come as text."""

    __slots__ = ()


# -- value parsers -------------------------------------------------------------
# Each takes the raw value (a TOML value, or an environment variable's text) and
# returns the typed value, or raises _Invalid saying what is expected.

Parser = Callable[[object], Any]


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("expected a non-empty string")
    return value.strip()


def _duration(value: object) -> timedelta:
    if not isinstance(value, str):
        raise _Invalid("expected a duration string like '10m', '1h30m' or '2d'")
    try:
        return parse_duration(value)
    except DurationTooLong as error:
        raise _Invalid(str(error)) from None
    except ValidationError as error:
        raise _Invalid(
            "expected a duration like '90s', '10m', '1h30m' or '2d'"
        ) from error


def _positive_duration(value: object) -> timedelta:
    duration = _duration(value)
    if duration <= timedelta(0):
        raise _Invalid("expected a duration greater than zero, like '10m'")
    return duration


_QUOTED_NUMBER = "expected a number, written without quotes"


def _integer(minimum: int) -> Parser:
    def parse(value: object) -> int:
        if isinstance(value, _EnvText) and re.fullmatch(
            r"\s*[+-]?[0-9]{1,18}\s*", value, re.ASCII
        ):
            value = int(value)
        if isinstance(value, str) and not isinstance(value, _EnvText):
            raise _Invalid(f"{_QUOTED_NUMBER}, like max_attempts = 8")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid(f"expected a whole number >= {minimum}")
        return value

    return parse


def _number(value: object) -> float:
    if isinstance(value, str) and not isinstance(value, _EnvText):
        raise _Invalid(f"{_QUOTED_NUMBER}, like 0.5")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[+-]?[0-9]*\.?[0-9]+\s*", value, re.ASCII):
            raise _Invalid("expected a number, like 0.5")
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid("expected a number")
    if not math.isfinite(value):
        raise _Invalid("expected a finite number")
    return float(value)


def _fraction(value: object) -> float:
    number = _number(value)
    if not 0 < number <= 1:
        raise _Invalid("expected a number greater than 0 and at most 1, like 0.5")
    return number


def _rate(value: object) -> float:
    number = _number(value)
    if number < 0:
        raise _Invalid("expected requests per second >= 0 (0 turns the limit off)")
    return number


def _items(value: object) -> list[object]:
    """Return a TOML array as is, or an environment variable's text split at commas."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return value
    raise _Invalid("expected a list")


def _text_list(value: object) -> tuple[str, ...]:
    items = _items(value)
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise _Invalid('expected a list of strings, like ["127.0.0.1"]')
    return tuple(str(item).strip() for item in items)


def _leads(value: object) -> tuple[timedelta, ...]:
    items = _items(value)
    if not items:
        raise _Invalid('expected at least one lead, like ["10m"]')
    leads = []
    for item in items:
        if not isinstance(item, str):
            raise _Invalid('expected a list of durations, like ["10m", "1h"]')
        try:
            leads.append(parse_duration(item))
        except DurationTooLong as error:
            raise _Invalid(str(error)) from None
        except ValidationError:
            raise _Invalid(
                f"lead {item!r} is not a duration: expected a list of durations "
                'like ["10m", "1h"]'
            ) from None
    return tuple(sorted(set(leads)))


def _schedule(value: object) -> str:
    """Normalize a schedule text (``every 15m``, ``daily 03:00``) or a bare duration."""
    try:
        return schedule_or_interval(_text(value)).text
    except ValidationError as error:
        raise _Invalid(str(error)) from None


def _zone(value: object) -> str:
    text = _text(value)
    try:
        resolve_zone(text)
    except ValidationError:
        raise _Invalid("expected an IANA time zone name like 'Europe/Berlin'") from None
    return text


def _choice(*options: str) -> Parser:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.strip().lower() not in options:
            shown = " or ".join(repr(option) for option in options)
            raise _Invalid(f"expected {shown}")
        return value.strip().lower()

    return parse


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise _Invalid("expected true or false")


_LEVEL = _choice("debug", "info", "warning", "error", "critical")


def _log_level(value: object) -> str:
    return str(_LEVEL(value)).upper()


def _feed_url(value: object) -> str:
    text = _text(value)
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:  # a broken [IPv6] host or port
        raise _Invalid("expected a URL like https://example.com/cal.ics") from None
    if parts.scheme.lower() not in {"http", "https", "webcal", "webcals", "file"}:
        raise _Invalid("expected an http://, https:// or webcal:// URL")
    if parts.scheme.lower() != "file" and not host:
        raise _Invalid("expected a URL with a host, like https://example.com/cal.ics")
    problem = None if host is None else host_problem(host)
    if problem is not None:
        raise _Invalid(f"the host {problem}")
    return text


def _webhook_url(value: object) -> str:
    text = _text(value)
    try:
        parts = urlsplit(text)
        host, scheme = parts.hostname, parts.scheme.lower()
    except ValueError:
        raise _Invalid("expected an http:// or https:// URL") from None
    if scheme not in {"http", "https"} or not host:
        raise _Invalid("expected an http:// or https:// URL")
    problem = host_problem(host)
    if problem is not None:
        raise _Invalid(f"the host {problem}")
    return text


def _store_url(value: object) -> str:
    text = _text(value)
    if text == "memory:" or _sqlite_path(text) is not None:
        return text
    if text.startswith(("postgresql://", "postgres://")) or is_conninfo(text):
        return text
    if text.startswith(_MARIADB_SCHEMES):
        return text
    raise _Invalid(
        "expected 'sqlite:///calsync.db' (a file, relative to the working "
        "directory; 'sqlite:////abs/path.db' for an absolute path), "
        "'postgresql://user@host/db' (or 'host=... dbname=...'), "
        "'mysql://user@host/db' (MariaDB) or 'memory:'"
    )


_MARIADB_SCHEMES = ("mysql://", "mariadb://", "mysql+pymysql://", "mariadb+pymysql://")


def _sqlite_path(url: str) -> str | None:
    """Return the file path of a ``sqlite:///`` URL, or None for another URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        return None
    return url[len(prefix) :]


def _target(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text):
        raise _Invalid("expected 'package.module:function'")
    return text


def _env_name(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise _Invalid("expected the name of an environment variable, like HOOK_SECRET")
    return text


# -- sections -----------------------------------------------------------------


Check = Callable[[Any], "str | None"]


def _key(
    parse: Parser,
    *,
    secret: bool = False,
    url: bool = False,
    check: Check | None = None,
) -> dict[str, Any]:
    """Return a config key's metadata: its parser, its range check, how it is shown.

    *check* takes the parsed value and says why it is out of range (or None);
    the ranges are the tables the attrs validators use, so API and config agree.
    """
    return {"parse": parse, "secret": secret, "url": url, "check": check}


def _setting(name: str) -> Check:
    """Return the range check of the `Settings` value *name* (``retry.cap``)."""
    if name in SETTINGS_SPANS:
        return SETTINGS_SPANS[name].problem
    return SETTINGS_COUNTS[name].problem


def _leads_check(leads: tuple[timedelta, ...] | None) -> str | None:
    span = CALENDAR_SPANS["leads"]
    problems = (span.problem(lead) for lead in leads or ())
    return next((f"each lead {p}" for p in problems if p is not None), None)


def _rate_check(rate: float) -> str | None:
    return None if rate == 0 else rate_problem(rate)


_TIMEOUT = Span(timedelta(hours=1), zero_ok=False)


def _hide(value: object) -> str:
    return "None" if value is None else _HIDDEN


def _redact_optional(value: object) -> str:
    return "None" if value is None else repr(redact(str(value)))


@attrs.frozen
class StoreConfig:
    """``[store]``: where calsync keeps its state."""

    url: str = attrs.field(
        default="sqlite:///calsync.db",
        metadata=_key(_store_url, url=True),
        repr=_redact_optional,
    )
    schema: str = attrs.field(default="calsync", metadata=_key(_text))
    secret_keys: tuple[str, ...] = attrs.field(
        default=(), metadata=_key(_text_list, secret=True), repr=_hide
    )


@attrs.frozen
class DefaultsConfig:
    """``[defaults]``: settings of calendars added without their own."""

    every: str = attrs.field(default="every 15m", metadata=_key(_schedule))
    leads: tuple[timedelta, ...] = attrs.field(
        default=(timedelta(minutes=10),), metadata=_key(_leads, check=_leads_check)
    )
    tz: str = attrs.field(default="UTC", metadata=_key(_zone))


@attrs.frozen
class EngineConfig:
    """``[engine]``: `Settings` of the Engine; a key left out keeps its default."""

    worker: str | None = attrs.field(default=None, metadata=_key(_text))
    sync_concurrency: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("sync_concurrency"))
    )
    per_host_concurrency: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("per_host_concurrency"))
    )
    per_host_rate: float | None = attrs.field(
        default=None, metadata=_key(_rate, check=_rate_check)
    )
    lease_ttl: timedelta | None = attrs.field(
        default=None, metadata=_key(_positive_duration, check=_setting("lease_ttl"))
    )
    parse_timeout: timedelta | None = attrs.field(
        default=None, metadata=_key(_positive_duration, check=_setting("parse_timeout"))
    )
    max_occurrences: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("max_occurrences"))
    )
    reparse_after: timedelta | None = attrs.field(
        default=None, metadata=_key(_positive_duration, check=_setting("reparse_after"))
    )
    late_grace: timedelta | None = attrs.field(
        default=None, metadata=_key(_duration, check=_setting("late_grace"))
    )
    alarm_lookahead: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_positive_duration, check=_setting("alarm_lookahead")),
    )
    mass_deletion_min: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("mass_deletion_min"))
    )
    mass_deletion_fraction: float | None = attrs.field(
        default=None, metadata=_key(_fraction, check=fraction_problem)
    )
    retry_base: timedelta | None = attrs.field(
        default=None, metadata=_key(_positive_duration, check=_setting("retry.base"))
    )
    retry_cap: timedelta | None = attrs.field(
        default=None, metadata=_key(_positive_duration, check=_setting("retry.cap"))
    )
    retry_max_after: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_positive_duration, check=_setting("retry.max_retry_after")),
    )
    breaker_threshold: int | None = attrs.field(
        default=None,
        metadata=_key(_integer(1), check=_setting("breaker.failure_threshold")),
    )
    breaker_cool_down: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_positive_duration, check=_setting("breaker.cool_down")),
    )
    breaker_probe_timeout: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_positive_duration, check=_setting("breaker.probe_timeout")),
    )
    dispatch_batch: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("dispatch_batch"))
    )
    dispatch_concurrency: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("dispatch_concurrency"))
    )
    handler_timeout: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_positive_duration, check=_setting("handler_timeout")),
    )
    max_attempts: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("max_attempts"))
    )
    delivery_retry_base: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_positive_duration, check=_setting("delivery_retry.base")),
    )
    delivery_retry_cap: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_positive_duration, check=_setting("delivery_retry.cap")),
    )
    keep_expired_occurrences: timedelta | None = attrs.field(
        default=None,
        metadata=_key(_duration, check=_setting("keep_expired_occurrences")),
    )
    keep_notifications: timedelta | None = attrs.field(
        default=None, metadata=_key(_duration, check=_setting("keep_notifications"))
    )
    keep_job_runs: timedelta | None = attrs.field(
        default=None, metadata=_key(_duration, check=_setting("keep_job_runs"))
    )
    stale_factor: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("stale_factor"))
    )
    parse_cache_size: int | None = attrs.field(
        default=None, metadata=_key(_integer(0), check=_setting("parse_cache_size"))
    )
    parse_concurrency: int | None = attrs.field(
        default=None, metadata=_key(_integer(1), check=_setting("parse_concurrency"))
    )
    parse_memory_limit: int | None = attrs.field(
        default=None, metadata=_key(_integer(0))
    )
    parse_isolation: bool | None = attrs.field(default=None, metadata=_key(_boolean))


@attrs.frozen
class RunnerConfig:
    """``[runner]``: when `calsync run` runs each job; ``tz`` for wall-clock times."""

    sync_due: str = attrs.field(default="every 30s", metadata=_key(_schedule))
    check_notifications: str = attrs.field(
        default="every 60s", metadata=_key(_schedule)
    )
    dispatch_notifications: str = attrs.field(
        default="every 10s", metadata=_key(_schedule)
    )
    cleanup: str = attrs.field(default="daily 03:00", metadata=_key(_schedule))
    tz: str = attrs.field(default="UTC", metadata=_key(_zone))


@attrs.frozen
class FetchConfig:
    """``[fetch]``: the HTTP fetcher's allow-list, timeouts and size cap."""

    allow: tuple[str, ...] = attrs.field(default=(), metadata=_key(_text_list))
    timeout: timedelta = attrs.field(
        default=timedelta(seconds=60),
        metadata=_key(_positive_duration, check=_TIMEOUT.problem),
    )
    connect_timeout: timedelta = attrs.field(
        default=timedelta(seconds=10),
        metadata=_key(_positive_duration, check=_TIMEOUT.problem),
    )
    max_body_bytes: int = attrs.field(default=20 * _MB, metadata=_key(_integer(1)))
    user_agent: str | None = attrs.field(default=None, metadata=_key(_text))


@attrs.frozen
class HandlerConfig:
    """``[handler]``: what `calsync run` does with a due notification."""

    kind: str = attrs.field(
        default="log", metadata=_key(_choice("log", "webhook", "python"))
    )
    url: str | None = attrs.field(
        default=None, metadata=_key(_webhook_url, url=True), repr=_redact_optional
    )
    secret: str | None = attrs.field(
        default=None, metadata=_key(_text, secret=True), repr=_hide
    )
    secret_env: str | None = attrs.field(default=None, metadata=_key(_env_name))
    target: str | None = attrs.field(default=None, metadata=_key(_target))


@attrs.frozen
class LoggingConfig:
    """``[logging]``: the level and format of `calsync run`'s log lines."""

    level: str = attrs.field(default="INFO", metadata=_key(_log_level))
    format: str = attrs.field(default="text", metadata=_key(_choice("text", "json")))


@attrs.frozen
class CalendarConfig:
    """One ``[[calendars]]`` entry: a calendar `calsync run` makes sure exists.

    Keys left out take the ``[defaults]``.
    """

    url: str = attrs.field(metadata=_key(_feed_url, url=True), repr=_redact_optional)
    name: str | None = attrs.field(default=None, metadata=_key(_text))
    owner: str = attrs.field(default="default", metadata=_key(_text))
    every: str | None = attrs.field(default=None, metadata=_key(_schedule))
    leads: tuple[timedelta, ...] | None = attrs.field(
        default=None, metadata=_key(_leads, check=_leads_check)
    )
    tz: str | None = attrs.field(default=None, metadata=_key(_zone))


_SECTIONS: dict[str, type[Any]] = {
    "store": StoreConfig,
    "defaults": DefaultsConfig,
    "engine": EngineConfig,
    "runner": RunnerConfig,
    "fetch": FetchConfig,
    "handler": HandlerConfig,
    "logging": LoggingConfig,
}


@attrs.frozen
class Config:
    """Everything `calsync` reads from ``calsync.toml`` and the environment.

    ``source`` is the file it was read from (None: defaults and environment only).
    Secrets (the webhook secret, passwords in URLs) never appear in `repr`.
    """

    store: StoreConfig = StoreConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    engine: EngineConfig = EngineConfig()
    runner: RunnerConfig = RunnerConfig()
    fetch: FetchConfig = FetchConfig()
    handler: HandlerConfig = HandlerConfig()
    logging: LoggingConfig = LoggingConfig()
    calendars: tuple[CalendarConfig, ...] = ()
    source: Path | None = None


# -- loading ------------------------------------------------------------------


@attrs.frozen
class _Value:
    """A raw value, where it came from, and its source (the file or the variable)."""

    raw: object
    origin: str
    source: str


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read *path* (a TOML file; None for none), then apply environment overrides.

    *env* defaults to `os.environ`. Raises `ConfigError` naming the bad key.
    """
    env = os.environ if env is None else env
    source = None if path is None else Path(path)
    document = {} if source is None else _read_toml(source)
    file_label = str(source) if source is not None else "config"
    values: dict[str, dict[str, _Value]] = {name: {} for name in _SECTIONS}
    calendars_raw: object = []
    for section, table in document.items():
        if section == "calendars":
            calendars_raw = table
            continue
        place = _Value(table, file_label, file_label)
        _check_known(section, _SECTIONS, place, "section", section)
        if not isinstance(table, dict):
            raise ConfigError(
                f"{file_label}: [{section}] must be a table, like '[{section}]' "
                "followed by key = value lines",
                key=section,
                source=file_label,
            )
        for key, raw in table.items():
            values[section][key] = _Value(
                raw, f"{file_label}: [{section}] {key}", file_label
            )
    _apply_legacy_env(values, env)
    _apply_env(values, env)
    sections = {
        name: _build_section(name, cls, values[name]) for name, cls in _SECTIONS.items()
    }
    handler = _resolve_handler(sections["handler"], values["handler"], env, file_label)
    calendars = _build_calendars(calendars_raw, file_label)
    return Config(
        **{**sections, "handler": handler},
        calendars=calendars,
        source=source,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist: create it, or leave "
            "--config out to use the defaults",
            source=str(path),
        ) from None
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {str(path)!r}: {error.strerror}",
            source=str(path),
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"{path}: not valid TOML: {error}", source=str(path)
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a text file in UTF-8 (byte {error.start + 1} cannot be "
            "read): save it as UTF-8 TOML",
            source=str(path),
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path}: not valid TOML: nested too deeply", source=str(path)
        ) from None


def _check_known(
    name: str, known: Mapping[str, object], where: _Value, what: str, key: str
) -> None:
    """Refuse a section or key calsync does not know, suggesting the closest one."""
    if name in known:
        return
    hint = difflib.get_close_matches(name, list(known), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    expected = ", ".join(sorted(known))
    raise ConfigError(
        f"{where.origin}: unknown {what} {name!r}{suggestion} "
        f"(expected one of: {expected})",
        key=key,
        source=where.source,
    )


def _build_section(name: str, cls: type[Any], values: Mapping[str, _Value]) -> Any:
    """Parse one table's values into its section class, refusing unknown keys."""
    fields = {field.name: field for field in attrs.fields(cls)}
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        _check_known(key, fields, value, "key", f"{name}.{key}")
        parsed[key] = _parse(fields[key], f"{name}.{key}", value)
    return cls(**parsed)


def _parse(field: attrs.Attribute[Any], key: str, value: _Value) -> Any:
    parse: Parser = field.metadata["parse"]
    check: Check | None = field.metadata["check"]
    try:
        parsed = parse(value.raw)
        problem = None if check is None else check(parsed)
    except _Invalid as error:
        problem = str(error)
    if problem is not None:
        raise ConfigError(
            f"{value.origin}: {problem}, got {_shown(field, value.raw)}",
            key=key,
            source=value.source,
        )
    return parsed


def _shown(field: attrs.Attribute[Any], raw: object) -> str:
    """How an error message may show a bad value: never a secret in full."""
    if field.metadata.get("secret"):
        return "a value (hidden)"
    if field.metadata.get("url") and isinstance(raw, str):
        return repr(redact(raw))
    return repr(raw)


def _apply_env(values: dict[str, dict[str, _Value]], env: Mapping[str, str]) -> None:
    """Apply ``CALSYNC_<SECTION>_<KEY>``; variables of other sections are left alone."""
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        if section == "calendars":
            raise ConfigError(
                f"environment variable {name}: [[calendars]] can only be declared "
                "in the config file",
                key="calendars",
                source=name,
            )
        if section not in _SECTIONS or not key:
            continue
        values[section][key] = _Value(
            _EnvText(raw), f"environment variable {name}", name
        )


_LEGACY = {
    "SYNC_INTERVAL_MINUTES": (("defaults", "every"),),
    "NOTIFY_INTERVAL_SECONDS": (
        ("runner", "dispatch_notifications"),
        ("runner", "check_notifications"),
    ),
    "NOTIFY_BEFORE_MINUTES": (("defaults", "leads"),),
}
_LEGACY_FORMS = {
    "SYNC_INTERVAL_MINUTES": "every {}m",
    "NOTIFY_INTERVAL_SECONDS": "every {}s",
    "NOTIFY_BEFORE_MINUTES": "{}m",
}


def _apply_legacy_env(
    values: dict[str, dict[str, _Value]], env: Mapping[str, str]
) -> None:
    """Map the variables older deployments of such services set onto config keys."""
    for name, targets in _LEGACY.items():
        raw = env.get(name)
        if raw is None:
            continue
        numbers = [part.strip() for part in raw.split(",")]
        single = name != "NOTIFY_BEFORE_MINUTES"
        if (single and len(numbers) != 1) or not all(
            re.fullmatch(r"\d+", number) and int(number) > 0 for number in numbers
        ):
            expected = "a whole number > 0" if single else "whole numbers > 0 (10,30)"
            raise ConfigError(
                f"environment variable {name}: expected {expected}, got {raw!r}",
                key=name,
                source=name,
            )
        form = _LEGACY_FORMS[name]
        text = ",".join(form.format(int(number)) for number in numbers)
        for section, key in targets:
            values[section][key] = _Value(
                _EnvText(text), f"environment variable {name}", name
            )


def _resolve_handler(
    handler: HandlerConfig,
    values: Mapping[str, _Value],
    env: Mapping[str, str],
    origin: str,
) -> HandlerConfig:
    """Check the keys each handler kind needs; read ``secret_env`` now."""
    if handler.secret_env is not None and handler.secret is None:
        secret = env.get(handler.secret_env)
        if not secret:
            where = values["secret_env"].origin
            variable_source = values["secret_env"].source
            raise ConfigError(
                f"{where}: environment variable {handler.secret_env} is not set "
                "(or empty): export it with the webhook secret",
                key="handler.secret_env",
                source=variable_source,
            )
        handler = attrs.evolve(handler, secret=secret)
    needed = {
        "webhook": (
            ("url", handler.url, "a webhook URL, like https://example.com/hook"),
            (
                "secret",
                handler.secret,
                "the signing secret (or secret_env, the variable holding it)",
            ),
        ),
        "python": (("target", handler.target, "'package.module:function'"),),
    }
    for key, value, what in needed.get(handler.kind, ()):
        if value is None:
            raise ConfigError(
                f"{origin}: [handler] {key} is required when kind = "
                f"{handler.kind!r}: set it to {what}",
                key=f"handler.{key}",
                source=origin,
            )
    return handler


def _build_calendars(raw: object, origin: str) -> tuple[CalendarConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(
            f"{origin}: calendars must be an array of tables, written "
            '[[calendars]] followed by url = "..."',
            key="calendars",
            source=origin,
        )
    calendars = []
    seen: set[tuple[str, str]] = set()
    for position, table in enumerate(raw, start=1):
        where = f"{origin}: [[calendars]] #{position}"
        if "url" not in table:
            raise ConfigError(
                f'{where}: url is required, like url = "https://example.com/cal.ics"',
                key=f"calendars[{position}].url",
                source=origin,
            )
        values = {
            key: _Value(value, f"{where} {key}", origin) for key, value in table.items()
        }
        calendar = _build_section(f"calendars[{position}]", CalendarConfig, values)
        identity = (calendar.owner, calendar.url)
        if identity in seen:
            raise ConfigError(
                f"{where}: url {redact(calendar.url)!r} is declared twice for owner "
                f"{calendar.owner!r}: remove one of them",
                key=f"calendars[{position}].url",
                source=origin,
            )
        seen.add(identity)
        calendars.append(calendar)
    return tuple(calendars)


# -- builders -----------------------------------------------------------------


def open_store(config: Config) -> Store:
    """Return the store ``[store] url`` names, not yet opened."""
    url = config.store.url
    if url == "memory:":
        from calsync.stores.memory import MemoryStore

        return MemoryStore()
    path = _sqlite_path(url)
    if path is not None:
        from calsync.stores.sqlite import SQLiteStore

        return SQLiteStore(path, secret_keys=config.store.secret_keys)
    if url.startswith(_MARIADB_SCHEMES):
        from calsync.stores.mariadb import MariaDBStore

        return MariaDBStore(
            url, schema=config.store.schema, secret_keys=config.store.secret_keys
        )
    from calsync.stores.postgres import PostgresStore

    return PostgresStore(
        url, schema=config.store.schema, secret_keys=config.store.secret_keys
    )


def build_fetcher(config: Config) -> HttpFetcher:
    """Return the HTTP fetcher ``[fetch]`` describes."""
    from calsync.fetch.http import HttpFetcher

    fetch = config.fetch
    return HttpFetcher(
        allow=fetch.allow,
        connect_timeout=min(fetch.connect_timeout, fetch.timeout),
        total_timeout=fetch.timeout,
        max_body_bytes=fetch.max_body_bytes,
        max_decompressed_bytes=max(fetch.max_body_bytes, 20 * _MB),
        user_agent=fetch.user_agent,
    )


_SETTINGS_KEYS = (
    "worker",
    "sync_concurrency",
    "per_host_concurrency",
    "per_host_rate",
    "lease_ttl",
    "parse_timeout",
    "max_occurrences",
    "reparse_after",
    "late_grace",
    "alarm_lookahead",
    "mass_deletion_min",
    "mass_deletion_fraction",
    "dispatch_batch",
    "dispatch_concurrency",
    "handler_timeout",
    "max_attempts",
    "keep_expired_occurrences",
    "keep_notifications",
    "keep_job_runs",
    "stale_factor",
    "parse_cache_size",
    "parse_concurrency",
    "parse_isolation",
)


def build_settings(config: Config) -> Settings:
    """Return the Engine `Settings` of ``[engine]``; keys left out keep the defaults.

    Raises `ConfigError` when the values do not fit together (a parse timeout
    longer than the lease, say).
    """
    from calsync.core.settings import Settings

    engine = config.engine
    defaults = Settings()
    changes: dict[str, Any] = {
        key: getattr(engine, key)
        for key in _SETTINGS_KEYS
        if getattr(engine, key) is not None
    }
    if engine.per_host_rate == 0:
        changes["per_host_rate"] = None
    if engine.parse_memory_limit is not None:
        changes["parse_memory_limit"] = engine.parse_memory_limit or None
    retry = _changed(
        base=engine.retry_base,
        cap=engine.retry_cap,
        max_retry_after=engine.retry_max_after,
    )
    if retry:
        changes["retry"] = attrs.evolve(defaults.retry, **retry)
    breaker = _changed(
        failure_threshold=engine.breaker_threshold,
        cool_down=engine.breaker_cool_down,
        probe_timeout=engine.breaker_probe_timeout,
    )
    if breaker:
        changes["breaker"] = attrs.evolve(defaults.breaker, **breaker)
    delivery = _changed(base=engine.delivery_retry_base, cap=engine.delivery_retry_cap)
    if delivery:
        changes["delivery_retry"] = attrs.evolve(defaults.delivery_retry, **delivery)
    try:
        return attrs.evolve(defaults, **changes)
    except ValidationError as error:
        origin = str(config.source) if config.source is not None else "config"
        raise ConfigError(
            f"{origin}: [engine] settings do not fit together: {error}",
            key="engine",
            source=origin,
        ) from None


def _changed(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def build_handler(config: Config) -> Handler:
    """Return the handler ``[handler]`` describes; a python target is imported now.

    Raises `ConfigError` naming ``handler.target`` when it cannot be imported.
    """
    from calsync import handlers as _handlers

    handler = config.handler
    if handler.kind == "webhook":
        assert handler.url is not None
        assert handler.secret is not None
        webhook: Handler = _handlers.WebhookHandler(
            handler.url, handler.secret, allow=config.fetch.allow
        )
        return webhook
    if handler.kind == "python":
        assert handler.target is not None
        return _import_target(handler.target)
    logging_handler: Handler = _handlers.LoggingHandler()
    return logging_handler


def _import_target(target: str) -> Handler:
    module_name, _, attribute = target.partition(":")
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"[handler] target {target!r}: cannot import module {module_name!r} "
            f"({error}); is it installed, or on PYTHONPATH?",
            key="handler.target",
        ) from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(
                f"[handler] target {target!r}: module {module_name!r} has no "
                f"attribute {attribute!r}",
                key="handler.target",
            ) from None
    if not callable(found):
        raise ConfigError(
            f"[handler] target {target!r} is not callable: point it at a function "
            "that takes a Delivery",
            key="handler.target",
        )
    handler: Handler = found
    return handler


def build_engine(config: Config) -> Engine:
    """Return an Engine over the configured store and fetcher, for ``async with``."""
    from calsync.engine.service import Engine

    return Engine(
        open_store(config), build_fetcher(config), settings=build_settings(config)
    )
