"""Notification handlers: the Delivery payload, invoke, logging and signed webhooks.

Webhook tests post to a real aiohttp server on 127.0.0.1 that records every
request and answers with whatever status a path asks for.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import pickle
import socket
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from multidict import CIMultiDict
from standardwebhooks import Webhook
from standardwebhooks import WebhookVerificationError as StandardVerificationError

from _feed_server import StaticResolver
from calsync import (
    BearerAuth,
    Calendar,
    CalsyncError,
    Notification,
    Occurrence,
    ValidationError,
)
from calsync.config import build_handler, load_config
from calsync.core import OccurrenceKey
from calsync.handlers import (
    LoggingHandler,
    WebhookHandler,
    WebhookVerificationError,
    new_webhook_secret,
    sign_webhook,
    verify_webhook,
)
from calsync.handlers.delivery import Delivery, DeliveryError, invoke

SECRET_BASE64 = (
    "czNjcjN0LWtleS1vZi10aGUtd2ViaG9vay03MQ=="  # b"s3cr3t-key-of-the-webhook-71"
)
SECRET = f"whsec_{SECRET_BASE64}"
URL_TOKEN = "t0ken-in-url-88"
FEED_TOKEN = "feed-t0ken-42"
SECRETS = (SECRET_BASE64.rstrip("="), "s3cr3t-key", URL_TOKEN, FEED_TOKEN)
NOW = datetime(2026, 3, 30, 7, 20, tzinfo=UTC)
START = datetime(2026, 3, 30, 7, 30, tzinfo=UTC)  # 09:30 CEST in Berlin


def calendar(name: str | None = "Work") -> Calendar:
    return Calendar(
        url=f"https://cal.example/private-abc123/basic.ics?token={FEED_TOKEN}",
        created_at=NOW - timedelta(days=3),
        id="cal-1",
        owner="alice",
        name=name,
        auth=BearerAuth(FEED_TOKEN),
    )


def occurrence(**changes: Any) -> Occurrence:
    base = Occurrence(
        key=OccurrenceKey("standup@example", "20260330T073000Z"),
        start=START,
        end=START + timedelta(minutes=15),
        summary="Standup",
        location="Room 4",
        description="Daily sync",
        status="CONFIRMED",
        tzid="Europe/Berlin",
    )
    return attrs.evolve(base, **changes)


def delivery(
    *,
    event: Occurrence | None = None,
    lead: timedelta = timedelta(minutes=10),
    attempt: int = 1,
    name: str | None = "Work",
    missing: bool = False,
) -> Delivery:
    event = event or occurrence()
    return Delivery(
        id="n-0123456789abcdef",
        calendar=calendar(name),
        notification=Notification(key=event.key, lead=lead, start=event.start),
        occurrence=None if missing else event,
        attempt=attempt,
    )


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


# --- Delivery.payload ---------------------------------------------------------


def test_payload_has_the_documented_keys_in_a_stable_order() -> None:
    payload = delivery().payload()
    assert list(payload) == [
        "id",
        "attempt",
        "calendar",
        "uid",
        "recurrence_id",
        "start",
        "lead_seconds",
        "fire_at",
        "event",
    ]
    assert payload["calendar"] == {"id": "cal-1", "name": "Work", "owner": "alice"}
    assert payload["start"] == "2026-03-30T07:30:00Z"
    assert payload["fire_at"] == "2026-03-30T07:20:00Z"
    assert payload["lead_seconds"] == 600
    assert payload["event"] == {
        "uid": "standup@example",
        "recurrence_id": "20260330T073000Z",
        "summary": "Standup",
        "location": "Room 4",
        "description": "Daily sync",
        "status": "CONFIRMED",
        "start": "2026-03-30T07:30:00Z",
        "end": "2026-03-30T07:45:00Z",
        "all_day": False,
        "start_date": None,
        "end_date": None,
        "tzid": "Europe/Berlin",
    }


def test_payload_is_json_and_never_holds_the_calendar_url_or_auth() -> None:
    text = json.dumps(delivery().payload())
    assert leaked(text) == []
    assert "cal.example" not in text


def test_payload_of_an_all_day_event_carries_its_local_dates() -> None:
    event = occurrence(
        start=datetime(2026, 4, 2, 22, tzinfo=UTC),
        end=datetime(2026, 4, 3, 22, tzinfo=UTC),
        all_day=True,
        start_date=date(2026, 4, 3),
        end_date=date(2026, 4, 4),
        tzid=None,
    )
    shown = delivery(event=event).payload()["event"]
    assert shown["all_day"] is True
    assert (shown["start_date"], shown["end_date"]) == ("2026-04-03", "2026-04-04")


def test_payload_without_occurrence_has_null_event_and_the_notification_key() -> None:
    payload = delivery(missing=True).payload()
    assert payload["event"] is None
    assert payload["uid"] == "standup@example"
    assert payload["recurrence_id"] == "20260330T073000Z"
    assert payload["start"] == "2026-03-30T07:30:00Z"


def test_delivery_refuses_an_attempt_below_one() -> None:
    with pytest.raises(ValidationError, match="attempt"):
        delivery(attempt=0)


def test_delivery_repr_hides_the_calendar_secrets() -> None:
    assert leaked(repr(delivery())) == []


# --- invoke -------------------------------------------------------------------


async def test_invoke_awaits_a_coroutine_function() -> None:
    seen: list[str] = []

    async def handler(received: Delivery) -> None:
        await asyncio.sleep(0)
        seen.append(received.id)

    await invoke(handler, delivery())
    assert seen == ["n-0123456789abcdef"]


async def test_invoke_runs_a_sync_callable_in_another_thread() -> None:
    threads: list[int] = []

    def handler(received: Delivery) -> None:
        threads.append(threading.get_ident())

    await invoke(handler, delivery())
    assert threads
    assert threads[0] != threading.get_ident()


async def test_a_slow_sync_handler_does_not_block_the_event_loop() -> None:
    # The handler waits for the loop to run: it could never see it if blocked.
    loop_ran = threading.Event()

    async def ticker() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        loop_ran.set()

    seen: list[bool] = []
    task = asyncio.create_task(ticker())
    await invoke(lambda received: seen.append(loop_ran.wait(timeout=120)), delivery())
    await task
    assert seen == [True]


async def test_invoke_awaits_what_a_sync_callable_returns() -> None:
    seen: list[str] = []

    async def send(received: Delivery) -> None:
        seen.append(received.id)

    def handler(received: Delivery) -> Awaitable[None]:
        return send(received)

    await invoke(handler, delivery())
    assert seen == ["n-0123456789abcdef"]


async def test_invoke_awaits_an_object_with_async_call() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.thread: int | None = None

        async def __call__(self, received: Delivery) -> None:
            self.thread = threading.get_ident()

    recorder = Recorder()
    await invoke(recorder, delivery())
    assert recorder.thread == threading.get_ident()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_invoke_propagates_what_the_handler_raises(kind: str) -> None:
    def sync_handler(received: Delivery) -> None:
        raise DeliveryError("nope", permanent=True)

    async def async_handler(received: Delivery) -> None:
        raise DeliveryError("nope", permanent=True)

    handler = sync_handler if kind == "sync" else async_handler
    with pytest.raises(DeliveryError) as raised:
        await invoke(handler, delivery())
    assert raised.value.permanent is True


def test_delivery_errors_survive_pickling_with_their_flags() -> None:
    error = DeliveryError("receiver down", retry_after=timedelta(seconds=30))
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.permanent, copy.retry_after) == (
        "receiver down",
        False,
        timedelta(seconds=30),
    )
    refused = pickle.loads(pickle.dumps(WebhookVerificationError("stale")))
    assert (refused.reason, str(refused)) == ("stale", "webhook refused: stale")
    assert isinstance(copy, CalsyncError)


# --- LoggingHandler -----------------------------------------------------------


async def test_logging_handler_writes_one_line_in_the_event_zone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="calsync.notifications"):
        await LoggingHandler()(delivery())
    (record,) = caplog.records
    assert record.getMessage() == (
        "Reminder: Standup at 2026-03-30 09:30 CEST (10 min before) [Work]"
    )
    assert record.name == "calsync.notifications"
    assert record.calsync_notification_id == "n-0123456789abcdef"  # type: ignore[attr-defined]
    assert record.calendar_id == "cal-1"  # type: ignore[attr-defined]
    assert record.uid == "standup@example"  # type: ignore[attr-defined]
    assert record.lead_seconds == 600  # type: ignore[attr-defined]
    assert record.fire_at == "2026-03-30T07:20:00Z"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("event", "lead", "line"),
    [
        (
            occurrence(tzid=None),
            timedelta(hours=1, minutes=30),
            "Reminder: Standup at 2026-03-30 07:30 UTC (1 h 30 min before) [Work]",
        ),
        (
            occurrence(tzid="America/New_York"),
            timedelta(days=2),
            "Reminder: Standup at 2026-03-30 03:30 EDT (2 days before) [Work]",
        ),
        (
            occurrence(
                all_day=True,
                start_date=date(2026, 3, 30),
                end_date=date(2026, 3, 31),
                tzid=None,
            ),
            timedelta(0),
            "Reminder: Standup at 2026-03-30 (all day) (at the start) [Work]",
        ),
        (
            occurrence(summary="Line one\nInjected: line two"),
            timedelta(minutes=10),
            "Reminder: Line one Injected: line two at 2026-03-30 09:30 CEST "
            "(10 min before) [Work]",
        ),
    ],
    ids=["utc", "new-york", "all-day", "newline-in-summary"],
)
async def test_logging_handler_line(
    event: Occurrence, lead: timedelta, line: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="calsync.notifications"):
        await LoggingHandler()(delivery(event=event, lead=lead))
    assert [record.getMessage() for record in caplog.records] == [line]


async def test_logging_handler_without_occurrence_or_name_stays_secret_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="calsync.notifications"):
        await LoggingHandler()(delivery(missing=True, name=None))
    (record,) = caplog.records
    assert record.getMessage().startswith(
        "Reminder: (event standup@example) at 2026-03-30 07:30 UTC (10 min before) "
        "[https://cal.example/***/basic.ics?token=***]"
    )
    assert leaked(caplog.text) == []


async def test_logging_handler_uses_the_given_logger_and_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("app.reminders")
    handler = LoggingHandler(logger, level=logging.WARNING)
    with caplog.at_level(logging.INFO, logger="app.reminders"):
        await handler(delivery())
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("app.reminders", logging.WARNING)


# --- the receiving server -------------------------------------------------------


@attrs.frozen
class Received:
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes


class Receiver:
    """Records each POST; ``/status/<code>`` answers that code, ``/slow`` stalls.

    ``/standard`` verifies with the `standardwebhooks` library's own receiver
    (``Webhook.verify`` with `SECRET`, the real clock): 204 if it accepts, else 400.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.verified: list[Any] = []
        self.port = 0
        self.app = web.Application()
        self.app.router.add_post("/hook", self.accept)
        self.app.router.add_post("/standard", self.standard)
        self.app.router.add_post("/status/{code:\\d+}", self.status)
        self.app.router.add_post("/slow", self.slow)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}?token={URL_TOKEN}"

    async def _record(self, request: web.Request) -> None:
        self.requests.append(
            Received(
                request.path,
                request.query_string,
                CIMultiDict(request.headers),
                await request.read(),
            )
        )

    async def accept(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=204)

    async def standard(self, request: web.Request) -> web.Response:
        await self._record(request)
        try:
            payload = Webhook(SECRET).verify(
                self.requests[-1].body, dict(request.headers)
            )
        except StandardVerificationError as error:
            return web.Response(status=400, text=str(error))
        self.verified.append(payload)
        return web.Response(status=204)

    async def status(self, request: web.Request) -> web.Response:
        await self._record(request)
        code = int(request.match_info["code"])
        headers = {"Retry-After": "120"} if code in (429, 503) else {}
        if 300 <= code < 400:
            headers["Location"] = f"http://127.0.0.1:{self.port}/hook"
        return web.Response(status=code, headers=headers, text=f"{URL_TOKEN} echo")

    async def slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.sleep(5)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    runner = web.AppRunner(server.app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    yield server
    await runner.cleanup()


def fixed_clock() -> float:
    return NOW.timestamp()


# --- WebhookHandler -------------------------------------------------------------

LOCAL = ["127.0.0.1"]  # the receiver runs on this machine: open it, as feeds are


async def test_webhook_posts_the_compact_payload_with_idempotency_key(
    receiver: Receiver,
) -> None:
    sent = delivery()
    async with WebhookHandler(
        receiver.url("/hook"), SECRET, headers={"X-Tenant": "alice"}, allow=LOCAL
    ) as handler:
        await handler(sent)
    (request,) = receiver.requests
    assert request.body == json.dumps(sent.payload(), separators=(",", ":")).encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "n-0123456789abcdef"
    assert request.headers["X-Tenant"] == "alice"
    assert request.headers["User-Agent"].startswith("calsync/")
    assert request.query == f"token={URL_TOKEN}"


async def test_webhook_headers_follow_the_standard_webhooks_spec(
    receiver: Receiver,
) -> None:
    async with WebhookHandler(
        receiver.url("/hook"), SECRET, clock=fixed_clock, allow=LOCAL
    ) as handler:
        await handler(delivery())
    (request,) = receiver.requests
    stamp = int(NOW.timestamp())
    assert request.headers["webhook-id"] == "n-0123456789abcdef"
    assert request.headers["webhook-timestamp"] == str(stamp)
    signed_content = f"n-0123456789abcdef.{stamp}.".encode() + request.body
    key = base64.b64decode(SECRET_BASE64)
    digest = hmac.new(key, signed_content, hashlib.sha256).digest()
    assert request.headers["webhook-signature"] == (
        f"v1,{base64.b64encode(digest).decode()}"
    )
    headers = sign_webhook(
        request.body, SECRET, webhook_id="n-0123456789abcdef", timestamp=stamp
    )
    assert headers == {
        name: request.headers[name]
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    payload = verify_webhook(request.body, request.headers, SECRET, now=NOW)
    assert payload == delivery().payload()


async def test_the_standard_webhooks_library_verifies_what_the_handler_sends(
    receiver: Receiver,
) -> None:
    async with WebhookHandler(receiver.url("/standard"), SECRET, allow=LOCAL) as hook:
        await hook(delivery())
    assert receiver.verified == [delivery().payload()]
    forged = WebhookHandler(
        receiver.url("/standard"), new_webhook_secret(), allow=LOCAL
    )
    async with forged:
        with pytest.raises(DeliveryError, match="HTTP 400") as raised:
            await forged(delivery())
    assert raised.value.permanent is True
    assert len(receiver.verified) == 1


def test_verify_webhook_accepts_what_the_standard_webhooks_library_signs() -> None:
    body = json.dumps(delivery().payload()).encode()
    signature = Webhook(SECRET).sign("msg_2ab", NOW, body)
    headers = {
        "Webhook-Id": "msg_2ab",
        "Webhook-Timestamp": str(int(NOW.timestamp())),
        "Webhook-Signature": signature,
    }
    assert verify_webhook(body, headers, SECRET, now=NOW)["attempt"] == 1


def test_webhook_secrets_take_the_standard_form() -> None:
    fresh = new_webhook_secret()
    assert fresh.startswith("whsec_")
    assert len(base64.b64decode(fresh.removeprefix("whsec_"))) == 32
    assert fresh != new_webhook_secret()
    unpadded = SECRET.rstrip("=")
    assert sign_webhook(BODY, unpadded, webhook_id="a", timestamp=STAMP) == (
        sign_webhook(BODY, SECRET, webhook_id="a", timestamp=STAMP)
    )
    raw = sign_webhook(
        BODY, base64.b64decode(SECRET_BASE64), webhook_id="a", timestamp=STAMP
    )
    assert raw == sign_webhook(BODY, SECRET, webhook_id="a", timestamp=STAMP)
    for bad in ("s3cr3t-key-plain", "whsec_", "whsec_not base64!", b""):
        with pytest.raises(ValidationError, match="whsec_") as raised:
            WebhookHandler("https://hooks.example/x", bad)
        assert leaked(str(raised.value)) == []
        assert "plain" not in str(raised.value)


async def test_the_same_delivery_keeps_its_idempotency_key_across_attempts(
    receiver: Receiver,
) -> None:
    async with WebhookHandler(receiver.url("/hook"), SECRET, allow=LOCAL) as handler:
        await handler(delivery(attempt=1))
        await handler(delivery(attempt=2))
    keys = {request.headers["Idempotency-Key"] for request in receiver.requests}
    attempts = [json.loads(request.body)["attempt"] for request in receiver.requests]
    assert (keys, attempts) == ({"n-0123456789abcdef"}, [1, 2])


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses_raise_a_temporary_delivery_error(
    receiver: Receiver, status: int
) -> None:
    async with WebhookHandler(
        receiver.url(f"/status/{status}"), SECRET, allow=LOCAL
    ) as handler:
        with pytest.raises(DeliveryError) as raised:
            await handler(delivery())
    error = raised.value
    assert error.permanent is False
    assert f"HTTP {status}" in str(error)
    assert "Work (cal-1)" in str(error)
    if status in (429, 503):
        assert error.retry_after == timedelta(seconds=120)


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410, 422])
async def test_other_statuses_raise_a_permanent_delivery_error(
    receiver: Receiver, status: int
) -> None:
    async with WebhookHandler(
        receiver.url(f"/status/{status}"), SECRET, allow=LOCAL
    ) as handler:
        with pytest.raises(DeliveryError) as raised:
            await handler(delivery())
    assert raised.value.permanent is True
    assert f"HTTP {status}" in str(raised.value)
    assert [request.path for request in receiver.requests] == [f"/status/{status}"]


