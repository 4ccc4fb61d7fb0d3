"""calsync.toml and CALSYNC_* variables: defaults, overrides, legacy names, errors."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

import calsync.config as config_module
from calsync import (
    Calendar,
    HttpFetcher,
    MemoryStore,
    PostgresStore,
    Settings,
    SQLiteStore,
)
from calsync.config import (
    ALIASES,
    Config,
    ConfigError,
    build_engine,
    build_fetcher,
    build_handler,
    build_settings,
    keys_of,
    load_config,
    open_store,
)
from calsync.core import CircuitBreaker, RetryPolicy
from calsync.core.durations import format_duration, parse_duration
from calsync.core.errors import CalsyncError, ValidationError
from calsync.core.settings import Checked, Count
from calsync.engine.runner import Triggers
from calsync.engine.service import Engine
from calsync.handlers import LoggingHandler, WebhookHandler

SECRET = "whsec_czNjcjN0LXZhbHVlLTQyLWJ5dGVzLWxvbmc="


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calsync.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **env: str) -> Config:
    return load_config(write(tmp_path, text), env=env)


def test_defaults_without_a_file_or_environment() -> None:
    config = load_config(None, env={})
    assert config.source is None
    assert config.store.url == "sqlite:///calsync.db"
    assert config.store.schema == "calsync"
    assert config.defaults.every == "every 15m"
    assert config.defaults.leads == (timedelta(minutes=10),)
    assert config.defaults.tz == "UTC"
    assert config.runner.sync_due == "every 30s"
    assert config.runner.check_notifications == "every 60s"
    assert config.runner.dispatch_notifications == "every 10s"
    assert config.runner.cleanup == "daily 03:00"
    assert config.handler.kind == "log"
    assert config.logging.level == "INFO"
    assert config.logging.format == "text"
    assert config.calendars == ()


def test_a_full_file_is_read_into_typed_values(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [store]
        url = "postgresql://calsync@db.internal/calsync"
        schema = "reminders"

        [defaults]
        every = "every 30m"
        leads = ["1h", "10m"]
        tz = "Europe/Berlin"

        [engine]
        late_grace = "5m"
        sync_concurrency = 4
        max_attempts = 3
        per_host_rate = 0.5
        mass_deletion_fraction = 0.75

        [runner]
        sync_due = "every 1m"
        cleanup = "daily 04:30"
        tz = "Europe/Berlin"

        [fetch]
        allow = ["127.0.0.1", "*.corp.example"]
        timeout = "30s"
        max_body_bytes = 1048576
        user_agent = "acme-reminders/1.0"

        [handler]
        kind = "webhook"
        url = "https://hooks.example.com/calsync"
        secret = "whsec_czNjcjN0LXZhbHVlLTQyLWJ5dGVzLWxvbmc="

        [logging]
        level = "debug"
        format = "json"

        [[calendars]]
        url = "https://example.com/team.ics"
        name = "Team"
        leads = ["15m"]

        [[calendars]]
        url = "webcal://example.com/holidays.ics"
        every = "daily 06:00"
        tz = "America/New_York"
        """,
    )
    assert config.store.url == "postgresql://calsync@db.internal/calsync"
    assert config.store.schema == "reminders"
    assert config.defaults.leads == (timedelta(minutes=10), timedelta(hours=1))
    assert config.defaults.tz == "Europe/Berlin"
    assert config.engine.late_grace == timedelta(minutes=5)
    assert config.engine.sync_concurrency == 4
    assert config.engine.per_host_rate == 0.5
    assert config.engine.lease_ttl == Settings().lease_ttl
    assert config.runner.sync_due == "every 1m"
    assert config.runner.cleanup == "daily 04:30"
    assert config.fetch.allow == ("127.0.0.1", "*.corp.example")
    assert config.fetch.timeout == timedelta(seconds=30)
    assert config.handler.kind == "webhook"
    assert config.handler.secret == SECRET
    assert config.logging.level == "DEBUG"
    assert config.logging.format == "json"
    team, holidays = config.calendars
    assert (team.name, team.leads, team.every, team.owner) == (
        "Team",
        (timedelta(minutes=15),),
        "every 30m",
        "default",
    )
    assert (holidays.every, holidays.tz) == ("daily 06:00", "America/New_York")


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("15m", "every 15m"),
        ("1h30m", "every 90m"),
        ("2d", "every 2d"),
        ("EVERY 5M", "every 5m"),
        ("cron */5 * * * *", "cron */5 * * * *"),
        ("weekly mon,thu 18:00", "weekly mon,thu 18:00"),
    ],
)
def test_schedules_accept_a_bare_interval(
    tmp_path: Path, written: str, normalized: str
) -> None:
    config = load(tmp_path, f'[defaults]\nevery = "{written}"\n')
    assert config.defaults.every == normalized


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [store]
        url = "sqlite:///from-file.db"
        [engine]
        late_grace = "1m"
        """,
        CALSYNC_STORE_URL="memory:",
        CALSYNC_ENGINE_LATE_GRACE="2m",
        CALSYNC_ENGINE_MAX_ATTEMPTS="4",
        CALSYNC_DEFAULTS_LEADS="10m, 1h",
        CALSYNC_FETCH_ALLOW="127.0.0.1,::1",
        CALSYNC_FETCH_MAX_BODY_BYTES="1000",
        CALSYNC_HANDLER_KIND="webhook",
        CALSYNC_HANDLER_URL="https://hooks.example.com/x",
        CALSYNC_HANDLER_SECRET=SECRET,
        CALSYNC_LOGGING_FORMAT="JSON",
    )
    assert config.store.url == "memory:"
    assert config.engine.late_grace == timedelta(minutes=2)
    assert config.engine.max_attempts == 4
    assert config.defaults.leads == (timedelta(minutes=10), timedelta(hours=1))
    assert config.fetch.allow == ("127.0.0.1", "::1")
    assert config.fetch.max_body_bytes == 1000
    assert config.handler.secret == SECRET
    assert config.logging.format == "json"


def test_variables_of_other_calsync_tools_are_left_alone() -> None:
    config = load_config(
        None,
        env={
            "CALSYNC_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1/test",
            "CALSYNC_CONFIG": "elsewhere.toml",
            "CALSYNC_CRASH_ROWS": "20",
        },
    )
    worker = {"engine": attrs.evolve(config.engine, worker="w")}
    assert attrs.evolve(config, **worker) == attrs.evolve(
        load_config(None, env={}), **worker
    )


def test_legacy_variables_map_onto_their_keys() -> None:
    config = load_config(
        None,
        env={
            "SYNC_INTERVAL_MINUTES": "5",
            "NOTIFY_INTERVAL_SECONDS": "20",
            "NOTIFY_BEFORE_MINUTES": "15",
        },
    )
    assert config.defaults.every == "every 5m"
    assert config.runner.dispatch_notifications == "every 20s"
    assert config.runner.check_notifications == "every 20s"
    assert config.defaults.leads == (timedelta(minutes=15),)


def test_legacy_lead_minutes_may_list_several() -> None:
    config = load_config(None, env={"NOTIFY_BEFORE_MINUTES": "60,10"})
    assert config.defaults.leads == (timedelta(minutes=10), timedelta(hours=1))


def test_calsync_variables_win_over_legacy_ones(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[defaults]\nevery = "every 1h"\n',
        SYNC_INTERVAL_MINUTES="5",
        CALSYNC_DEFAULTS_EVERY="every 2m",
    )
    assert config.defaults.every == "every 2m"


def test_legacy_variables_win_over_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path, '[defaults]\nevery = "every 1h"\n', SYNC_INTERVAL_MINUTES="5"
    )
    assert config.defaults.every == "every 5m"


def test_webhook_secret_can_come_from_a_named_variable(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [handler]
        kind = "webhook"
        url = "https://hooks.example.com/x"
        secret_env = "HOOK_SECRET"
        """,
        HOOK_SECRET=SECRET,
    )
    assert config.handler.secret == SECRET


