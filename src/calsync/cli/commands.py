"""The ``calsync`` command: run the service, manage calendars, see what will fire.

Every command reads ``calsync.toml`` (``--config``, before or after the
command's name, else ``./calsync.toml`` if present) and the ``CALSYNC_*``
environment. A calsync error prints one red line and exits with status 1;
``--verbose`` adds the traceback. Usage errors exit with status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import attrs
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from calsync.config import (
    Config,
    build_engine,
    build_handler,
    load_config,
)
from calsync.core.durations import format_duration, parse_duration
from calsync.core.errors import CalsyncError, ValidationError
from calsync.core.redact import redact
from calsync.core.schedule import schedule_or_interval
from calsync.core.zones import resolve_zone
from calsync.engine.insight import UPCOMING_MAX_DAYS
from calsync.engine.results import (
    CalendarStatus,
    EngineStatus,
    FeedState,
    SyncOutcome,
    SyncResult,
)
from calsync.engine.service import Engine
from calsync.stores.records import CALENDAR_SPANS, Calendar, NotificationStatus

__all__ = ["cli", "main"]

T = TypeVar("T")

DEFAULT_CONFIG = Path("calsync.toml")
_NON_TTY_WIDTH = 160
_REQUEUE_BATCH = 1000


@attrs.define
class _App:
    """What every command shares: the config (read on first use) and the consoles."""

    config_path: Path | None
    verbose: bool
    _config: Config | None = None

    @property
    def config(self) -> Config:
        """The configuration, read from the file and the environment once."""
        if self._config is None:
            path = self.config_path
            if path is None and DEFAULT_CONFIG.is_file():
                path = DEFAULT_CONFIG
            self._config = load_config(path)
        return self._config

    @property
    def zone(self) -> tzinfo:
        """The zone times are shown in: ``[defaults] tz``."""
        return resolve_zone(self.config.defaults.tz)


def _console(*, stderr: bool = False) -> Console:
    """Return a console on stdout (or stderr): colour on a terminal, plain text else."""
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(
            stderr=stderr, highlight=False, soft_wrap=True, width=_NON_TTY_WIDTH
        )
    return console


_CONFIG_HELP = (
    "TOML config file [default: ./calsync.toml if it exists; env CALSYNC_CONFIG]."
)


def _set_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Let ``--config`` follow the command too: ``calsync run --config FILE``."""
    app = ctx.find_object(_App)
    if value is not None and app is not None:
        app.config_path = value


class _Command(click.Command):
    """A command that takes ``--config`` after its name as well as before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(
            click.Option(
                ["--config"],
                type=click.Path(dir_okay=False, path_type=Path),
                expose_value=False,
                callback=_set_config,
                help=_CONFIG_HELP,
            )
        )


class _Group(click.Group):
    """A click group that turns a `CalsyncError` into one red line and status 1.

    Its commands take ``--config`` after their name too (`_Command`).
    """

    command_class = _Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CalsyncError as error:
            app = ctx.obj if isinstance(ctx.obj, _App) else None
            _fail(error, verbose=app is not None and app.verbose)


def _fail(error: BaseException, *, verbose: bool) -> NoReturn:
    console = _console(stderr=True)
    if verbose:
        console.print(Text("".join(traceback.format_exception(error)).rstrip()))
    console.print(Text.assemble(("Error: ", "bold red"), (str(error), "red")))
    raise click.exceptions.Exit(1)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def _with_engine(app: _App, work: Callable[[Engine], Awaitable[T]]) -> T:
    async with build_engine(app.config) as engine:
        return await work(engine)


pass_app = click.make_pass_decorator(_App)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CALSYNC_CONFIG",
    help=_CONFIG_HELP,
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Show tracebacks and informational logs."
)
@click.version_option(package_name="calsync", prog_name="calsync")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """Keep ICS calendars in sync and send each reminder exactly once."""
    ctx.obj = _App(config_path, verbose)
    # Logs go to stderr for this command only; nothing is left configured after it.
    ctx.call_on_close(_configure_logging("INFO" if verbose else "ERROR", "text"))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``calsync`` command line (the console script's entry point)."""
    cli.main(args=argv, prog_name="calsync")


