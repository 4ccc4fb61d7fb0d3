"""The HTTP API on a real server (127.0.0.1) over a real SQLite store."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from _feeds import event, ics
from _web import (
    FEED_SECRET,
    T0,
    TOKEN,
    FlakyHandler,
    served,
    sqlite_engine,
    web_settings,
)
from calsync import ConfigError, Engine, HttpFetcher, ValidationError, load_config
from calsync.core import HttpSettings
from calsync.testing import FeedServer, ManualClock, MemoryStore
from calsync.web import PROBLEM_TYPE, create_app, openapi_document
from calsync.web.server import check_bind

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@attrs.define
class Api:
    """A served app, the engine behind it, its feed server, clock and handler."""

    url: str
    http: aiohttp.ClientSession
    engine: Engine
    feeds: FeedServer
    clock: ManualClock
    handler: FlakyHandler

    async def call(
        self, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        async with self.http.request(
            method, self.url + path, headers=headers, allow_redirects=False, **kwargs
        ) as response:
            text = await response.text()
            kind = response.content_type
            body = await response.json(content_type=None) if "json" in kind else text
            return response.status, body, response

    async def add(self, path: str = "/good.ics", **fields: Any) -> dict[str, Any]:
        url = self.feeds.url(path) + f"?token={FEED_SECRET}"
        status, body, _ = await self.call(
            "POST", "/api/calendars", json={"url": url, **fields}
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = ManualClock(T0)
    async with (
        FeedServer() as feeds,
        sqlite_engine(tmp_path, clock) as engine,
        served(create_app(engine, token=TOKEN, owner_header="X-Owner")) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        yield Api(url, http, engine, feeds, clock, FlakyHandler())


def assert_problem(status: int, body: Any, response: aiohttp.ClientResponse) -> None:
    assert 400 <= status < 500
    assert response.content_type == PROBLEM_TYPE
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in body["detail"]


async def test_the_openapi_document_lists_every_operation_and_needs_no_token(
    api: Api,
) -> None:
    status, document, _ = await api.call("GET", "/openapi.json", auth=False)
    assert status == 200
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "/"}]
    operations = {
        spec["operationId"]
        for path in document["paths"].values()
        for spec in path.values()
    }
    assert operations == {
        spec["operationId"]
        for path in openapi_document()["paths"].values()
        for spec in path.values()
    }
    assert len(operations) == 14


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "not-bearer"],
)
async def test_a_request_without_the_token_gets_401_with_a_problem(
    api: Api, headers: dict[str, str]
) -> None:
    status, body, response = await api.call(
        "GET", "/api/calendars", auth=False, headers=headers
    )
    assert status == 401
    assert_problem(status, body, response)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_feed_secret_never_appears_in_a_response(api: Api) -> None:
    api.feeds.fail("/bad.ics", 500)
    calendar = await api.add("/bad.ics")
    assert "token=***" in calendar["url"]
    _, result, _ = await api.call("POST", f"/api/calendars/{calendar['id']}/sync")
    assert result["outcome"] == "failed"
    for path in (
        "/api/calendars",
        f"/api/calendars/{calendar['id']}",
        "/api/status",
        f"/api/explain?q={calendar['id']}",
        "/api/jobs",
    ):
        _, _, response = await api.call("GET", path)
        assert FEED_SECRET not in await response.text(), path
    assert FEED_SECRET not in str(result)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": b"url=x", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": {"url": "http://127.0.0.1/x.ics", "colour": "red"}}, 422),
        ({"json": {"name": "no url"}}, 422),
        ({"json": {"url": "http://127.0.0.1/x.ics", "every": "sometimes"}}, 422),
        ({"json": {"url": "http://127.0.0.1/x.ics", "leads": ["-5m"]}}, 422),
        ({"json": {"url": "http://127.0.0.1/x.ics", "tz": "Mars/Olympus"}}, 422),
        ({"json": {"url": "ftp://127.0.0.1/x.ics"}}, 422),
        ({"json": [1, 2]}, 422),
    ],
    ids=[
        "not-json",
        "not-json-type",
        "unknown-field",
        "no-url",
        "bad-schedule",
        "bad-lead",
        "bad-zone",
        "bad-scheme",
        "not-an-object",
    ],
)
async def test_bad_input_gets_a_4xx_problem_never_a_500(
    api: Api, kwargs: dict[str, Any], expected: int
) -> None:
    status, body, response = await api.call("POST", "/api/calendars", **kwargs)
    assert status == expected, body
    assert_problem(status, body, response)


@pytest.mark.parametrize(
    "path",
    [
        "/api/calendars?limit=0",
        "/api/calendars?limit=abc",
        "/api/calendars?state=weird",
        "/api/upcoming?days=0",
        "/api/upcoming?days=nan",
        "/api/explain",
        "/api/jobs?job=nope",
        "/api/notifications/failed?offset=-1",
    ],
)
async def test_a_bad_query_parameter_gets_400(api: Api, path: str) -> None:
    status, body, response = await api.call("GET", path)
    assert status == 400
    assert_problem(status, body, response)


async def test_unknown_paths_and_methods_get_problems(api: Api) -> None:
    status, body, response = await api.call("GET", "/api/nothing")
    assert status == 404
    assert_problem(status, body, response)
    status, body, response = await api.call("PUT", "/api/status")
    assert status == 405
    assert_problem(status, body, response)
    assert "GET" in response.headers["Allow"]


async def test_calendars_are_added_listed_searched_and_paged(api: Api) -> None:
    for number in range(5):
        await api.add(f"/feed{number}.ics", name=f"Team {number}")
    _, page, _ = await api.call("GET", "/api/calendars?limit=2&offset=2")
    assert page["total"] == 5
    assert [c["name"] for c in page["items"]] == ["Team 2", "Team 3"]
    _, found, _ = await api.call("GET", "/api/calendars?q=team%204")
    assert [c["name"] for c in found["items"]] == ["Team 4"]


async def test_a_calendar_is_updated_paused_resumed_and_removed(api: Api) -> None:
    calendar = await api.add(name="Work")
    path = f"/api/calendars/{calendar['id']}"
    status, updated, _ = await api.call(
        "PATCH", path, json={"name": "Office", "leads": ["5m", "1h"]}
    )
    assert status == 200
    assert (updated["name"], updated["leads"]) == ("Office", ["5m", "1h"])
    _, paused, _ = await api.call("POST", path + "/pause")
    assert paused["paused"] is True
    _, paused_only, _ = await api.call("GET", "/api/calendars?state=paused")
    assert paused_only["total"] == 1
    _, resumed, _ = await api.call("POST", path + "/resume")
    assert resumed["paused"] is False
    status, _, _ = await api.call("DELETE", path)
    assert status == 204
    status, body, response = await api.call("GET", path)
    assert status == 404
    assert_problem(status, body, response)


async def test_adding_a_feed_twice_is_a_409_conflict(api: Api) -> None:
    await api.add()
    url = api.feeds.url("/good.ics") + f"?token={FEED_SECRET}"
    status, body, response = await api.call("POST", "/api/calendars", json={"url": url})
    assert status == 409
    assert_problem(status, body, response)


async def test_sync_now_reports_the_feed_error_and_the_calendar_keeps_it(
    api: Api,
) -> None:
    api.feeds.fail("/bad.ics", 500)
    calendar = await api.add("/bad.ics")
    status, result, _ = await api.call("POST", f"/api/calendars/{calendar['id']}/sync")
    assert status == 200
    assert result["outcome"] == "failed"
    assert "500" in result["error"]
    _, stored, _ = await api.call("GET", f"/api/calendars/{calendar['id']}")
    assert stored["state"]["consecutive_failures"] == 1
    assert "500" in stored["state"]["last_error"]
    _, status_body, _ = await api.call("GET", "/api/status")
    assert status_body["calendars"]["failing"] == 1
    assert status_body["healthy"] is False


async def test_upcoming_explain_and_job_history_after_a_sync(api: Api) -> None:
    api.feeds.set("/good.ics", ics(event("standup", T0 + timedelta(hours=2))))
    calendar = await api.add()
    _, result, _ = await api.call("POST", f"/api/calendars/{calendar['id']}/sync")
    assert (result["outcome"], result["added"]) == ("changed", 1)
    _, upcoming, _ = await api.call("GET", "/api/upcoming?days=1")
    assert [(u["uid"], u["reminders"][0]["lead"]) for u in upcoming["items"]] == [
        ("standup", "10m")
    ]
    _, explained, _ = await api.call("GET", "/api/explain?q=standup")
    assert explained["items"][0]["uid"] == "standup"
    assert explained["items"][0]["lines"]
    _, runs, _ = await api.call("GET", "/api/jobs?job=sync_calendar")
    assert [run["outcome"] for run in runs["items"]] == ["ok"]
    assert runs["items"][0]["duration_seconds"] >= 0


async def test_a_failed_reminder_is_listed_requeued_and_then_delivered(
    api: Api,
) -> None:
    api.feeds.set("/good.ics", ics(event("review", T0 + timedelta(minutes=15))))
    calendar = await api.add()
    await api.call("POST", f"/api/calendars/{calendar['id']}/sync")
    api.clock.advance(timedelta(minutes=6))
    await api.engine.check_notifications()
    await api.engine.dispatch_notifications(api.handler)
    _, dead, _ = await api.call("GET", "/api/notifications/failed")
    assert dead["total"] == 1
    [failed] = dead["items"]
    assert (failed["uid"], failed["status"], failed["attempts"]) == (
        "review",
        "failed",
        1,
    )
    status, requeued, _ = await api.call(
        "POST", f"/api/notifications/{failed['id']}/requeue"
    )
    assert (status, requeued) == (200, {"requeued": 1})
    api.handler.up = True
    await api.engine.dispatch_notifications(api.handler)
    assert api.handler.delivered == [failed["id"]]
    _, dead, _ = await api.call("GET", "/api/notifications/failed")
    assert dead == {"items": [], "total": 0, "offset": 0, "limit": 50}
    status, body, response = await api.call(
        "POST", f"/api/notifications/{failed['id']}/requeue"
    )
    assert status == 404
    assert_problem(status, body, response)


async def test_the_owner_header_scopes_every_request_to_that_owner(api: Api) -> None:
    mine = await api.add("/a.ics", owner="alice")
    theirs = await api.add("/b.ics", owner="bob")
    alice = {"X-Owner": "alice"}
    _, page, _ = await api.call("GET", "/api/calendars", headers=alice)
    assert [c["id"] for c in page["items"]] == [mine["id"]]
    for method, suffix in (("GET", ""), ("POST", "/pause"), ("POST", "/sync")):
        status, _, _ = await api.call(
            method, f"/api/calendars/{theirs['id']}{suffix}", headers=alice
        )
        assert status == 404
    status, _, _ = await api.call(
        "POST",
        "/api/calendars",
        headers=alice,
        json={"url": api.feeds.url("/c.ics"), "owner": "bob"},
    )
    assert status == 403
    status, added, _ = await api.call(
        "POST", "/api/calendars", headers=alice, json={"url": api.feeds.url("/c.ics")}
    )
    assert (status, added["owner"]) == (201, "alice")
    status, _, _ = await api.call("GET", "/api/jobs", headers=alice)
    assert status == 403
    _, unscoped, _ = await api.call("GET", "/api/calendars")
    assert unscoped["total"] == 3


async def test_a_cross_site_request_is_refused(api: Api) -> None:
    calendar = await api.add()
    status, body, response = await api.call(
        "POST",
        f"/api/calendars/{calendar['id']}/pause",
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert status == 403
    assert_problem(status, body, response)
    status, _, _ = await api.call(
        "POST",
        f"/api/calendars/{calendar['id']}/pause",
        headers={"Origin": "http://evil.example"},
    )
    assert status == 403


async def test_the_app_mounts_under_a_prefix_of_a_host_app(tmp_path: Path) -> None:
    async with sqlite_engine(tmp_path) as engine:
        host = web.Application()
        host.add_subapp("/calsync/", create_app(engine, token=TOKEN))
        async with served(host) as url, aiohttp.ClientSession() as http:
            async with http.get(url + "/calsync/openapi.json") as response:
                document = await response.json()
            assert document["servers"] == [{"url": "/calsync/"}]
            async with http.get(url + "/calsync/api/status", headers=AUTH) as response:
                assert response.status == 200
            async with http.get(url + "/calsync/", allow_redirects=False) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/calsync/login"


async def test_the_dashboard_logs_in_with_the_token_into_a_strict_cookie(
    api: Api,
) -> None:
    status, _, response = await api.call("GET", "/", auth=False)
    assert (status, response.headers["Location"]) == (303, "/login")
    status, _, response = await api.call(
        "POST", "/login", auth=False, data={"token": "wrong"}
    )
    assert response.headers["Location"] == "/login?failed=1"
    status, _, response = await api.call(
        "POST", "/login", auth=False, data={"token": TOKEN}
    )
    assert status == 303
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    status, page, _ = await api.call("GET", "/", auth=False)
    assert status == 200
    assert "<h1>calsync" in page


async def test_a_dashboard_form_without_its_csrf_token_is_refused(api: Api) -> None:
    calendar = await api.add()
    await api.call("POST", "/login", auth=False, data={"token": TOKEN})
    status, body, response = await api.call(
        "POST", f"/calendars/{calendar['id']}/pause", auth=False, data={"csrf": "x"}
    )
    assert status == 403
    assert_problem(status, body, response)
    _, stored, _ = await api.call("GET", f"/api/calendars/{calendar['id']}")
    assert stored["paused"] is False


async def test_the_dashboard_pages_and_searches_10000_calendars() -> None:
    # In memory: adding 10,000 calendars one by one to SQLite takes a minute;
    # the paging and search under test are the app's, the same over any store.
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(MemoryStore(), fetcher, settings=web_settings()) as engine:
        for number in range(10_000):
            await engine.add_calendar(
                f"http://127.0.0.1/{number}.ics", name=f"calendar {number:05}"
            )
        async with served(create_app(engine)) as url, aiohttp.ClientSession() as http:
            async with http.get(url + "/?page=3") as response:
                page = await response.text()
            assert page.count('data-calendar="') == 50
            assert "page 3 of 200" in page
            async with http.get(url + "/?q=calendar+04242") as response:
                found = await response.text()
            assert found.count('data-calendar="') == 1
            assert "calendar 04242" in found


def test_a_bind_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ValidationError, match=r"\[http\] token \(CALSYNC_HTTP_TOKEN\)"):
        check_bind("0.0.0.0:8080", None)
    assert check_bind("0.0.0.0:8080", TOKEN) == ("0.0.0.0", 8080)
    assert check_bind("[::1]:8080", None) == ("::1", 8080)
    assert check_bind("localhost:1", None) == ("localhost", 1)


def test_calsync_run_refuses_an_open_public_bind_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "calsync", "run", "--http", "0.0.0.0:8080"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CALSYNC_HTTP_TOKEN" in lines[0]


async def test_calsync_run_http_serves_the_api_next_to_the_runner(
    tmp_path: Path,
) -> None:
    environment = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ":".join(sys.path),
        "CALSYNC_STORE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "CALSYNC_HTTP_TOKEN": TOKEN,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "calsync",
        "run",
        "--http",
        "127.0.0.1:0",
        cwd=tmp_path,
        env=environment,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        url = None
        while url is None:
            line = (await process.stderr.readline()).decode()
            assert line, "calsync run ended before it served"
            found = re.search(r"serving the HTTP API and dashboard on (\S+)", line)
            url = found[1] if found else None
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "api/status", headers=AUTH) as response,
        ):
            assert response.status == 200
            assert (await response.json())["calendars"]["total"] == 0
        # The bundled server serves calsync.observe's routes too, like Prometheus
        # and a load balancer call them: without the API token.
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "readyz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            async with http.get(url + "metrics") as response:
                assert response.status == 200
                assert "calsync_feeds" in await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
    assert process.returncode == 0


def test_the_http_section_is_read_from_the_environment_with_the_token_hidden() -> None:
    config = load_config(
        None,
        env={
            "CALSYNC_HTTP_BIND": "0.0.0.0:8080",
            "CALSYNC_HTTP_TOKEN": TOKEN,
            "CALSYNC_HTTP_OWNER_HEADER": "X-Calsync-Owner",
        },
    )
    assert config.http == HttpSettings("0.0.0.0:8080", TOKEN, "X-Calsync-Owner")
    assert TOKEN not in repr(config)


def test_a_bad_bind_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="CALSYNC_HTTP_BIND: must be host:port"):
        load_config(None, env={"CALSYNC_HTTP_BIND": "8080"})


async def test_a_search_never_finds_a_calendar_by_its_secret(api: Api) -> None:
    await api.add(name="Work")
    _, by_secret, _ = await api.call("GET", f"/api/calendars?q={FEED_SECRET}")
    assert by_secret["total"] == 0
    _, by_url, _ = await api.call("GET", "/api/calendars?q=good.ics%3Ftoken%3D***")
    assert by_url["total"] == 1