# -- errors --------------------------------------------------------------------

FILE_ERRORS = [
    ('[engine]\nlate_grace = "soon"\n', "engine.late_grace", "duration"),
    ("[engine]\nlate_grace = 5\n", "engine.late_grace", "duration"),
    ('[engine]\nlate_grac = "5m"\n', "engine.late_grac", "did you mean 'late_grace'"),
    ("[engine]\nsync_concurrency = 0\n", "engine.sync_concurrency", ">= 1"),
    ("[engine]\nsync_concurrency = true\n", "engine.sync_concurrency", "whole number"),
    (
        "[engine]\nmass_deletion_fraction = 2\n",
        "engine.mass_deletion_fraction",
        "at most 1",
    ),
    ('[engine]\nlease_ttl = "0s"\n', "engine.lease_ttl", "greater than zero"),
    ('[engin]\nlate_grace = "5m"\n', "engin", "did you mean 'engine'"),
    ("engine = 3\n", "engine", "must be a table"),
    ('[defaults]\nevery = "sometimes"\n', "defaults.every", "unknown keyword"),
    ('[defaults]\nevery = "every 0m"\n', "defaults.every", "positive"),
    ('[defaults]\nleads = ["10 minutes"]\n', "defaults.leads", "'10 minutes'"),
    ("[defaults]\nleads = []\n", "defaults.leads", "at least one"),
    ('[defaults]\ntz = "Mars/Olympus"\n', "defaults.tz", "IANA"),
    ('[runner]\ncleanup = "daily 25:00"\n', "runner.cleanup", "hour 25"),
    ('[store]\nurl = "calsync.db"\n', "store.url", "sqlite:///calsync.db"),
    (
        '[fetch]\nallow = "127.0.0.1"\nmax_body_bytes = -1\n',
        "fetch.max_body_bytes",
        ">= 1",
    ),
    ("[fetch]\nallow = [1]\n", "fetch.allow", "list of strings"),
    ('[handler]\nkind = "email"\n', "handler.kind", "'log' or 'webhook' or 'python'"),
    ('[handler]\nkind = "webhook"\nsecret = "x"\n', "handler.url", "required"),
    (
        '[handler]\nkind = "webhook"\nurl = "https://h.example/x"\n',
        "handler.secret",
        "required",
    ),
    ('[handler]\nkind = "webhook"\nurl = "ftp://h.example/x"\n', "handler.url", "http"),
    ('[handler]\nkind = "python"\n', "handler.target", "required"),
    (
        '[handler]\nkind = "python"\ntarget = "app.hooks"\n',
        "handler.target",
        "module:function",
    ),
    ('[logging]\nlevel = "loud"\n', "logging.level", "'info'"),
    ('[[calendars]]\nname = "No URL"\n', "calendars[1].url", "url is required"),
    ('[[calendars]]\nurl = "example.com/cal.ics"\n', "calendars[1].url", "webcal://"),
    (
        '[[calendars]]\nurl = "https://e.example/c.ics"\nlead = ["5m"]\n',
        "calendars[1].lead",
        "leads",
    ),
    (
        '[[calendars]]\nurl = "https://e.example/c.ics"\n'
        '[[calendars]]\nurl = "https://e.example/c.ics"\n',
        "calendars[2].url",
        "declared twice",
    ),
    ('calendars = "https://e.example/c.ics"\n', "calendars", "array of tables"),
]


