"""`calsync.toml` and ``CALSYNC_*`` variables, read into `Settings`, `Triggers` and co.

The sections are attrs classes and `cattrs` structures each table into its class:
a field's type says how its value is written, its attrs validator says which
values fit (asked first, for the error line), and ``metadata={"kind": ...}``
names a special reading (a schedule, a zone, a URL). So the keys of a section,
its ``CALSYNC_<SECTION>_<KEY>`` variables and their checks all come from the
class: a new `Settings` field is a new ``[engine]`` key with no edit here. A field
holding an attrs class (``retry``) is read as flat keys (``retry_cap``).

Values are read from the TOML file, then from the older variables in `ALIASES`,
then from ``CALSYNC_<SECTION>_<KEY>``; a later source wins. Every bad or unknown
key raises `ConfigError` naming the key, where it came from and what is expected.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote
from cattrs.gen import make_dict_structure_fn, override

from calsync.core.durations import DurationTooLong, Span, parse_duration
from calsync.core.errors import ValidationError
from calsync.core.redact import is_conninfo, redact
from calsync.core.schedule import schedule_or_interval
from calsync.core.settings import Checked, Count, HttpSettings, Settings, span_problem
from calsync.core.zones import resolve_zone
from calsync.engine.runner import Triggers
from calsync.fetch.http import HttpFetcher
from calsync.fetch.ssrf import host_problem
from calsync.stores.records import CALENDAR_SPANS, Calendar

if TYPE_CHECKING:
    from calsync.engine.service import Engine
    from calsync.handlers.delivery import Handler
    from calsync.stores.store import Store

__all__ = [
    "ALIASES",
    "Alias",
    "CalendarConfig",
    "Config",
    "ConfigError",
    "DefaultsConfig",
    "FetchConfig",
    "HandlerConfig",
    "LoggingConfig",
    "StoreConfig",
    "build_engine",
    "build_fetcher",
    "build_handler",
    "build_settings",
    "keys_of",
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


class _Invalid(ValidationError):
    """A value does not fit its key; the loader adds the key and the source."""


class _Said(ValidationError):
    """A field's own validator refused a value, in words that already show it."""


class _PartInvalid(ValidationError):
    """A part of a nested value (``cap`` of ``retry``) does not fit."""

    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


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


_QUOTED_NUMBER = "expected a number, written without quotes"


def _integer(value: object) -> int:
    if isinstance(value, _EnvText) and re.fullmatch(
        r"\s*[+-]?[0-9]{1,18}\s*", value, re.ASCII
    ):
        value = int(value)
    if isinstance(value, str) and not isinstance(value, _EnvText):
        raise _Invalid(f"{_QUOTED_NUMBER}, like max_attempts = 8")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid("expected a whole number")
    return value


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


def _url(text: str, schemes: set[str], expected: str) -> str:
    """Check a URL's scheme, that it has a host, and that the SSRF guard allows it."""
    try:
        parts = urlsplit(text)
        host, scheme = parts.hostname, parts.scheme.lower()
    except ValueError:  # a broken [IPv6] host or port
        raise _Invalid(expected) from None
    if scheme not in schemes:
        raise _Invalid(expected)
    if scheme != "file" and not host:
        raise _Invalid(f"{expected}, with a host")
    problem = None if host is None else host_problem(host)
    if problem is not None:
        raise _Invalid(f"the host {problem}")
    return text


def _feed_url(value: object) -> str:
    schemes = {"http", "https", "webcal", "webcals", "file"}
    return _url(_text(value), schemes, "expected an http://, https:// or webcal:// URL")


def _webhook_url(value: object) -> str:
    return _url(_text(value), {"http", "https"}, "expected an http:// or https:// URL")


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


# -- how each type and kind is read --------------------------------------------

_KINDS: dict[str, Parser] = {"schedule": _schedule, "zone": _zone}
"""Readings a model outside this module names in ``metadata={"kind": ...}``."""

_READERS: dict[object, Parser] = {
    str: _text,
    int: _integer,
    float: _number,
    bool: _boolean,
    timedelta: _duration,
    tuple[str, ...]: _text_list,
    tuple[timedelta, ...]: _leads,
}
"""How a value of each type is written in TOML or a variable."""