# -- run ------------------------------------------------------------------------


@cli.command()
@click.option(
    "--http",
    "http_bind",
    metavar="HOST:PORT",
    help="Also serve the HTTP API and dashboard there [default: [http] bind].",
)
@pass_app
@click.pass_context
def run(ctx: click.Context, app: _App, http_bind: str | None) -> None:
    """Run the service: sync, check and dispatch on the [runner] triggers.

    Stops gracefully on SIGTERM or Ctrl-C. Calendars declared as [[calendars]]
    in the config are added (or updated) first. With --http (or [http] bind)
    it serves the HTTP API and dashboard too (needs the web extra).
    """
    config = app.config
    if http_bind is not None:
        config = attrs.evolve(config, http=attrs.evolve(config.http, bind=http_bind))
    if config.http.bind is not None:
        _check_http(config.http.bind, config.http.token)
    ctx.call_on_close(_configure_logging(config.logging.level, config.logging.format))
    _run(_serve(config))


def _check_http(bind: str, token: str | None) -> None:
    """Refuse a bad or unsafe [http] bind, or a missing web extra, before starting."""
    try:
        from calsync.web.server import check_bind
    except ImportError as error:
        raise click.ClickException(
            f"--http needs the web extra ({error.name} is missing): "
            "pip install 'calsync[web]'"
        ) from None
    check_bind(bind, token)


async def _start_http(config: Config, engine: Engine, runner: Any) -> Any:
    """Serve the HTTP API and dashboard next to the runner, if [http] bind is set."""
    if config.http.bind is None:
        return None
    from calsync.web.server import serve_http

    return await serve_http(
        engine,
        config.http.bind,
        token=config.http.token,
        owner_header=config.http.owner_header,
        runner=runner,
    )


async def _serve(config: Config) -> None:
    from calsync.engine.runner import Runner

    if config.handler.kind == "python" and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the project's own modules
    handler = build_handler(config)
    # A signal while the store opens (a migration, say) stops the service once
    # it is open, instead of killing it halfway; the runner then takes over.
    early_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, early_stop.set)
    try:
        async with build_engine(config) as engine:
            await ensure_calendars(engine, config)
            if early_stop.is_set():
                return
            runner = Runner(engine, handler, triggers=config.runner)
            http = await _start_http(config, engine, runner)
            try:
                await runner.run(install_signal_handlers=True)
            finally:
                if http is not None:
                    await http.cleanup()
    finally:
        close = getattr(handler, "aclose", None)
        if close is not None:
            await close()


async def ensure_calendars(engine: Engine, config: Config) -> list[Calendar]:
    """Add each ``[[calendars]]`` entry that is not stored (by owner and URL).

    A stored one whose name, schedule, leads or zone differ from the config is
    updated. Returns the calendars added or changed.
    """
    logger = logging.getLogger("calsync.cli")
    stored = {(c.owner, c.url): c for c in await engine.list_calendars()}
    touched = []
    defaults = config.defaults
    for declared in config.calendars:
        wanted: dict[str, Any] = {
            "name": declared.name,
            "every": declared.every or defaults.every,
            "leads": declared.leads or defaults.leads,
            "tz": declared.tz or defaults.tz,
        }
        existing = stored.get((declared.owner, declared.url))
        if existing is None:  # another process may add it first: ensure, not add
            existing, added = await engine.ensure_calendar(
                declared.url, owner=declared.owner, **wanted
            )
            if added:
                logger.info("added calendar %s from the config", existing.label)
                touched.append(existing)
                continue
        changes = _differences(existing, wanted)
        if changes:
            calendar = await engine.update_calendar(existing.id, **changes)
            logger.info(
                "updated calendar %s from the config: %s",
                calendar.label,
                ", ".join(sorted(changes)),
            )
            touched.append(calendar)
    return touched