@pytest.mark.parametrize(("text", "key", "expected"), FILE_ERRORS)
def test_every_bad_file_value_names_its_key_and_the_file(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    error = caught.value
    assert error.key == key
    assert error.source == str(path)
    assert str(path) in str(error)
    assert expected in str(error)
    assert isinstance(error, ValidationError)
    assert isinstance(error, CalsyncError)


ENV_ERRORS = [
    (
        {"CALSYNC_ENGINE_LATE_GRACE": "soon"},
        "engine.late_grace",
        "CALSYNC_ENGINE_LATE_GRACE",
    ),
    ({"CALSYNC_ENGINE_MAX_ATTEMPTS": "many"}, "engine.max_attempts", "whole number"),
    (
        {"CALSYNC_ENGINE_LATE_GRAC": "5m"},
        "engine.late_grac",
        "did you mean 'late_grace'",
    ),
    (
        {"CALSYNC_STORE_URL": "mongodb://u:pa55w0rd@db/x"},
        "store.url",
        "mongodb://***@db/x",
    ),
    ({"CALSYNC_CALENDARS_URL": "https://x.example"}, "calendars", "config file"),
    ({"SYNC_INTERVAL_MINUTES": "0"}, "SYNC_INTERVAL_MINUTES", "whole number > 0"),
    ({"NOTIFY_INTERVAL_SECONDS": "1m"}, "NOTIFY_INTERVAL_SECONDS", "'1m'"),
    ({"NOTIFY_BEFORE_MINUTES": "ten"}, "NOTIFY_BEFORE_MINUTES", "whole numbers"),
]


@pytest.mark.parametrize(("env", "key", "expected"), ENV_ERRORS)
def test_every_bad_variable_names_its_key_and_the_variable(
    env: dict[str, str], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env=env)
    (variable,) = env
    assert caught.value.key == key
    assert caught.value.source == variable
    assert f"environment variable {variable}" in str(caught.value)
    assert expected in str(caught.value)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[engine]\nlate_grace = "5m\n')
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_config(path, env={})


def test_an_unset_secret_variable_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[handler]\nkind = "webhook"\nurl = "https://h.example/x"\n'
        'secret_env = "HOOK"\n',
    )
    with pytest.raises(ConfigError, match="HOOK is not set") as caught:
        load_config(path, env={})
    assert caught.value.key == "handler.secret_env"