def _read(raw: object, cls: object) -> Any:
    return _READERS[cls](raw)


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
for _type in (str, int, float, bool, timedelta):  # ahead of cattrs' own
    _converter.register_structure_hook(_type, _read)
_converter.register_structure_hook_func(lambda cls: cls in _READERS, _read)


def _optional_number(cls: object) -> bool:
    """Whether *cls* is ``int | None`` or ``float | None``: TOML writes None as 0."""
    options = typing.get_args(cls) if isinstance(cls, types.UnionType) else ()
    return type(None) in options and bool({int, float} & set(options))


def _field_hook(field: attrs.Attribute[Any]) -> Callable[[Any, Any], Any]:
    """Return how one field is read: its type or kind, then its validator's rule."""
    if _nested(field):
        return _nested_hook(field)
    kind = field.metadata.get("kind")
    parse: Parser | None = _KINDS[kind] if isinstance(kind, str) else kind
    rule = getattr(field.validator, "problem", None)
    none_as_zero = _optional_number(field.type)

    def hook(raw: object, cls: Any) -> Any:
        value = _converter.structure(raw, cls) if parse is None else parse(raw)
        if none_as_zero and value == 0:
            value = None
        if rule is None:
            _validate(field, value)
        elif (problem := rule(field.name, value)) is not None:
            raise _Invalid(problem + (" (0 turns it off)" if none_as_zero else ""))
        return value

    return hook


def _validate(field: attrs.Attribute[Any], value: object) -> None:
    """Run a validator without a `Checked` rule now, so its error names the key."""
    if field.validator is None or field.metadata.get("secret"):
        return
    try:
        field.validator(None, field, value)
    except (ValidationError, ValueError, TypeError) as error:
        raise _Said(str(error)) from None
    except Exception:  # it reads other fields: checked when the object is built
        return


def _nested(field: attrs.Attribute[Any]) -> bool:
    return field.type is not None and attrs.has(field.type)


def _nested_hook(field: attrs.Attribute[Any]) -> Callable[[Any, Any], Any]:
    """Read a nested policy's parts into a copy of the field's default."""
    default: Any = field.default
    rule = getattr(field.validator, "problem", None)

    def hook(raw: Mapping[str, object], cls: Any) -> Any:
        nested = default.factory() if hasattr(default, "factory") else default
        for part in attrs.fields(attrs.resolve_types(cls)):
            if part.name not in raw:
                continue
            try:
                value = _converter.structure(raw[part.name], part.type)
                name = f"{field.name}.{part.name}"
                problem = None if rule is None else rule(name, value)
                if problem is not None:
                    raise _Invalid(problem)
                nested = attrs.evolve(nested, **{part.name: value})
            except ValidationError as error:
                raise _PartInvalid(str(error), part.name) from None
        return nested

    return hook


def _class_hook(cls: type[Any]) -> Callable[[Mapping[str, Any], Any], Any]:
    fields = attrs.fields(attrs.resolve_types(cls))
    hooks = {f.name: override(struct_hook=_field_hook(f)) for f in fields if f.init}
    return make_dict_structure_fn(cls, _converter, **hooks)  # type: ignore[arg-type]


_converter.register_structure_hook_factory(attrs.has, _class_hook)


def keys_of(cls: type[Any]) -> dict[str, tuple[str, ...]]:
    """Return each key a section of *cls* accepts and the field path it sets.

    A field holding an attrs class gives one flat key per part (``retry_cap``).
    """
    keys: dict[str, tuple[str, ...]] = {}
    for field in attrs.fields(attrs.resolve_types(cls)):
        if not field.init:
            continue
        if _nested(field):
            for part in attrs.fields(attrs.resolve_types(field.type)):
                keys[f"{field.name}_{part.name}"] = (field.name, part.name)
        else:
            keys[field.name] = (field.name,)
    return keys


# -- sections -----------------------------------------------------------------


def _kind(parse: Parser, *, secret: bool = False, url: bool = False) -> dict[str, Any]:
    """Return a config-only field's metadata: its reading and how it is shown."""
    return {"kind": parse, "secret": secret, "url": url}


def _leads_problem(name: str, leads: tuple[timedelta, ...]) -> str | None:
    span = CALENDAR_SPANS["leads"]
    problems = (span.problem(lead) for lead in leads)
    return next((f"each lead {p}" for p in problems if p is not None), None)