def _differences(calendar: Calendar, wanted: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if wanted["name"] is not None and wanted["name"] != calendar.name:
        changes["name"] = wanted["name"]
    if wanted["every"] != calendar.schedule:
        changes["every"] = wanted["every"]
    if tuple(sorted(wanted["leads"])) != tuple(sorted(calendar.leads)):
        changes["leads"] = wanted["leads"]
    if wanted["tz"] != (calendar.tz or "UTC"):
        changes["tz"] = wanted["tz"]
    return changes


# -- calendars ------------------------------------------------------------------


@cli.command()
@click.argument("url")
@click.option("--name", help="A name to show instead of the URL.")
@click.option(
    "--every",
    help="Sync schedule: '15m', 'every 1h', 'daily 07:30', 'cron */5 * * * *' "
    "[default: [defaults] every].",
)
@click.option(
    "--lead",
    "leads",
    multiple=True,
    metavar="DURATION",
    help="Remind this long before each event ('10m', '1h30m'); repeatable "
    "[default: [defaults] leads].",
)
@click.option("--tz", help="Zone for floating times [default: [defaults] tz].")
@click.option("--owner", default="default", show_default=True, help="Tenant.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the new calendar's id.")
@pass_app
def add(
    app: _App,
    url: str,
    name: str | None,
    every: str | None,
    leads: tuple[str, ...],
    tz: str | None,
    owner: str,
    quiet: bool,
) -> None:
    """Subscribe to the feed at URL (http, https or webcal)."""
    defaults = app.config.defaults
    lead_values = tuple(_lead(text) for text in leads) or defaults.leads
    if tz is not None:
        _checked("--tz", tz, resolve_zone)
    if every is not None:
        _checked("--every", every, lambda text: schedule_or_interval(text, tz or "UTC"))

    async def work(engine: Engine) -> Calendar:
        return await engine.add_calendar(
            url,
            name=name,
            owner=owner,
            every=every or defaults.every,
            leads=lead_values,
            tz=tz or defaults.tz,
        )

    calendar = _run(_with_engine(app, work))
    console = _console()
    if quiet:
        console.print(calendar.id)
        return
    console.print(Text(f"Added calendar {calendar.label}", style="green"))
    console.print(Text(f"  url       {redact(calendar.url)}"))
    console.print(Text(f"  schedule  {calendar.schedule} ({calendar.tz or 'UTC'})"))
    console.print(Text(f"  leads     {_leads(calendar.leads)}"))
    console.print(
        Text(f"It syncs with `calsync run`, or now with `calsync sync {calendar.id}`.")
    )


def _checked(option: str, text: str, check: Callable[[str], T]) -> T:
    """Run *check* on an option's text; its error names the option to change."""
    try:
        return check(text)
    except ValidationError as error:
        raise ValidationError(f"{option} {text!r}: {error}") from None


def _lead(text: str) -> timedelta:
    lead = _checked("--lead", text, parse_duration)
    problem = CALENDAR_SPANS["leads"].problem(lead)
    if problem is not None:
        raise ValidationError(f"--lead {text!r}: a lead {problem}")
    return lead


@cli.command(name="list")
@click.option("--owner", help="Only this tenant's calendars.")
@pass_app
def list_(app: _App, owner: str | None) -> None:
    """List the calendars with their schedule and reminders."""

    async def work(engine: Engine) -> tuple[list[Calendar], datetime]:
        return await engine.list_calendars(owner=owner), engine.now()

    calendars, now = _run(_with_engine(app, work))
    console = _console()
    if not calendars:
        console.print("No calendars yet: add one with `calsync add URL`.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "URL", "SCHEDULE", "LEADS", "STATE", "LAST SYNC"):
        table.add_column(column, no_wrap=column in {"ID", "SCHEDULE"})
    for calendar in calendars:
        last = calendar.state.last_success_at
        table.add_row(
            calendar.id,
            Text(calendar.name or ""),
            Text(redact(calendar.url), overflow="fold"),
            Text(calendar.schedule),
            Text(_leads(calendar.leads)),
            _state(calendar),
            "never" if last is None else _ago(last, now),
        )
    console.print(table)


@cli.command()
@click.argument("calendar_id", metavar="ID")
@pass_app
def pause(app: _App, calendar_id: str) -> None:
    """Stop syncing a calendar and creating its reminders."""
    calendar = _run(_with_engine(app, lambda engine: engine.pause(calendar_id)))
    _console().print(
        Text(f"Paused {calendar.label}; `calsync resume {calendar.id}` undoes it.")
    )


@cli.command()
@click.argument("calendar_id", metavar="ID")
@pass_app
def resume(app: _App, calendar_id: str) -> None:
    """Sync a paused calendar again, starting with the next cycle."""
    calendar = _run(_with_engine(app, lambda engine: engine.resume(calendar_id)))
    _console().print(Text(f"Resumed {calendar.label}; it syncs in the next cycle."))


@cli.command()
@click.argument("calendar_id", metavar="ID")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def remove(app: _App, calendar_id: str, yes: bool) -> None:
    """Delete a calendar with its events and reminders."""

    async def work(engine: Engine) -> Calendar | None:
        calendar = await engine.get_calendar(calendar_id)
        if not yes and not click.confirm(
            f"Remove {calendar.label} with its events and reminders?"
        ):
            return None
        await engine.remove_calendar(calendar_id)
        return calendar

    calendar = _run(_with_engine(app, work))
    if calendar is None:
        _console().print("Nothing removed.")
        return
    _console().print(Text(f"Removed {calendar.label}."))


@cli.command(name="reseal-secrets")
@pass_app
def reseal_secrets(app: _App) -> None:
    """Encrypt every stored feed secret with the first of [store] secret_keys."""
    count = _run(_with_engine(app, lambda engine: engine.reseal_secrets()))
    _console().print(
        f"Resealed the feed secrets of {count} calendar(s) with the first key; "
        "older keys can now leave [store] secret_keys."
    )


# -- syncing --------------------------------------------------------------------


@cli.command()
@click.argument("calendar_id", metavar="[ID]", required=False)
@click.option("--all", "all_", is_flag=True, help="Sync every active calendar now.")
@click.option("--force", is_flag=True, help="Fetch without validators and re-parse.")
@click.option(
    "--confirm-removals",
    is_flag=True,
    help="Apply removals the mass-deletion guard holds back (with ID).",
)
@pass_app
def sync(
    app: _App,
    calendar_id: str | None,
    all_: bool,
    force: bool,
    confirm_removals: bool,
) -> None:
    """Sync one calendar (ID) or all of them (--all) now; exit 1 if any failed."""
    if (calendar_id is None) == (not all_):
        raise click.UsageError("give a calendar ID or --all (not both)")
    if all_ and confirm_removals:
        raise click.UsageError("--confirm-removals needs a calendar ID")
    console = _console()
    if calendar_id is not None:
        result = _run(
            _with_engine(
                app,
                lambda engine: engine.sync_calendar(
                    calendar_id, force=force, confirm_removals=confirm_removals
                ),
            )
        )
        results = [result]
    else:
        results = _run(
            _with_engine(app, lambda engine: _sync_all(engine, force, console))
        )
    for result in results:
        console.print(_sync_line(result, verbose=app.verbose))
    failed = [result for result in results if not result.ok]
    if len(results) > 1 or not results:
        console.print(
            f"{len(results)} calendar(s) synced, {len(failed)} failed."
            if results
            else "No active calendars to sync."
        )
    if failed:
        raise click.exceptions.Exit(1)


async def _sync_all(engine: Engine, force: bool, console: Console) -> list[SyncResult]:
    calendars = [c for c in await engine.list_calendars() if not c.paused]
    for calendar in calendars:
        await engine.request_sync(calendar.id)
    if not calendars:
        return []
    if not console.is_terminal:
        return list((await engine.sync_due(force=force)).results)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("Syncing", total=len(calendars))
        due = await engine.sync_due(
            force=force, progress=lambda result: progress.advance(task)
        )
    return list(due.results)


_OUTCOME_STYLES = {
    SyncOutcome.CHANGED: "green",
    SyncOutcome.UNCHANGED: "",
    SyncOutcome.FAILED: "red",
    SyncOutcome.HELD: "yellow",
    SyncOutcome.BUSY: "yellow",
    SyncOutcome.LOST: "red",
    SyncOutcome.SKIPPED: "",
}


def _sync_line(result: SyncResult, *, verbose: bool) -> Text:
    line = Text()
    line.append(f"{result.outcome!s:<9}", style=_OUTCOME_STYLES[result.outcome])
    line.append(f" {result.label}: ")
    line.append(_sync_detail(result))
    if result.problems:
        line.append(f"; {len(result.problems)} problem(s) in the feed", style="yellow")
        if verbose:
            for problem in result.problems:
                line.append(f"\n    {problem}")
    return line


def _sync_detail(result: SyncResult) -> str:
    if result.outcome is SyncOutcome.FAILED or result.outcome is SyncOutcome.LOST:
        # The line shows the label already; the error starts with it for logs.
        return (result.error or "failed").removeprefix(f"{result.label}: ")
    if result.outcome is SyncOutcome.BUSY:
        return "another worker is syncing it right now"
    if result.outcome is SyncOutcome.SKIPPED:
        return "not due any more: another worker synced it"
    if result.not_modified:
        detail = "not modified"
    else:
        detail = (
            f"{result.added} added, {result.updated} updated, "
            f"{result.removed} removed, {result.unchanged} unchanged"
        )
    if result.held_removals:
        detail += (
            f"; {result.held_removals} removal(s) held back by the mass-deletion "
            f"guard (`calsync sync {result.calendar_id} --confirm-removals` "
            "applies them)"
        )
    if result.notifications_created or result.notifications_cancelled:
        detail += (
            f"; reminders {result.notifications_created} created, "
            f"{result.notifications_cancelled} cancelled"
        )
    return detail


# -- status and insight ---------------------------------------------------------


@cli.command()
@click.option("--owner", help="Only this tenant's calendars.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 if a calendar is stale or failing, or a reminder is dead-lettered.",
)
@pass_app
@click.pass_context
def status(
    ctx: click.Context, app: _App, owner: str | None, as_json: bool, check: bool
) -> None:
    """Show calendar health, the notification queue and job timings."""
    report = _run(_with_engine(app, lambda engine: engine.status(owner=owner)))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_status(report)
    if check and not report.healthy:
        ctx.exit(1)


def _print_status(report: EngineStatus) -> None:
    now = report.checked_at
    console = _console()
    if not report.calendars:
        console.print("No calendars yet: add one with `calsync add URL`.")
    else:
        table = _table("Calendars")
        for column in ("ID", "NAME", "HEALTH", "CIRCUIT", "FAILURES"):
            table.add_column(column, no_wrap=True)
        for column in ("LAST SUCCESS", "NEXT SYNC"):
            table.add_column(column, no_wrap=True)
        for entry in report.calendars:
            calendar, state = entry.calendar, entry.calendar.state
            last = state.last_success_at
            due = state.next_sync_at
            table.add_row(
                calendar.id,
                Text(calendar.name or redact(calendar.url)),
                _health(entry),
                str(state.circuit),
                str(state.consecutive_failures),
                "never" if last is None else _ago(last, now),
                "-" if calendar.paused or due is None else _ago(due, now),
            )
        console.print(table)
        _print_errors(
            console,
            "Last errors",
            [(c.id, c.calendar.state.last_error) for c in report.calendars],
        )
    console.print()
    feeds = ", ".join(f"{count} {state}" for state, count in report.feeds.items())
    console.print(Text(f"Feeds: {feeds}"))
    queue = Text("Notifications: ")
    queue.append(f"{report.pending} pending, ")
    queue.append(f"{report.failed} failed", style="red" if report.failed else "")
    queue.append(f", {report.missed} missed")
    if report.failed:
        queue.append(" (dead letter: `calsync requeue --all-failed` retries them)")
    console.print(queue)
    mib = 2**20
    console.print(
        f"Parse caches (this process): {report.parse_cache_bytes / mib:.1f} of "
        f"{report.parse_cache_budget / mib:.0f} MiB, {report.parse_cached} calendars"
    )
    console.print()
    jobs = _table("Jobs")
    for column in ("JOB", "RUNS", "LAST", "FINISHED", "P50", "P95"):
        jobs.add_column(column, no_wrap=True)
    for job in report.jobs:
        jobs.add_row(
            job.job,
            str(job.runs),
            str(job.last_outcome) if job.last_outcome is not None else "-",
            "-" if job.last_finished_at is None else _ago(job.last_finished_at, now),
            _seconds(job.p50) if job.runs else "-",
            _seconds(job.p95) if job.runs else "-",
        )
    console.print(jobs)
    _print_errors(
        console, "Last job errors", [(job.job, job.last_error) for job in report.jobs]
    )


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        header_style="bold",
        pad_edge=False,
    )


def _print_errors(
    console: Console, title: str, errors: Iterable[tuple[str, str | None]]
) -> None:
    """Print each non-empty error on its own line under *title*, unwrapped."""
    shown = [(name, error) for name, error in errors if error]
    if not shown:
        return
    console.print()
    console.print(Text(title, style="bold"))
    for name, error in shown:
        console.print(Text.assemble(f"{name}  ", (" ".join(error.split()), "red")))


@cli.command()
@click.option(
    "--days",
    type=click.FloatRange(min=0, max=UPCOMING_MAX_DAYS, min_open=True),
    callback=lambda ctx, param, value: _finite("--days", value),
    default=7,
    show_default=True,
    help=f"How many days ahead, up to {UPCOMING_MAX_DAYS:g}.",
)
@click.option("--owner", help="Only this tenant's calendars.")
@pass_app
def upcoming(app: _App, days: float, owner: str | None) -> None:
    """List the events of the next days and the reminders they will fire."""
    items = _run(
        _with_engine(app, lambda engine: engine.upcoming(days=days, owner=owner))
    )
    console = _console()
    if not items:
        console.print(
            f"No events in the next {_days(days)} (paused calendars are not shown)."
        )
        return
    zone = app.zone
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("START", no_wrap=True)
    table.add_column("EVENT")
    table.add_column("CALENDAR")
    table.add_column("REMINDERS")
    for item in items:
        occurrence = item.occurrence
        start = (
            f"{occurrence.start_date} all day"
            if occurrence.all_day and occurrence.start_date is not None
            else _local(occurrence.start, zone)
        )
        reminders = Text()
        if not item.fires:
            reminders.append("none (cancelled)" if occurrence.cancelled else "none")
        for position, (lead, fire_at, state) in enumerate(item.fires):
            if position:
                reminders.append("\n")
            reminders.append(
                f"{format_duration(lead)} before, {_local(fire_at, zone, date=False)}: "
            )
            reminders.append(state, style=_STATE_STYLES.get(state, ""))
        table.add_row(
            start,
            Text(occurrence.summary or "(no summary)"),
            Text(item.calendar.name or item.calendar.id),
            reminders,
        )
    console.print(table)


_STATE_STYLES = {
    "scheduled": "cyan",
    "pending": "yellow",
    "delivered": "green",
    "failed": "red",
    "cancelled": "dim",
    "missed": "red",
}


@cli.command()
@click.argument("query", metavar="ID_OR_UID")
@pass_app
def explain(app: _App, query: str) -> None:
    """Say why reminders of a calendar (ID) or an event (UID) will fire, or not."""
    explanations = _run(_with_engine(app, lambda engine: engine.explain(query)))
    console = _console()
    for position, explanation in enumerate(explanations):
        if position:
            console.print()
        first, *rest = explanation.lines or ("",)
        console.print(Text(first, style="bold"))
        for line in rest:
            console.print(Text(f"  - {line}"))


@cli.command()
@click.argument("notification_ids", nargs=-1, metavar="[NOTIFICATION_ID]...")
@click.option("--all-failed", is_flag=True, help="Requeue every failed notification.")
@pass_app
def requeue(app: _App, notification_ids: tuple[str, ...], all_failed: bool) -> None:
    """Make dead-letter (failed) notifications pending again."""
    if bool(notification_ids) == all_failed:
        raise click.UsageError("give notification ids or --all-failed (not both)")

    async def work(engine: Engine) -> int:
        if not all_failed:
            return await engine.requeue(notification_ids)
        # In batches; an id seen before failed again meanwhile and is left as it is.
        total, seen = 0, set[str]()
        while (
            fresh := {
                record.id
                for record in await engine.notifications(
                    status=NotificationStatus.FAILED, limit=_REQUEUE_BATCH
                )
            }
            - seen
        ):
            seen |= fresh
            total += await engine.requeue(fresh)
        return total

    count = _run(_with_engine(app, work))
    _console().print(f"Requeued {count} notification(s).")


# -- demo -----------------------------------------------------------------------


@cli.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    callback=lambda ctx, param, value: _finite("--duration", value),
    help="Stop after this many seconds [default: run until Ctrl-C].",
)
def demo(duration: float | None) -> None:
    """Watch calsync work with no setup: sample feeds, a temp store, live reminders."""
    from calsync.cli.demo import run_demo

    with contextlib.suppress(KeyboardInterrupt):
        _run(run_demo(duration=duration, console=_console()))