# -- secrets -------------------------------------------------------------------


def test_secrets_never_appear_in_the_repr(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [store]
        url = "postgresql://calsync:pa55w0rd@db.internal/calsync"
        [handler]
        kind = "webhook"
        url = "https://hooks.example.com/calsync?token=t0k3n"
        secret = "whsec_czNjcjN0LXZhbHVlLTQyLWJ5dGVzLWxvbmc="
        [[calendars]]
        url = "https://calendar.example.com/private-0123456789abcdef/basic.ics"
        """,
    )
    shown = repr(config)
    for secret in ("pa55w0rd", "t0k3n", SECRET, "private-0123456789abcdef"):
        assert secret not in shown
    assert "***" in shown


def test_a_bad_secret_value_is_not_shown_in_the_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[handler]\nsecret = ["whsec_czNjcjN0LXZhbHVlLTQyLWJ5dGVzLWxvbmc="]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert SECRET not in str(caught.value)
    assert "hidden" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["sqlite://x password=s3cr3t-pw", "mysql host=db password=s3cr3t-pw"]
)
def test_a_bad_store_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"CALSYNC_STORE_URL": url})
    assert "s3cr3t-pw" not in str(caught.value)
    assert caught.value.key == "store.url"


def test_a_bad_url_is_shown_redacted(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[handler]\nurl = "ftp://user:pa55w0rd@h.example/x?token=t0k3n"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "pa55w0rd" not in str(caught.value)
    assert "t0k3n" not in str(caught.value)


# -- builders ------------------------------------------------------------------


def test_settings_take_engine_keys_and_keep_other_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [engine]
        late_grace = "5m"
        sync_concurrency = 2
        per_host_rate = 0
        retry_cap = "2h"
        breaker_threshold = 3
        delivery_retry_base = "10s"
        keep_job_runs = "7d"
        worker = "worker-a"
        """,
    )
    settings = build_settings(config)
    assert settings.late_grace == timedelta(minutes=5)
    assert settings.sync_concurrency == 2
    assert settings.per_host_rate is None
    assert settings.retry.cap == timedelta(hours=2)
    assert settings.retry.base == timedelta(minutes=1)
    assert settings.breaker.failure_threshold == 3
    assert settings.delivery_retry.base == timedelta(seconds=10)
    assert settings.delivery_retry.cap == timedelta(hours=1)
    assert settings.keep_job_runs == timedelta(days=7)
    assert settings.worker == "worker-a"
    assert settings.max_attempts == 8


def test_settings_that_do_not_fit_together_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[engine\].*parse_timeout") as caught:
        load(tmp_path, '[engine]\nlease_ttl = "1m"\nparse_timeout = "2m"\n')
    assert caught.value.key == "engine"


def test_store_urls_open_the_matching_store(tmp_path: Path) -> None:
    def store_for(url: str) -> object:
        return open_store(load_config(None, env={"CALSYNC_STORE_URL": url}))

    assert isinstance(store_for("memory:"), MemoryStore)
    relative = store_for("sqlite:///calsync.db")
    assert isinstance(relative, SQLiteStore)
    assert "'calsync.db'" in repr(relative)
    absolute = store_for(f"sqlite:///{tmp_path}/state.db")
    assert f"'{tmp_path}/state.db'" in repr(absolute)
    postgres = store_for("postgresql://calsync:pa55w0rd@db.internal/calsync")
    assert isinstance(postgres, PostgresStore)
    assert "pa55w0rd" not in repr(postgres)