_TIMEOUT = Span(timedelta(hours=1), zero_ok=False)
_BODY = Count(1, 2**53)


def _hide(value: object) -> str:
    return "None" if value is None else _HIDDEN


def _redact_optional(value: object) -> str:
    return "None" if value is None else repr(redact(str(value)))


@attrs.frozen
class StoreConfig:
    """``[store]``: where calsync keeps its state."""

    url: str = attrs.field(
        default="sqlite:///calsync.db",
        metadata=_kind(_store_url, url=True),
        repr=_redact_optional,
    )
    schema: str = "calsync"
    secret_keys: tuple[str, ...] = attrs.field(
        default=(), metadata={"secret": True}, repr=_hide
    )


_CALENDAR = attrs.fields(Calendar)


@attrs.frozen
class DefaultsConfig:
    """``[defaults]``: settings of calendars added without their own.

    Left out, each is the `Calendar` default (``tz`` UTC).
    """

    every: str = attrs.field(
        default=_CALENDAR.schedule.default, metadata={"kind": "schedule"}
    )
    leads: tuple[timedelta, ...] = attrs.field(
        default=_CALENDAR.leads.default, validator=Checked(_leads_problem)
    )
    tz: str = attrs.field(default="UTC", metadata={"kind": "zone"})


@attrs.frozen
class CalendarConfig(DefaultsConfig):
    """One ``[[calendars]]`` entry: a calendar `calsync run` makes sure exists.

    Keys left out take the ``[defaults]``.
    """

    url: str = attrs.field(
        kw_only=True, metadata=_kind(_feed_url, url=True), repr=_redact_optional
    )
    name: str | None = attrs.field(default=None, kw_only=True)
    owner: str = attrs.field(default=_CALENDAR.owner.default, kw_only=True)


_FETCHER = inspect.signature(HttpFetcher).parameters


def _timeout(name: str, value: object) -> str | None:
    return span_problem(_TIMEOUT, value)


@attrs.frozen
class FetchConfig:
    """``[fetch]``: the HTTP fetcher's allow-list, timeouts and size cap.

    Left out, each is the `HttpFetcher` default.
    """

    allow: tuple[str, ...] = ()
    timeout: timedelta = attrs.field(
        default=_FETCHER["total_timeout"].default, validator=Checked(_timeout)
    )
    connect_timeout: timedelta = attrs.field(
        default=_FETCHER["connect_timeout"].default, validator=Checked(_timeout)
    )
    max_body_bytes: int = attrs.field(
        default=_FETCHER["max_body_bytes"].default,
        validator=Checked(lambda name, value: _BODY.problem(value)),
    )
    user_agent: str | None = None


@attrs.frozen
class HandlerConfig:
    """``[handler]``: what `calsync run` does with a due notification."""

    kind: str = attrs.field(
        default="log", metadata=_kind(_choice("log", "webhook", "python"))
    )
    url: str | None = attrs.field(
        default=None, metadata=_kind(_webhook_url, url=True), repr=_redact_optional
    )
    secret: str | None = attrs.field(
        default=None, metadata={"secret": True}, repr=_hide
    )
    secret_env: str | None = attrs.field(default=None, metadata=_kind(_env_name))
    target: str | None = attrs.field(default=None, metadata=_kind(_target))


@attrs.frozen
class LoggingConfig:
    """``[logging]``: the level and format of `calsync run`'s log lines."""

    level: str = attrs.field(default="INFO", metadata=_kind(_log_level))
    format: str = attrs.field(default="text", metadata=_kind(_choice("text", "json")))


