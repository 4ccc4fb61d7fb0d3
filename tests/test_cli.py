"""The ``calsync`` command against a real SQLite file and a feed server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from calsync.cli import commands
from calsync.cli.commands import cli
from calsync.config import build_engine, load_config
from calsync.handlers import Delivery, DeliveryError
from conftest import ics

ID = re.compile(r"\(([0-9a-f]{32})\)")


class Feeds:
    """An aiohttp server on 127.0.0.1 in its own thread: ``set`` a body, get a URL."""

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        self.served: collections.Counter[str] = collections.Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def set(self, name: str, body: str) -> str:
        self.bodies[name] = body
        return self.url(name)

    async def _serve(self, request: web.Request) -> web.Response:
        body = self.bodies.get(request.match_info["name"])
        self.served[request.match_info["name"]] += 1
        if body is None:
            return web.Response(status=404, text="not here")
        return web.Response(body=body.encode(), content_type="text/calendar")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            cleanup = self._runner.cleanup()
            asyncio.run_coroutine_threadsafe(cleanup, self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables are as wide as a run without a terminal makes them, wherever pytest runs.

    pytest-xdist workers (and some shells) set ``COLUMNS``, which rich obeys.
    """
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture
def feeds() -> Iterator[Feeds]:
    server = Feeds()
    server.start()
    yield server
    server.stop()