async def test_fetcher_follows_the_fetch_section(tmp_path: Path) -> None:
    config = load(tmp_path, '[fetch]\nallow = ["127.0.0.1"]\ntimeout = "5s"\n')
    async with build_fetcher(config) as fetcher:
        assert isinstance(fetcher, HttpFetcher)
        assert "127.0.0.1" in repr(fetcher)
        assert "total_timeout=5s" in repr(fetcher)


async def test_handlers_are_built_by_kind(tmp_path: Path) -> None:
    assert isinstance(build_handler(load_config(None, env={})), LoggingHandler)
    webhook = build_handler(
        load_config(
            None,
            env={
                "CALSYNC_HANDLER_KIND": "webhook",
                "CALSYNC_HANDLER_URL": "https://hooks.example.com/x",
                "CALSYNC_HANDLER_SECRET": SECRET,
            },
        )
    )
    assert isinstance(webhook, WebhookHandler)
    assert SECRET not in repr(webhook)
    await webhook.aclose()


def test_a_python_target_is_imported() -> None:
    config = load_config(
        None,
        env={
            "CALSYNC_HANDLER_KIND": "python",
            "CALSYNC_HANDLER_TARGET": "calsync.core.durations:parse_duration",
        },
    )
    assert build_handler(config) is parse_duration


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("calsync_no_such_module:notify", "cannot import module"),
        ("calsync.core.durations:no_such_function", "has no attribute"),
        ("calsync.config:ENV_PREFIX", "not callable"),
    ],
)
def test_a_bad_python_target_is_a_clear_error(target: str, expected: str) -> None:
    config = load_config(
        None, env={"CALSYNC_HANDLER_KIND": "python", "CALSYNC_HANDLER_TARGET": target}
    )
    with pytest.raises(ConfigError, match=expected) as caught:
        build_handler(config)
    assert caught.value.key == "handler.target"


async def test_engine_is_built_over_the_configured_store(tmp_path: Path) -> None:
    config = load_config(
        None,
        env={
            "CALSYNC_STORE_URL": f"sqlite:///{tmp_path}/state.db",
            "CALSYNC_ENGINE_LATE_GRACE": "3m",
        },
    )
    async with build_engine(config) as engine:
        assert isinstance(engine, Engine)
        assert isinstance(engine.store, SQLiteStore)
        assert engine.settings.late_grace == timedelta(minutes=3)
        assert await engine.list_calendars() == []
    assert (tmp_path / "state.db").exists()


# -- ranges, lenient readings and unreadable files ------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CALSYNC_ENGINE_LEASE_TTL", "99999999999999d", "is too long"),
        ("CALSYNC_ENGINE_LEASE_TTL", "2d", "must be at most 1d"),
        ("CALSYNC_ENGINE_LATE_GRACE", "30d", "must be at most 7d"),
        ("CALSYNC_ENGINE_RETRY_CAP", "30d", "must be at most 7d"),
        ("CALSYNC_ENGINE_BREAKER_COOL_DOWN", "3650d", "must be at most 7d"),
        ("CALSYNC_ENGINE_SYNC_CONCURRENCY", "1000000000", "from 1 to 1,000"),
        ("CALSYNC_ENGINE_MAX_ATTEMPTS", "99999999999999999999", "whole number"),
        ("CALSYNC_ENGINE_PER_HOST_RATE", "nan", "expected a number"),
        ("CALSYNC_ENGINE_PER_HOST_RATE", "1e308", "expected a number"),
        ("CALSYNC_ENGINE_MASS_DELETION_FRACTION", "inf", "expected a number"),
        ("CALSYNC_ENGINE_MAX_ATTEMPTS", "\u0661\u0660", "expected a whole number"),
        ("CALSYNC_DEFAULTS_LEADS", "400d", "each lead must be at most 366d"),
        ("CALSYNC_DEFAULTS_LEADS", "\u0661\u0660m", "is not a duration"),
        ("CALSYNC_DEFAULTS_EVERY", "every 99999d", "too long"),
        ("CALSYNC_FETCH_TIMEOUT", "99999999999999d", "is too long"),
    ],
)
def test_an_out_of_range_variable_is_one_line_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, env={variable: value})
    message = str(raised.value)
    assert message.startswith(f"environment variable {variable}: ")
    assert expected in message
    assert "\n" not in message
    assert "Settings." not in message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[engine]\nlate_grace = "99999999999999d"\n', "late_grace", "too long"),
        ('[engine]\nlease_ttl = "3d"\n', "lease_ttl", "must be at most 1d"),
        ('[engine]\nmax_attempts = "8"\n', "max_attempts", "without quotes"),
        ('[engine]\nmass_deletion_fraction = "0.5"\n', "fraction", "without quotes"),
        ("[engine]\nmax_attempts = 100000\n", "max_attempts", "from 1 to 1,000"),
        ('[defaults]\nleads = ["\u0661\u0660m"]\n', "leads", "is not a duration"),
        (
            '[[calendars]]\nurl = "https://example.com/a.ics"\nleads = ["3650000d"]\n',
            "[[calendars]] #1 leads",
            "too long",
        ),
        (
            '[[calendars]]\nurl = "https://example.com/a.ics"\nleads = ["400d"]\n',
            "[[calendars]] #1 leads",
            "each lead must be at most 366d",
        ),
        (
            '[[calendars]]\nurl = "http://exa mple.com/a.ics"\n',
            "[[calendars]] #1 url",
            "not a valid host name",
        ),
    ],
)
def test_an_out_of_range_file_value_names_the_file_and_key(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'calsync.toml'}: ")
    assert key in message
    assert expected in message


