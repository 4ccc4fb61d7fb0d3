"""No secret from a feed URL or its credentials reaches a log line, an error or a repr.

Each case fetches ``http://user:password@127.0.0.1:port/...?token=...`` with a
bearer token from a real server, captures every log record calsync and the
aiohttp client emit, and searches them, the exception (message, repr, full
traceback with causes and contexts) and the result for the secrets.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from _feed_server import FeedServer
from calsync import BasicAuth, BearerAuth, FetchError, HttpFetcher, PostgresStore
from calsync.cli.commands import cli
from calsync.config import ConfigError, load_config
from calsync.core import redact

pytest_plugins = ["_feed_server"]

SECRETS = ("s3cr3t-token", "pa55-word-77", "b34rer-xyz-99")
# Records from the test server itself are not calsync's output: the server was
# sent the token on purpose, like any real feed server is.
SERVER_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access")

CASES = {
    "fetched": "/cal.ics",
    "not_calendar": "/html",
    "server_error": "/status/500",
    "rate_limited": "/status/429",
    "timeout": "/slow-first-byte",
    "reset": "/reset",
    "truncated": "/truncated",
    "too_large": "/big",
    "redirect_loop": "/loop",
    "blocked_redirect": "/redirect",
    "odd_content_type": "/typed",
}
EXTRA_QUERY = {
    "blocked_redirect": "to=http://169.254.169.254/x%3Ftoken%3Ds3cr3t-token&",
    "odd_content_type": "type=text/plain&",
}


def secret_url(server: FeedServer, case: str) -> str:
    query = f"{EXTRA_QUERY.get(case, '')}token=s3cr3t-token"
    path = CASES[case]
    return server.url(f"{path}?{query}").replace("http://", "http://user:pa55-word-77@")


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
async def fetcher() -> AsyncIterator[HttpFetcher]:
    async with HttpFetcher(
        allow=["127.0.0.1"],
        total_timeout=timedelta(seconds=0.5),
        max_body_bytes=1024 * 1024,
    ) as fetcher:
        yield fetcher


@pytest.mark.parametrize("case", sorted(CASES))
async def test_no_secret_reaches_logs_errors_or_reprs(
    case: str,
    fetcher: HttpFetcher,
    feed_server: FeedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):
        try:
            result = await fetcher.fetch(
                secret_url(feed_server, case), auth=BearerAuth("b34rer-xyz-99")
            )
        except FetchError as error:
            shown += [str(error), repr(error), *traceback.format_exception(error)]
            shown += [str(value) for value in vars(error).values()]
        else:
            shown += [repr(result), result.final_url]
    for record in caplog.records:
        if not record.name.startswith(SERVER_LOGGERS):
            shown += [record.getMessage(), repr(vars(record))]
    assert feed_server.requests, "the case never reached the server"
    assert shown
    assert leaked("\n".join(shown)) == []


async def test_the_server_really_received_the_secrets(
    fetcher: HttpFetcher, feed_server: FeedServer
) -> None:
    await fetcher.fetch(secret_url(feed_server, "fetched"))
    seen = feed_server.requests[-1]
    assert "token=s3cr3t-token" in seen.query
    assert seen.headers["Authorization"] == "Basic dXNlcjpwYTU1LXdvcmQtNzc="


def test_credentials_and_fetcher_reprs_hold_no_secret() -> None:
    texts = [
        repr(BasicAuth("user", "pa55-word-77")),
        repr(BearerAuth("b34rer-xyz-99")),
        repr(HttpFetcher(allow=["127.0.0.1"])),
    ]
    assert leaked("\n".join(texts)) == []


def test_redact_hides_every_secret_of_the_issue_url() -> None:
    url = "https://user:pa55-word-77@host/cal.ics?token=s3cr3t-token"
    assert redact(url) == "https://***@host/cal.ics?token=***"


# -- store and feed URLs through the command line ------------------------------
# Every error path that shows a store URL or a feed URL, with the secret in each
# form it takes: URL user info, a query parameter, a key=value connection string,
# and a percent-encoding the driver cannot read (and so quotes back).

PASSWORD = "pa55-word-77"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def store_urls() -> dict[str, str]:
    port = closed_port()
    return {
        "userinfo": f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/calsync",
        "query": f"postgresql://app@127.0.0.1:{port}/calsync?password={PASSWORD}",
        "key=value": f"host=127.0.0.1 port={port} user=app password={PASSWORD}",
        "key=value quoted": f"host=127.0.0.1 port={port} password='{PASSWORD} x'",
        "percent-broken": f"postgresql://app:{PASSWORD}%zz@127.0.0.1:{port}/calsync",
        "percent-broken query": f"postgresql://127.0.0.1/calsync?password={PASSWORD}%",
        "not a store URL": f"mysql://app:{PASSWORD}@127.0.0.1/calsync",
        "not a store URL, key=value-ish": f"nonsense password={PASSWORD}",
    }


def run_cli(*args: str, env: dict[str, str]) -> str:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("form", sorted(store_urls()))
def test_a_store_url_secret_never_reaches_the_command_line(
    form: str,
) -> None:
    url = store_urls()[form]
    output = run_cli("list", env={"CALSYNC_STORE_URL": url, "CALSYNC_CONFIG": ""})
    assert output.startswith("Error: ")
    assert len(output.strip().splitlines()) == 1
    assert PASSWORD not in output, output


@pytest.mark.parametrize("form", sorted(store_urls()))
def test_a_store_url_secret_never_reaches_a_config_repr_or_error(form: str) -> None:
    url = store_urls()[form]
    try:
        shown = repr(load_config(None, env={"CALSYNC_STORE_URL": url}))
    except ConfigError as error:
        shown = f"{error}\n{error!r}\n" + "".join(traceback.format_exception(error))
    assert PASSWORD not in shown, shown


def feed_urls() -> dict[str, str]:
    return {
        "userinfo, blocked": f"http://ann:{PASSWORD}@127.0.0.1:9/cal.ics",
        "query, blocked": f"http://127.0.0.1:9/cal.ics?token={PASSWORD}",
        "query, localhost": f"http://localhost:9/cal.ics?token={PASSWORD}",
        "userinfo, bad host": f"http://ann:{PASSWORD}@exa mple.com/cal.ics",
        "query, bad scheme": f"ftp://example.com/cal.ics?token={PASSWORD}",
        "percent-broken userinfo": f"http://ann:{PASSWORD}%zz@127.0.0.1:9/c.ics",
        "path token": f"http://127.0.0.1:9/private-{PASSWORD}/basic.ics",
    }


@pytest.mark.parametrize("form", sorted(feed_urls()))
def test_a_feed_url_secret_never_reaches_calsync_add(
    form: str,
) -> None:
    env = {"CALSYNC_STORE_URL": "memory:", "CALSYNC_CONFIG": ""}
    output = run_cli("add", feed_urls()[form], env=env)
    assert output.startswith("Error: ")
    assert PASSWORD not in output, output


@pytest.mark.parametrize("form", sorted(feed_urls()))
def test_a_feed_url_secret_never_reaches_a_config_error(
    form: str, tmp_path: Path
) -> None:
    path = tmp_path / "calsync.toml"
    url = feed_urls()[form]
    path.write_text(
        f'[[calendars]]\nurl = "{url}"\n[[calendars]]\nurl = "{url}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    shown = f"{raised.value}\n{raised.value!r}"
    assert PASSWORD not in shown, shown


@pytest.mark.parametrize("form", [form for form in store_urls() if "not" not in form])
def test_a_store_url_secret_never_reaches_the_store_repr(form: str) -> None:
    store = PostgresStore(store_urls()[form])
    assert PASSWORD not in f"{store!r} {store}"