@attrs.frozen
class Config:
    """Everything `calsync` reads from ``calsync.toml`` and the environment.

    ``engine`` is the Engine's `Settings` and ``runner`` the runner's `Triggers`.
    ``source`` is the file it was read from (None: defaults and environment only).
    Secrets (the webhook secret, passwords in URLs) never appear in `repr`.
    """

    store: StoreConfig = attrs.field(factory=StoreConfig)
    defaults: DefaultsConfig = attrs.field(factory=DefaultsConfig)
    engine: Settings = attrs.field(factory=Settings)
    runner: Triggers = attrs.field(factory=Triggers)
    fetch: FetchConfig = attrs.field(factory=FetchConfig)
    handler: HandlerConfig = attrs.field(factory=HandlerConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    http: HttpSettings = attrs.field(factory=HttpSettings)
    calendars: tuple[CalendarConfig, ...] = ()
    source: Path | None = None


_SECTIONS: dict[str, Any] = {
    field.name: field.type
    for field in attrs.fields(attrs.resolve_types(Config))
    if _nested(field)
}


@attrs.frozen
class Alias:
    """Another name for config keys: an older variable, or an older key's spelling.

    A variable with a ``form`` holds whole numbers, each written into ``form``
    (``"every {}m"``); ``several`` allows a comma-separated list of them.
    """

    keys: tuple[str, ...]
    form: str | None = None
    several: bool = False


ALIASES: dict[str, Alias] = {
    # Variables older deployments of such services set.
    "SYNC_INTERVAL_MINUTES": Alias(("defaults.every",), "every {}m"),
    "NOTIFY_INTERVAL_SECONDS": Alias(
        ("runner.dispatch_notifications", "runner.check_notifications"), "every {}s"
    ),
    "NOTIFY_BEFORE_MINUTES": Alias(("defaults.leads",), "{}m", several=True),
    # [engine] keys as spelled before they were named after the Settings fields.
    "engine.retry_max_after": Alias(("engine.retry_max_retry_after",)),
    "engine.breaker_threshold": Alias(("engine.breaker_failure_threshold",)),
}
"""Every other name calsync reads, and the keys it stands for; a later source wins."""


# -- loading ------------------------------------------------------------------


@attrs.frozen
class _Value:
    """A raw value, where it came from, and its source (the file or the variable)."""

    raw: object
    origin: str
    source: str


Values = dict[str, _Value]


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
    label = str(source) if source is not None else "config"
    values, calendars_raw = _collect(document, env, label, _SECTIONS)
    sections = {
        name: _structure(name, cls, values[name], label)
        for name, cls in _SECTIONS.items()
    }
    handler = _resolve_handler(sections["handler"], values["handler"], env, label)
    calendars = _build_calendars(calendars_raw, label, values["defaults"])
    return Config(
        **{**sections, "handler": handler}, calendars=calendars, source=source
    )


def _collect(
    document: Mapping[str, object],
    env: Mapping[str, str],
    label: str,
    sections: Mapping[str, type[Any]],
) -> tuple[dict[str, Values], object]:
    """Gather each section's raw values from the file and the variables, by key."""
    values: dict[str, Values] = {name: {} for name in sections}
    calendars: object = []
    for section, table in document.items():
        if section == "calendars":
            calendars = table
            continue
        _check_known(section, sections, _Value(table, label, label), "section", section)
        if not isinstance(table, dict):
            raise ConfigError(
                f"{label}: [{section}] must be a table, like '[{section}]' "
                "followed by key = value lines",
                key=section,
                source=label,
            )
        for key, raw in table.items():
            where = _Value(raw, f"{label}: [{section}] {key}", label)
            _put(values, section, sections[section], key, where)
    _apply_aliased_variables(values, env)
    _apply_env(values, env, sections)
    return values, calendars


def _put(
    values: dict[str, Values], section: str, cls: type[Any], key: str, value: _Value
) -> None:
    """Set *key* of *section*, or the keys its alias names; refuse unknown keys."""
    alias = ALIASES.get(f"{section}.{key}")
    for target in alias.keys if alias else (f"{section}.{key}",):
        name = target.partition(".")[2]
        _check_known(name, keys_of(cls), value, "key", f"{section}.{name}")
        values[section][name] = value


def _structure(section: str, cls: type[Any], values: Values, label: str) -> Any:
    """Read one section's values into *cls* with cattrs; a bad value is one line."""
    keys = keys_of(cls)
    document: dict[str, Any] = {}
    for key, value in values.items():
        field, *part = keys[key]
        if part:
            document.setdefault(field, {})[part[0]] = value.raw
        else:
            document[field] = value.raw
    try:
        return _converter.structure(document, cls)
    except Exception as error:  # cattrs groups the problems; the first is shown
        raise _config_error(section, cls, values, label, error) from None


def _config_error(
    section: str, cls: type[Any], values: Values, label: str, error: BaseException
) -> ConfigError:
    """Name the key of the first problem cattrs found, where it came from, and why."""
    path: list[str] = []
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
        notes = getattr(error, "__notes__", ())
        path += [n.name for n in notes if isinstance(n, AttributeValidationNote)][:1]
    if isinstance(error, _PartInvalid):
        path.append(error.part)
    problem = str(error) if isinstance(error, ValidationError) else "cannot be read"
    value = values.get("_".join(path))
    if value is None:  # the values do not fit together
        return ConfigError(
            f"{label}: [{section}] settings do not fit together: {problem}",
            key=section,
            source=label,
        )
    metadata = attrs.fields_dict(cls)[path[0]].metadata
    got = "" if isinstance(error, _Said) else f", got {_shown(metadata, value.raw)}"
    return ConfigError(
        f"{value.origin}: {problem}{got}",
        key=f"{section}.{'_'.join(path)}",
        source=value.source,
    )


def _shown(metadata: Mapping[str, Any], raw: object) -> str:
    """How an error message may show a bad value: never a secret in full."""
    if metadata.get("secret"):
        return "a value (hidden)"
    if metadata.get("url") and isinstance(raw, str):
        shown = redact(raw)
        if re.search(r"password\s*=\s*(?!\*\*\*)", shown, re.IGNORECASE):
            return "a value (hidden: it names a password)"
        return repr(shown)
    return repr(raw)


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


def _apply_env(
    values: dict[str, Values], env: Mapping[str, str], sections: Mapping[str, type[Any]]
) -> None:
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
        if section in sections and key:
            where = _Value(_EnvText(raw), f"environment variable {name}", name)
            _put(values, section, sections[section], key, where)


def _apply_aliased_variables(values: dict[str, Values], env: Mapping[str, str]) -> None:
    """Map the variables in `ALIASES` (whole numbers) onto their config keys."""
    for name, alias in ALIASES.items():
        raw = env.get(name)
        if raw is None or alias.form is None:
            continue
        numbers = [part.strip() for part in raw.split(",")]
        if (not alias.several and len(numbers) != 1) or not all(
            re.fullmatch(r"\d+", number) and int(number) > 0 for number in numbers
        ):
            expected = (
                "whole numbers > 0 (10,30)" if alias.several else "a whole number > 0"
            )
            raise ConfigError(
                f"environment variable {name}: expected {expected}, got {raw!r}",
                key=name,
                source=name,
            )
        text = ",".join(alias.form.format(int(number)) for number in numbers)
        for target in alias.keys:
            section, _, key = target.partition(".")
            origin = f"environment variable {name}"
            values[section][key] = _Value(_EnvText(text), origin, name)


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


def _build_calendars(
    raw: object, origin: str, defaults: Values
) -> tuple[CalendarConfig, ...]:
    """Read each ``[[calendars]]`` table; a key it leaves out takes ``[defaults]``."""
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
        section = f"calendars[{position}]"
        if "url" not in table:
            raise ConfigError(
                f'{where}: url is required, like url = "https://example.com/cal.ics"',
                key=f"{section}.url",
                source=origin,
            )
        values = {section: dict(defaults)}
        for key, value in table.items():
            place = _Value(value, f"{where} {key}", origin)
            _put(values, section, CalendarConfig, key, place)
        calendar = _structure(section, CalendarConfig, values[section], origin)
        identity = (calendar.owner, calendar.url)
        if identity in seen:
            raise ConfigError(
                f"{where}: url {redact(calendar.url)!r} is declared twice for owner "
                f"{calendar.owner!r}: remove one of them",
                key=f"{section}.url",
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
    fetch = config.fetch
    return HttpFetcher(
        allow=fetch.allow,
        connect_timeout=min(fetch.connect_timeout, fetch.timeout),
        total_timeout=fetch.timeout,
        max_body_bytes=fetch.max_body_bytes,
        max_decompressed_bytes=max(fetch.max_body_bytes, 20 * _MB),
        user_agent=fetch.user_agent,
    )


def build_settings(config: Config) -> Settings:
    """Return the Engine `Settings` of ``[engine]`` (read and checked when loaded)."""
    return config.engine


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
