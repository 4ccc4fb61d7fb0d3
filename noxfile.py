"""Developer tasks: `nox` runs the tests, the linters and the type checker."""

from __future__ import annotations

import os
from pathlib import Path

import nox
import nox.command

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = True

ADAPTERS = ["adapters/apscheduler", "adapters/celery"]
TYPED_PATHS = ["src", *(f"{adapter}/src" for adapter in ADAPTERS)]


def install_with_adapters(session: nox.Session, extras: str) -> None:
    """Install calsync and both adapters, editable, in one resolution."""
    adapters = [arg for path in ADAPTERS for arg in ("-e", f"{path}[{extras}]")]
    session.install("-e", f".[{extras}]", *adapters)


@nox.session
def tests(session: nox.Session) -> None:
    """Run calsync's suite, then each adapter's; every suite runs and reports.

    Each suite runs in its own pytest (their conftest modules share a name). A
    failing suite does not stop the next one; the session fails at the end, naming
    every suite that failed. pytest's exit status 5 (no tests collected) fails too.
    """
    install_with_adapters(session, "test")
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    suites = [[], *([f"{adapter}/tests"] for adapter in ADAPTERS)]
    failed = [
        " ".join(["pytest", *suite])
        for suite in suites
        if not run_suite(session, suite)
    ]
    if failed:
        session.error(
            f"{len(failed)} of {len(suites)} suites failed: {'; '.join(failed)}"
        )


def run_suite(session: nox.Session, suite: list[str]) -> bool:
    """Run one pytest suite; whether it passed (exit 0: tests ran, none failed)."""
    try:
        session.run("pytest", *suite)
    except nox.command.CommandFailed:
        return False
    return True


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_with_adapters(session, "test")
    session.install("-e", ".[typecheck]", "celery-types>=0.26")
    session.run("mypy", "--strict", *TYPED_PATHS)


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


# The services the benchmarks measure against; one that is unset is skipped,
# with a line saying so, by each benchmark that would use it.
BENCH_SERVICES = {
    "CALSYNC_TEST_POSTGRES_URL": "PostgreSQL (bench_engine, bench_store, bench_celery)",
    "CALSYNC_TEST_MARIADB_URL": "MariaDB (bench_store)",
    "CALSYNC_TEST_REDIS_URL": "Redis (bench_celery's broker)",
}


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmarks/bench_*.py, or those named: nox -s bench -- store fetch.

    Every benchmark runs, each in turn, even when one fails; the session fails
    at the end naming them. Services come from the CALSYNC_TEST_*_URL variables.
    """
    adapters = [arg for path in ADAPTERS for arg in ("-e", path)]
    session.install("-e", ".[bench,metrics,web]", *adapters)
    for variable, service in BENCH_SERVICES.items():
        if not os.environ.get(variable):
            session.warn(f"{variable} is not set: {service} will be skipped")
    wanted = set(session.posargs)
    scripts = [
        script
        for script in sorted(Path("benchmarks").glob("bench_*.py"))
        if not wanted or script.stem.removeprefix("bench_") in wanted
    ]
    unknown = wanted - {script.stem.removeprefix("bench_") for script in scripts}
    if unknown:
        session.error(f"no such benchmark: {', '.join(sorted(unknown))}")
    failed = [script.name for script in scripts if not run_script(session, script)]
    if failed:
        session.error(f"{len(failed)} of {len(scripts)} benchmarks failed: {failed}")


def run_script(session: nox.Session, script: Path) -> bool:
    """Run one benchmark script; whether it finished (exit 0)."""
    try:
        session.run("python", str(script))
    except nox.command.CommandFailed:
        return False
    return True


@nox.session
def fuzz(session: nox.Session) -> None:
    """Parse 100,000 mutated corpus feeds, a worker process a core.

    nox -s fuzz [-- --inputs N --start S --workers W --timeout SECONDS]
    """
    session.install("-e", ".")
    session.run("python", "tests/fuzz_parse.py", *session.posargs)