def team_feed() -> str:
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    def stamp(offset: timedelta) -> str:
        return (now + offset).strftime("%Y%m%dT%H%M%SZ")

    return ics(
        f"""
        UID:standup-1
        DTSTAMP:20260101T000000Z
        DTSTART:{stamp(timedelta(hours=2))}
        DTEND:{stamp(timedelta(hours=2, minutes=30))}
        SUMMARY:Standup
        """,
        f"""
        UID:review-1
        DTSTAMP:20260101T000000Z
        DTSTART:{stamp(timedelta(days=3))}
        DTEND:{stamp(timedelta(days=3, hours=1))}
        SUMMARY:Review
        """,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "calsync.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [store]
            url = "sqlite:///{tmp_path}/state.db"
            [fetch]
            allow = ["127.0.0.1"]
            """
        ),
        encoding="utf-8",
    )
    return path


def calsync(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def added_id(result: Result) -> str:
    assert result.exit_code == 0, result.output
    match = ID.search(result.output)
    assert match is not None, result.output
    return match.group(1)


# -- calendars ------------------------------------------------------------------


def test_add_stores_a_calendar_that_list_shows(config: Path, feeds: Feeds) -> None:
    url = feeds.set("team.ics", team_feed())

    added = calsync(
        config, "add", url, "--name", "Team", "--lead", "10m", "--lead", "1h"
    )

    calendar_id = added_id(added)
    assert "Added calendar Team" in added.output
    assert "every 15m" in added.output
    assert "10m, 1h" in added.output
    listed = calsync(config, "list")
    assert listed.exit_code == 0
    assert calendar_id in listed.output
    assert url in listed.output
    assert "active" in listed.output


def test_add_quiet_prints_only_the_id(config: Path, feeds: Feeds) -> None:
    added = calsync(config, "add", "-q", feeds.set("team.ics", team_feed()))
    assert added.exit_code == 0
    assert re.fullmatch(r"[0-9a-f]{32}\n", added.output)


def test_add_takes_the_defaults_from_the_config(config: Path, feeds: Feeds) -> None:
    config.write_text(
        config.read_text()
        + '[defaults]\nevery = "every 1h"\nleads = ["30m"]\ntz = "Europe/Berlin"\n'
    )
    added = calsync(config, "add", feeds.set("team.ics", team_feed()))
    assert "every 1h (Europe/Berlin)" in added.output
    assert "30m" in added.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ftp://example.com/cal.ics"], "scheme 'ftp' is not supported"),
        (["not a url"], "not absolute"),
        (["URL", "--every", "sometimes"], "bad schedule 'sometimes'"),
        (["URL", "--every", "every 0m"], "interval must be positive"),
        (["URL", "--lead", "soon"], "--lead 'soon': bad duration"),
        (["URL", "--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_input_to_add_is_one_clear_line_and_nothing_is_stored(
    config: Path, feeds: Feeds, args: list[str], expected: str
) -> None:
    url = feeds.set("team.ics", team_feed())
    args = [url if arg == "URL" else arg for arg in args]

    result = calsync(config, "add", *args)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert "No calendars yet" in calsync(config, "list").output


def test_verbose_shows_the_traceback(config: Path) -> None:
    result = calsync(config, "--verbose", "add", "ftp://example.com/cal.ics")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "Error: " in result.stderr


def test_a_url_secret_is_never_printed(config: Path, feeds: Feeds) -> None:
    url = feeds.set("team.ics", team_feed()) + "?token=t0k3n"
    calendar_id = added_id(calsync(config, "add", url))
    outputs = [
        calsync(config, "list").output,
        calsync(config, "sync", calendar_id).output,
        calsync(config, "status").output,
        calsync(config, "explain", calendar_id).output,
    ]
    for output in outputs:
        assert "t0k3n" not in output
    assert "token=***" in outputs[0]


def test_pause_resume_and_remove(config: Path, feeds: Feeds) -> None:
    calendar_id = added_id(calsync(config, "add", feeds.set("a.ics", team_feed())))

    paused = calsync(config, "pause", calendar_id)
    assert paused.exit_code == 0
    assert f"`calsync resume {calendar_id}`" in paused.output
    assert "paused" in calsync(config, "list").output
    assert calsync(config, "resume", calendar_id).exit_code == 0
    assert "active" in calsync(config, "list").output
    kept = CliRunner().invoke(
        cli, ["--config", str(config), "remove", calendar_id], input="n\n"
    )
    assert "Nothing removed" in kept.output
    removed = calsync(config, "remove", "--yes", calendar_id)
    assert removed.exit_code == 0
    assert "No calendars yet" in calsync(config, "list").output


def test_an_unknown_calendar_id_is_a_clear_error(config: Path) -> None:
    for command in ("pause", "resume", "sync"):
        result = calsync(config, command, "f" * 32)
        assert result.exit_code == 1
        assert f"no calendar '{'f' * 32}'" in result.stderr


# -- syncing and insight -----------------------------------------------------------


def test_sync_all_syncs_every_active_calendar(config: Path, feeds: Feeds) -> None:
    team = added_id(calsync(config, "add", feeds.set("team.ics", team_feed())))
    other = added_id(calsync(config, "add", feeds.set("other.ics", team_feed())))
    paused = added_id(calsync(config, "add", feeds.set("paused.ics", team_feed())))
    calsync(config, "pause", paused)

    result = calsync(config, "sync", "--all")

    assert result.exit_code == 0, result.output
    assert re.search(rf"changed\s+.*{team}.*2 added", result.output)
    assert re.search(rf"changed\s+.*{other}.*2 added", result.output)
    assert paused not in result.output
    assert "2 calendar(s) synced, 0 failed." in result.output


def test_sync_exits_1_when_a_calendar_fails(config: Path, feeds: Feeds) -> None:
    added_id(calsync(config, "add", feeds.set("team.ics", team_feed())))
    gone = added_id(calsync(config, "add", feeds.url("gone.ics")))

    result = calsync(config, "sync", "--all")

    assert result.exit_code == 1
    assert re.search(rf"failed\s+.*{gone}.*HTTP 404", result.output)
    assert "2 calendar(s) synced, 1 failed." in result.output


def test_sync_one_calendar_and_force(config: Path, feeds: Feeds) -> None:
    calendar_id = added_id(calsync(config, "add", feeds.set("team.ics", team_feed())))

    first = calsync(config, "sync", calendar_id)
    again = calsync(config, "sync", calendar_id)
    forced = calsync(config, "sync", calendar_id, "--force")

    assert first.exit_code == 0
    assert "changed" in first.output
    assert again.output.startswith("unchanged")
    assert forced.output.startswith("unchanged")
    assert "2 unchanged" in forced.output


@pytest.mark.parametrize(
    "args",
    [[], ["--all", "abc"], ["--all", "--confirm-removals"]],
)
def test_sync_needs_an_id_or_all(config: Path, args: list[str]) -> None:
    result = calsync(config, "sync", *args)
    assert result.exit_code == 2
    assert "Usage:" in result.output


def test_status_shows_health_queue_and_jobs(config: Path, feeds: Feeds) -> None:
    team = added_id(calsync(config, "add", feeds.set("team.ics", team_feed())))
    gone = added_id(calsync(config, "add", feeds.url("gone.ics")))
    calsync(config, "sync", "--all")

    result = calsync(config, "status")

    assert result.exit_code == 0
    lines = result.output.splitlines()
    (team_line,) = [line for line in lines if team in line]
    gone_line, gone_error = [line for line in lines if gone in line]
    assert " ok " in team_line
    assert " failing " in gone_line
    assert gone_error.startswith(f"{gone}  http://127.0.0.1:")
    assert "HTTP 404 Not Found" in gone_error
    assert "Notifications: 0 pending, 0 failed, 0 missed" in result.output
    # A fresh process holds no parse caches yet; the budget is the default.
    assert "Parse caches (this process): 0.0 of 192 MiB, 0 calendars" in result.output
    assert "Feeds: 0 paused, 0 circuit_open, 1 failing, 0 stale, 1 ok" in result.output
    assert re.search(r"sync_due\s+1\s+partial", result.output)


def test_status_json_and_check_for_monitoring(config: Path, feeds: Feeds) -> None:
    team = added_id(calsync(config, "add", feeds.set("team.ics", team_feed())))
    calsync(config, "sync", "--all")
    healthy = calsync(config, "status", "--json", "--check")
    assert healthy.exit_code == 0
    report = json.loads(healthy.output)
    assert report["healthy"] is True
    assert [c["id"] for c in report["calendars"]] == [team]
    assert report["notifications"] == {"pending": 0, "failed": 0, "missed": 0}
    assert report["parse_cache"] == {"bytes": 0, "budget": 192 * 2**20, "calendars": 0}
    assert report["feeds"] == {
        "paused": 0,
        "circuit_open": 0,
        "failing": 0,
        "stale": 0,
        "ok": 1,
    }
    assert [c["state"] for c in report["calendars"]] == ["ok"]
    secret = feeds.url("gone.ics") + "?token=hunter2secret"
    calsync(config, "add", secret)
    calsync(config, "sync", "--all")
    failing = calsync(config, "status", "--json", "--check")
    assert failing.exit_code == 1
    assert "hunter2secret" not in failing.output
    assert json.loads(failing.output)["healthy"] is False


def test_upcoming_lists_events_and_reminders(config: Path, feeds: Feeds) -> None:
    calsync(config, "add", feeds.set("team.ics", team_feed()), "--name", "Team")
    calsync(config, "sync", "--all")

    week = calsync(config, "upcoming")
    day = calsync(config, "upcoming", "--days", "1")

    assert week.exit_code == 0
    assert "Standup" in week.output
    assert "Review" in week.output
    assert "10m before" in week.output
    assert "scheduled" in week.output
    assert "Review" not in day.output
    assert calsync(config, "upcoming", "--days", "0").exit_code == 2


def test_upcoming_with_nothing_ahead_says_so(config: Path) -> None:
    result = calsync(config, "upcoming")
    assert result.exit_code == 0
    assert "No events in the next 7 days" in result.output


def test_explain_an_event_and_a_calendar(config: Path, feeds: Feeds) -> None:
    url = feeds.set("team.ics", team_feed())
    calendar_id = added_id(calsync(config, "add", url, "--name", "Team"))
    calsync(config, "sync", calendar_id)

    event = calsync(config, "explain", "standup-1")
    calendar = calsync(config, "explain", calendar_id)
    unknown = calsync(config, "explain", "nobody-knows")

    assert event.exit_code == 0
    assert event.output.startswith("'Standup' (UID standup-1) in Team")
    assert "  - lead 10m: fires" in event.output
    assert "will fire then" in event.output
    assert calendar.output.startswith(f"calendar Team ({calendar_id})")
    assert "'Standup'" in calendar.output
    assert unknown.exit_code == 1
    assert "no calendar id or event UID 'nobody-knows'" in unknown.stderr


def test_requeue_needs_ids_or_all_failed(config: Path) -> None:
    assert calsync(config, "requeue").exit_code == 2
    result = calsync(config, "requeue", "--all-failed")
    assert result.exit_code == 0
    assert "Requeued 0 notification(s)." in result.output


def test_requeue_all_failed_takes_every_failed_notification_in_batches(
    config: Path, feeds: Feeds, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = feeds.set("team.ics", team_feed())
    leads = ("--lead", "2d", "--lead", "3d", "--lead", "4d")
    added_id(calsync(config, "add", url, "--name", "Team", *leads))

    async def fail_every_reminder() -> int:
        async def refuse(delivery: Delivery) -> None:
            raise DeliveryError("the receiver refuses", permanent=True)

        async with build_engine(load_config(config, env={})) as engine:
            await engine.sync_due()
            await engine.check_notifications()
            result = await engine.dispatch_notifications(refuse)
            return result.dead

    failed = asyncio.run(fail_every_reminder())
    assert failed == 5  # Standup: 3 leads due; Review (in 3 days): 2
    monkeypatch.setattr(commands, "_REQUEUE_BATCH", 2)

    result = calsync(config, "requeue", "--all-failed")

    assert "Requeued 5 notification(s)." in result.output
    status = calsync(config, "status")
    assert "Notifications: 5 pending, 0 failed, 0 missed" in status.output


def test_output_has_no_colour_codes_when_not_a_terminal(
    config: Path, feeds: Feeds
) -> None:
    calsync(config, "add", feeds.set("team.ics", team_feed()))
    calsync(config, "sync", "--all")
    for command in ("list", "status", "upcoming"):
        assert "\x1b[" not in calsync(config, command).output


# -- configuration -----------------------------------------------------------------


def test_a_bad_config_names_the_key(config: Path) -> None:
    config.write_text(config.read_text() + '[engine]\nlate_grace = "soon"\n')
    result = calsync(config, "list")
    assert result.exit_code == 1
    assert "[engine] late_grace" in result.stderr
    assert str(config) in result.stderr


def test_the_config_comes_from_the_working_directory_or_the_environment(
    tmp_path: Path, config: Path, feeds: Feeds, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    calendar_id = added_id(calsync(config, "add", feeds.set("team.ics", team_feed())))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    assert calendar_id in runner.invoke(cli, ["list"]).output
    monkeypatch.chdir(elsewhere)
    assert "No calendars yet" in runner.invoke(cli, ["list"]).output
    assert (elsewhere / "calsync.db").exists()  # the default store, in the cwd
    from_env = runner.invoke(cli, ["list"], env={"CALSYNC_CONFIG": str(config)})
    assert calendar_id in from_env.output
    overridden = runner.invoke(
        cli,
        ["--config", str(config), "list"],
        env={"CALSYNC_STORE_URL": f"sqlite:///{tmp_path}/other.db"},
    )
    assert "No calendars yet" in overridden.output


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    result = calsync(tmp_path / "nope.toml", "list")
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_unknown_commands_are_usage_errors(config: Path) -> None:
    result = calsync(config, "frobnicate")
    assert result.exit_code == 2


# -- calsync run ----------------------------------------------------------------------

HANDLER = """
import pathlib

def notify(delivery):
    with open(pathlib.Path(__file__).with_name("deliveries.txt"), "a") as file:
        file.write(delivery.id + "\\n")
"""


def test_run_adds_declared_calendars_delivers_and_stops_on_sigterm(
    tmp_path: Path, feeds: Feeds
) -> None:
    # From the real clock now, not at import: the suite may reach this test late.
    soon = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ")
    body = ics(f"UID:soon-1\nDTSTAMP:20260101T000000Z\nDTSTART:{soon}\nSUMMARY:Soon")
    (tmp_path / "hooks.py").write_text(HANDLER)
    (tmp_path / "calsync.toml").write_text(
        textwrap.dedent(
            f"""
            [store]
            url = "sqlite:///state.db"
            [fetch]
            allow = ["127.0.0.1"]
            [handler]
            kind = "python"
            target = "hooks:notify"
            [runner]
            sync_due = "every 1s"
            check_notifications = "every 1s"
            dispatch_notifications = "every 1s"
            [logging]
            format = "json"
            [[calendars]]
            url = "{feeds.set("soon.ics", body)}"
            name = "Declared"
            every = "every 1s"
            """
        )
    )
    command = [
        sys.executable,
        "-c",
        "from calsync.cli.commands import main; main()",
        "run",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deliveries = tmp_path / "deliveries.txt"
    try:
        _wait_for(process, "a delivery", deliveries.exists)
        synced = feeds.served["soon.ics"]
        # three more syncs of the feed (one a second): nothing is delivered twice
        _wait_for(
            process, "3 more syncs", lambda: feeds.served["soon.ics"] > synced + 2
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert len(deliveries.read_text().splitlines()) == 1
    assert '"message": "added calendar Declared' in stderr
    assert '"message": "runner stopped"' in stderr


def _wait_for(
    process: subprocess.Popen[str], what: str, check: Callable[[], bool]
) -> None:
    """Poll ``check`` while ``process`` runs; fail only after a 120 s safety net."""
    deadline = time.monotonic() + 120
    while not check():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"never happened in 120 s: {what}"
        time.sleep(0.05)


def test_run_refuses_a_handler_target_it_cannot_import(config: Path) -> None:
    config.write_text(
        config.read_text() + '[handler]\nkind = "python"\ntarget = "nowhere:notify"\n'
    )
    result = calsync(config, "run")
    assert result.exit_code == 1
    assert "cannot import module 'nowhere'" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_for_the_given_duration() -> None:
    result = CliRunner().invoke(cli, ["demo", "--duration", "2"])
    assert result.exit_code == 0, result.output
    assert "calsync demo" in result.output


# -- bad input: one line, the option to change, nothing stored ---------------------

ARABIC_TEN = "\u0661\u0660"


def one_error_line(result: Result, *, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert lines[-1].startswith("Error: "), result.stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--lead", "400d"], "--lead '400d': a lead must be at most 366d"),
        (["--lead", "3650000d"], "--lead '3650000d': duration '3650000d' is too long"),
        (["--lead", "99999999999999d"], "--lead '99999999999999d': duration"),
        (["--lead", f"{ARABIC_TEN}m"], f"--lead '{ARABIC_TEN}m': bad duration"),
        (["--every", "every 99999d"], "--every 'every 99999d': bad schedule"),
        (["--every", f"every {ARABIC_TEN}m"], "--every"),
        (["--tz", "Mars/Olympus"], "--tz 'Mars/Olympus'"),
    ],
)
def test_out_of_range_options_to_add_name_the_option_and_store_nothing(
    config: Path, feeds: Feeds, args: list[str], expected: str
) -> None:
    line = one_error_line(
        calsync(config, "add", feeds.set("a.ics", team_feed()), *args)
    )
    assert expected in line
    assert "No calendars yet" in calsync(config, "list").output


@pytest.mark.parametrize(
    "url", ["http://exa mple.com/a.ics", "https://exa mple.com/a.ics?token=x"]
)
def test_a_url_whose_host_cannot_exist_is_refused_and_not_stored(
    config: Path, url: str
) -> None:
    line = one_error_line(calsync(config, "add", url))
    assert "'exa mple.com' is not a valid host name" in line
    assert "No calendars yet" in calsync(config, "list").output


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_local_feed_is_refused_with_how_to_allow_it(
    tmp_path: Path, host: str
) -> None:
    config = tmp_path / "calsync.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/state.db"\n')
    line = one_error_line(calsync(config, "add", f"http://{host}:8080/cal.ics"))
    assert f"refused to connect to {host}" in line
    assert f'allow = ["{host}"] under [fetch]' in line
    assert f"CALSYNC_FETCH_ALLOW={host}" in line
    allowed = CliRunner().invoke(
        cli,
        ["--config", str(config), "add", "-q", f"http://{host}:8080/cal.ics"],
        env={"CALSYNC_FETCH_ALLOW": "127.0.0.1"},
    )
    assert allowed.exit_code == 0, allowed.output


@pytest.mark.parametrize("days", ["inf", "nan", "1e308", "-inf", "367"])
def test_upcoming_refuses_days_that_are_not_a_finite_range(
    config: Path, days: str
) -> None:
    result = calsync(config, "upcoming", "--days", days)
    assert result.exit_code == 2, result.output
    assert "--days" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALSYNC_ENGINE_LEASE_TTL", "99999999999999d"),
        ("CALSYNC_ENGINE_LATE_GRACE", "3650000d"),
        ("CALSYNC_DEFAULTS_LEADS", "99999999999999d"),
    ],
)
def test_an_overflowing_variable_is_one_line_naming_it(
    config: Path, variable: str, value: str
) -> None:
    result = CliRunner().invoke(
        cli, ["--config", str(config), "list"], env={variable: value}
    )
    assert f"environment variable {variable}" in one_error_line(result)


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00[store]", "[store] # caf\xe9\n".encode("latin-1")]
)
def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, content: bytes) -> None:
    config = tmp_path / "calsync.toml"
    config.write_bytes(content)
    line = one_error_line(calsync(config, "list"))
    assert "not a text file in UTF-8" in line


def test_run_and_every_command_take_config_after_their_name(
    config: Path, feeds: Feeds
) -> None:
    url = feeds.set("team.ics", team_feed())
    added = CliRunner().invoke(cli, ["add", url, "--config", str(config)])
    calendar_id = added_id(added)
    listed = CliRunner().invoke(cli, ["list", "--config", str(config)])
    assert calendar_id in listed.output
    missing = CliRunner().invoke(cli, ["run", "--config", str(config) + ".nope"])
    assert "does not exist" in one_error_line(missing)


def test_errors_name_settings_as_the_user_sets_them(config: Path, feeds: Feeds) -> None:
    zero = one_error_line(
        calsync(config, "add", feeds.set("a.ics", team_feed()), "--lead", "0m")
    )
    assert "[engine] late_grace" in zero
    assert "CALSYNC_ENGINE_LATE_GRACE" in zero
    unknown = one_error_line(calsync(config, "pause", "f" * 32))
    assert "`calsync list`" in unknown
    for line in (zero, unknown):
        assert "Settings." not in line
        assert "()" not in line


def test_reseal_secrets_encrypts_a_feed_token_kept_in_clear(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    token = "s3cretTOKEN42"
    added = calsync(config, "add", f"https://example.com/cal.ics?token={token}")
    assert added.exit_code == 0, added.output
    database = tmp_path / "state.db"
    assert token.encode() in database.read_bytes()
    monkeypatch.setenv("CALSYNC_STORE_SECRET_KEYS", Fernet.generate_key().decode())
    resealed = calsync(config, "reseal-secrets")
    assert resealed.exit_code == 0, resealed.output
    assert "1 calendar(s)" in resealed.output
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("VACUUM")
    stored = b"".join(
        path.read_bytes() for path in tmp_path.glob("state.db*") if path.is_file()
    )
    assert token.encode() not in stored
    listed = calsync(config, "list")
    assert listed.exit_code == 0, listed.output
    assert token not in listed.output