async def test_a_receiver_that_does_not_answer_in_time_is_retryable(
    receiver: Receiver,
) -> None:
    handler = WebhookHandler(
        receiver.url("/slow"), SECRET, timeout=timedelta(seconds=0.2), allow=LOCAL
    )
    async with handler:
        # The receiver answers 204 after 5 s: an error means the timeout fired.
        with pytest.raises(DeliveryError, match=r"within 0\.2s") as raised:
            await handler(delivery())
    assert raised.value.permanent is False


async def test_a_refused_connection_is_retryable_and_not_chained() -> None:
    url = f"http://127.0.0.1:{unused_port()}/hook?token={URL_TOKEN}"
    async with WebhookHandler(url, SECRET, allow=LOCAL) as handler:
        with pytest.raises(DeliveryError) as raised:
            await handler(delivery())
    error = raised.value
    assert error.permanent is False
    assert "could not be reached" in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None


def unused_port() -> int:
    """A port on 127.0.0.1 that was just bound and released: nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("path", ["/hook", "/status/503", "/status/404", "/slow"])
async def test_no_secret_reaches_errors_logs_or_reprs(
    receiver: Receiver, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):
        handler = WebhookHandler(
            receiver.url(path), SECRET, timeout=timedelta(seconds=0.2), allow=LOCAL
        )
        shown.append(repr(handler))
        async with handler:
            try:
                await handler(delivery())
            except DeliveryError as error:
                shown += [str(error), repr(error)]
                shown += traceback.format_exception(error)
    records = [
        record
        for record in caplog.records
        if not record.name.startswith(
            ("aiohttp.server", "aiohttp.web", "aiohttp.access")
        )
    ]
    shown += [record.getMessage() for record in records]
    shown += [str(record.__dict__) for record in records]
    assert leaked("\n".join(shown)) == []
    assert "token=***" in shown[0]


def test_webhook_handler_refuses_bad_settings_without_showing_secrets() -> None:
    with pytest.raises(ValidationError) as raised:
        WebhookHandler(f"ftp://hooks.example/x?token={URL_TOKEN}", SECRET)
    assert leaked(str(raised.value)) == []
    with pytest.raises(ValidationError):
        WebhookHandler("https://hooks.example/x", "")
    with pytest.raises(ValidationError):
        WebhookHandler("https://hooks.example/x", SECRET, timeout=timedelta(0))
    with pytest.raises(ValidationError, match="Idempotency-Key"):
        WebhookHandler(
            "https://hooks.example/x", SECRET, headers={"Idempotency-Key": "mine"}
        )
    with pytest.raises(ValidationError) as raised:
        WebhookHandler(
            "https://hooks.example/x", SECRET, headers={"Authorization": f"{SECRET}\n"}
        )
    assert leaked(str(raised.value)) == []


async def test_a_given_session_stays_open_and_an_owned_one_closes(
    receiver: Receiver,
) -> None:
    async with aiohttp.ClientSession() as session:
        async with WebhookHandler(
            receiver.url("/hook"), SECRET, session=session, allow=LOCAL
        ) as handler:
            await handler(delivery())
        assert not session.closed
    owned = WebhookHandler(receiver.url("/hook"), SECRET, allow=LOCAL)
    await owned(delivery())
    await owned.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await owned(delivery())
    assert len(receiver.requests) == 2


# --- verify_webhook -------------------------------------------------------------

BODY = json.dumps(delivery().payload(), separators=(",", ":")).encode()
STAMP = int(NOW.timestamp())
ID = "n-0123456789abcdef"


def signed(
    body: bytes = BODY, secret: str = SECRET, stamp: int = STAMP
) -> dict[str, str]:
    return sign_webhook(body, secret, webhook_id=ID, timestamp=stamp)


def test_verify_returns_the_payload_of_an_authentic_webhook() -> None:
    assert verify_webhook(BODY, signed(), SECRET, now=NOW)["id"] == ID


def test_verify_reads_header_names_in_any_case() -> None:
    headers = {name.upper(): value for name, value in signed().items()}
    assert verify_webhook(BODY, CIMultiDict(headers), SECRET, now=NOW)["id"] == ID
    assert verify_webhook(BODY, headers, SECRET, now=NOW)["id"] == ID


def test_verify_refuses_a_tampered_body() -> None:
    tampered = BODY.replace(b"Standup", b"Standdown")
    with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
        verify_webhook(tampered, signed(), SECRET, now=NOW)


def test_verify_refuses_another_id_than_the_one_signed() -> None:
    headers = {**signed(), "webhook-id": "n-another"}
    with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
        verify_webhook(BODY, headers, SECRET, now=NOW)


def test_verify_refuses_the_wrong_secret() -> None:
    with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
        verify_webhook(BODY, signed(), new_webhook_secret(), now=NOW)


def test_verify_refuses_a_stale_signature() -> None:
    later = NOW + timedelta(minutes=5, seconds=1)
    with pytest.raises(WebhookVerificationError, match="301 s old"):
        verify_webhook(BODY, signed(), SECRET, now=later)
    assert verify_webhook(BODY, signed(), SECRET, now=later - timedelta(seconds=1))


def test_verify_refuses_a_signature_from_the_future() -> None:
    earlier = NOW - timedelta(minutes=10)
    with pytest.raises(WebhookVerificationError, match="in the future"):
        verify_webhook(BODY, signed(), SECRET, now=earlier)


def test_verify_accepts_any_of_several_secrets_during_rotation() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    payload = verify_webhook(BODY, signed(secret=new), [old, new], now=NOW)
    assert payload["attempt"] == 1


def test_verify_accepts_a_header_with_several_signatures() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    old_signature = signed(secret=old)["webhook-signature"]
    headers = signed(secret=new)
    headers["webhook-signature"] += f" {old_signature} v1a,ignored"
    assert verify_webhook(BODY, headers, old, now=NOW)
    assert verify_webhook(BODY, headers, new, now=NOW)


def test_verify_uses_the_current_time_by_default() -> None:
    fresh = signed(stamp=int(time.time()))
    assert verify_webhook(BODY, fresh, SECRET)["id"] == ID
    with pytest.raises(WebhookVerificationError, match="old"):
        verify_webhook(BODY, signed(), SECRET)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"webhook-id": ""}, "webhook-id header is missing"),
        ({"webhook-timestamp": None}, "webhook-timestamp header is missing"),
        ({"webhook-signature": " "}, "webhook-signature header is missing"),
        ({"webhook-timestamp": "yesterday"}, "whole Unix seconds"),
        ({"webhook-timestamp": "1e9"}, "whole Unix seconds"),
        ({"webhook-signature": "v1a,abc v0,def"}, "no v1,<base64> signature"),
        ({"webhook-signature": "v1," + "a" * 5000}, "too long"),
    ],
    ids=[
        "empty-id",
        "no-timestamp",
        "blank-signature",
        "word-timestamp",
        "float-timestamp",
        "other-versions",
        "too-long",
    ],
)
def test_verify_refuses_malformed_headers_with_a_reason(
    changes: dict[str, str | None], reason: str
) -> None:
    headers = {**signed(), **changes}
    present = {name: value for name, value in headers.items() if value is not None}
    with pytest.raises(WebhookVerificationError, match=reason):
        verify_webhook(BODY, present, SECRET, now=NOW)


def test_verify_refuses_a_signed_body_that_is_not_a_json_object() -> None:
    body = b"[1, 2, 3]"
    with pytest.raises(WebhookVerificationError, match="not a JSON object"):
        verify_webhook(body, signed(body), SECRET, now=NOW)


def test_verify_errors_never_show_the_secret_or_expected_signature() -> None:
    expected = signed()["webhook-signature"].removeprefix("v1,")
    bad = {
        **signed(),
        "webhook-signature": "v1," + base64.b64encode(bytes(32)).decode(),
    }
    with pytest.raises(WebhookVerificationError) as raised:
        verify_webhook(BODY, bad, SECRET, now=NOW)
    text = "".join(traceback.format_exception(raised.value))
    assert leaked(text) == []
    assert expected not in text


def test_verify_needs_raw_bytes_headers_and_a_secret() -> None:
    with pytest.raises(ValidationError, match="raw request body"):
        verify_webhook(BODY.decode(), signed(), SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="request's headers"):
        verify_webhook(BODY, "v1,abc", SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least one"):
        verify_webhook(BODY, signed(), [], now=NOW)
    with pytest.raises(ValidationError, match="whsec_"):
        verify_webhook(BODY, signed(), "plain-secret", now=NOW)
    with pytest.raises(ValidationError, match="naive"):
        verify_webhook(BODY, signed(), SECRET, now=NOW.replace(tzinfo=None))


# --- the private-network guard --------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.1.2.3"])
def test_a_webhook_to_a_private_address_is_refused_by_default(host: str) -> None:
    with pytest.raises(ValidationError) as raised:
        WebhookHandler(f"http://{host}:8080/hook?token={URL_TOKEN}", SECRET)
    message = str(raised.value)
    assert "refused to connect" in message
    assert "[fetch]" in message
    assert "CALSYNC_FETCH_ALLOW=" in message
    assert leaked(message) == []


async def test_a_webhook_to_127_0_0_1_is_allowed_by_the_allow_list(
    receiver: Receiver,
) -> None:
    async with WebhookHandler(
        receiver.url("/hook"), SECRET, allow=["127.0.0.1"]
    ) as handler:
        await handler(delivery())
    assert [request.path for request in receiver.requests] == ["/hook"]


async def test_a_webhook_name_that_resolves_to_loopback_is_refused_for_good(
    receiver: Receiver,
) -> None:
    resolver = StaticResolver({"hooks.test": ["127.0.0.1"]})
    url = f"http://hooks.test:{receiver.port}/hook?token={URL_TOKEN}"
    async with WebhookHandler(url, SECRET, resolver=resolver) as handler:
        with pytest.raises(DeliveryError) as raised:
            await handler(delivery())
    assert raised.value.permanent is True
    assert "127.0.0.1 is a loopback address" in str(raised.value)
    assert "CALSYNC_FETCH_ALLOW=hooks.test" in str(raised.value)
    assert leaked(str(raised.value)) == []
    assert receiver.requests == []
    assert resolver.asked == ["hooks.test"]


async def test_the_allow_list_opens_a_name_that_resolves_to_loopback(
    receiver: Receiver,
) -> None:
    resolver = StaticResolver({"hooks.test": ["127.0.0.1"]})
    url = f"http://hooks.test:{receiver.port}/hook"
    async with WebhookHandler(
        url, SECRET, resolver=resolver, allow=["127.0.0.0/8"]
    ) as handler:
        await handler(delivery())
    assert [request.path for request in receiver.requests] == ["/hook"]


def test_a_webhook_url_with_an_impossible_host_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a valid host name"):
        WebhookHandler("http://hooks exa.mple/hook", SECRET)


def test_calsync_run_builds_the_webhook_with_the_fetch_allow_list(
    tmp_path: Path,
) -> None:
    config = tmp_path / "calsync.toml"
    config.write_text(
        '[handler]\nkind = "webhook"\nurl = "http://127.0.0.1:9/hook"\n'
        f'secret = "{SECRET}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ValidationError, match=r"refused to connect to 127\.0\.0\.1"):
        build_handler(load_config(config, env={}))
    allowed = load_config(config, env={"CALSYNC_FETCH_ALLOW": "127.0.0.1"})
    assert isinstance(build_handler(allowed), WebhookHandler)


async def test_a_refused_webhook_error_chains_nothing(receiver: Receiver) -> None:
    resolver = StaticResolver({"hooks.test": ["10.0.0.1"]})
    url = f"http://hooks.test:{receiver.port}/hook?token={URL_TOKEN}"
    async with WebhookHandler(url, SECRET, resolver=resolver) as handler:
        with pytest.raises(DeliveryError) as raised:
            await handler(delivery())
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None
    assert "10.0.0.1 is a private address" in str(raised.value)