def _finite(option: str, value: float | None) -> float | None:
    """Refuse NaN (which passes every range check) and infinity."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number", param_hint=option)
    return value


# -- formatting -----------------------------------------------------------------


def _leads(leads: Iterable[timedelta]) -> str:
    return ", ".join(format_duration(lead) for lead in leads) or "none"


def _state(calendar: Calendar) -> Text:
    if calendar.paused:
        return Text("paused", style="yellow")
    return Text("active", style="green")


_FEED_STYLES = {
    FeedState.OK: "green",
    FeedState.PAUSED: "yellow",
    FeedState.CIRCUIT_OPEN: "red",
    FeedState.FAILING: "red",
    FeedState.STALE: "red",
}


def _health(entry: CalendarStatus) -> Text:
    """Show the calendar's `FeedState` as the metrics count it; "new" before a sync."""
    state = entry.feed_state
    if state is FeedState.OK and entry.calendar.state.last_success_at is None:
        return Text("new")
    return Text(str(state), style=_FEED_STYLES[state])


def _ago(instant: datetime, now: datetime) -> str:
    seconds = int((instant - now).total_seconds())
    size = abs(seconds)
    if size < 60:
        text = f"{size}s"
    elif size < 3600:
        text = f"{size // 60}m"
    elif size < 86_400:
        text = f"{size // 3600}h{size % 3600 // 60:02d}m"
    else:
        text = f"{size // 86_400}d{size % 86_400 // 3600}h"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _local(instant: datetime, zone: tzinfo, *, date: bool = True) -> str:
    local = instant.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M %Z" if date else "%H:%M %Z")


def _seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def _days(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


# -- logging --------------------------------------------------------------------

_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message, ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on whatever `sys.stderr` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        """The current `sys.stderr`."""
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging(level: str, fmt: str) -> Callable[[], None]:
    """Send logs to stderr as text or JSON lines, at ``level``; return the undo."""
    handler = _StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    previous_level = root.level
    removed = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    for existing in removed:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)

    def undo() -> None:
        root.removeHandler(handler)
        for existing in removed:
            root.addHandler(existing)
        root.setLevel(previous_level)

    return undo