def test_numbers_from_variables_are_still_read_from_their_text() -> None:
    config = load_config(
        None,
        env={
            "CALSYNC_ENGINE_MAX_ATTEMPTS": "12",
            "CALSYNC_ENGINE_MASS_DELETION_FRACTION": "0.25",
            "CALSYNC_ENGINE_LEASE_TTL": "1d",
        },
    )
    settings = build_settings(config)
    assert (settings.max_attempts, settings.mass_deletion_fraction) == (12, 0.25)
    assert settings.lease_ttl == timedelta(days=1)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe[store]\x00", '[store]\nurl = "é"\n'.encode("latin-1"), b"\x00" * 8],
)
def test_a_file_that_is_not_utf8_text_is_one_line(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "calsync.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_key_value_connection_string_is_a_store_url_shown_without_password() -> None:
    dsn = "host=db.internal dbname=calsync user=app password=s3cr3t-pw"
    config = load_config(None, env={"CALSYNC_STORE_URL": dsn})
    assert config.store.url == dsn
    assert isinstance(open_store(config), PostgresStore)
    assert "s3cr3t-pw" not in repr(config)
    assert "host=db.internal" in repr(config)


# -- the same ranges through the API ----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"lease_ttl": timedelta(days=2)}, "lease_ttl must be at most 1d"),
        ({"late_grace": timedelta(days=3650000)}, "late_grace must be at most 7d"),
        ({"sync_concurrency": 10**12}, "sync_concurrency must be from 1 to 1,000"),
        ({"max_attempts": "8"}, "max_attempts must be a whole number"),
        ({"per_host_rate": float("nan")}, "per_host_rate must be a number"),
        ({"mass_deletion_fraction": float("nan")}, "mass_deletion_fraction must"),
    ],
)
def test_settings_refuse_out_of_range_values(
    changes: dict[str, object], expected: str
) -> None:
    with pytest.raises(ValidationError, match=expected):
        Settings(**changes)  # type: ignore[arg-type]


def test_settings_range_check_the_retry_policies_and_the_breaker() -> None:
    with pytest.raises(ValidationError, match=r"retry\.cap must be at most 7d"):
        Settings(retry=RetryPolicy(cap=timedelta(days=3650)))
    with pytest.raises(ValidationError, match=r"breaker\.cool_down"):
        Settings(breaker=CircuitBreaker(cool_down=timedelta(days=3650)))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"leads": (timedelta(days=3650000),)}, "a lead must be at most 366d"),
        ({"horizon": timedelta(days=36500)}, "horizon must be at most 3660d"),
        ({"horizon": timedelta(0)}, "horizon must be greater than 0s"),
        ({"window_past": timedelta(days=400)}, "window_past must be at most 366d"),
    ],
)
def test_calendars_refuse_out_of_range_spans(
    changes: dict[str, object], expected: str
) -> None:
    with pytest.raises(ValidationError, match=expected):
        Calendar(
            url="https://example.com/a.ics",
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            **changes,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    "text", ["99999999999999d", "9" * 5000 + "s", "3661d", "\u0661\u0660m", "10 m x"]
)
def test_parse_duration_refuses_with_a_validation_error_not_a_crash(
    text: str,
) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_duration(text)
    assert len(str(raised.value)) < 200


# -- one model: keys, variables and checks come from the attrs classes ----------


def _written(value: object) -> str:
    """How a variable writes *value*, the way a user would."""
    if value is None:
        return "0"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return ",".join(_written(item) for item in value)
    return str(value)


def test_every_settings_field_is_an_engine_key_and_a_variable() -> None:
    defaults = Settings(worker="w")
    keys = keys_of(Settings)
    for field in attrs.fields(Settings):
        nested = attrs.has(type(getattr(defaults, field.name)))
        assert nested or field.name in keys
    env = {}
    for key, (name, *part) in keys.items():
        value = getattr(defaults, name)
        env[f"CALSYNC_ENGINE_{key.upper()}"] = _written(
            getattr(value, part[0]) if part else value
        )
    assert load_config(None, env=env).engine == defaults
    assert "CALSYNC_ENGINE_DELIVERY_RETRY_MAX_RETRY_AFTER" in env


def test_a_new_field_needs_no_edit_of_the_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @attrs.frozen
    class Grown(Settings):
        feed_max_lines: int = attrs.field(
            default=5,
            validator=Checked(lambda name, value: Count(1, 10).problem(value)),
        )
        backoff: RetryPolicy = attrs.field(factory=RetryPolicy)
        parse_max_depth: int = attrs.field(default=3, validator=attrs.validators.ge(1))

    monkeypatch.setitem(config_module._SECTIONS, "engine", Grown)
    text = '[engine]\nfeed_max_lines = 7\nbackoff_cap = "2h"\n'
    config = load(tmp_path, text)
    assert isinstance(config.engine, Grown)
    assert (config.engine.feed_max_lines, config.engine.backoff.cap) == (
        7,
        timedelta(hours=2),
    )
    assert (
        load(tmp_path, text, CALSYNC_ENGINE_FEED_MAX_LINES="9").engine.feed_max_lines
        == 9
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, CALSYNC_ENGINE_FEED_MAX_LINES="11")
    assert str(caught.value) == (
        "environment variable CALSYNC_ENGINE_FEED_MAX_LINES: "
        "must be from 1 to 10, got '11'"
    )
    with pytest.raises(ConfigError, match="did you mean 'feed_max_lines'") as caught:
        load(tmp_path, "[engine]\nfeed_max_line = 3\n")
    assert caught.value.key == "engine.feed_max_line"
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[engine]\nparse_max_depth = 0\n")
    assert str(caught.value).startswith(
        f"{tmp_path / 'calsync.toml'}: [engine] parse_max_depth: "
    )
    assert caught.value.key == "engine.parse_max_depth"


def test_the_runner_section_is_the_runners_triggers() -> None:
    config = load_config(None, env={"CALSYNC_RUNNER_SYNC_DUE": "45s"})
    assert config.runner == Triggers(sync_due="every 45s")


def test_older_key_spellings_are_aliases(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[engine]\nretry_max_after = "2h"\nbreaker_threshold = 2\n',
        CALSYNC_ENGINE_DELIVERY_RETRY_MAX_RETRY_AFTER="3h",
    )
    assert config.engine.retry.max_retry_after == timedelta(hours=2)
    assert config.engine.breaker.failure_threshold == 2
    assert config.engine.delivery_retry.max_retry_after == timedelta(hours=3)
    assert config.engine.delivery_retry.cap == timedelta(hours=1)


def test_a_bad_nested_value_names_the_key_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine]\nbreaker_threshold = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == (
        f"{path}: [engine] breaker_threshold: must be a whole number >= 1, got 0"
    )
    assert caught.value.key == "engine.breaker_failure_threshold"


def test_every_alias_is_documented_in_one_table() -> None:
    page = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    table = page[page.index("## Aliases") :].split("\n## ")[0]
    for name in ALIASES:
        assert f"`{name.partition('.')[2] or name}" in table
