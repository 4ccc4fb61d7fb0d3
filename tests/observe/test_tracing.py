"""OpenTelemetry spans: jobs, syncs, fetches and parses, nested; none while off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from _feeds import event, ics
from calsync import Engine
from calsync.observe import disable_tracing, enable_tracing
from calsync.testing import FeedServer

from .conftest import MINUTE, T0


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_tracing(provider)
    try:
        yield exporter
    finally:
        disable_tracing()
        provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_a_cycle_is_a_job_span_with_a_sync_span_per_calendar(
    engine: Engine, feeds: FeedServer, exporter: InMemorySpanExporter
) -> None:
    feeds.set("/good.ics?token=hunter2", ics(event("standup", T0 + 15 * MINUTE)))
    calendar = await engine.add_calendar(feeds.url("/good.ics?token=hunter2"))
    await engine.sync_due()
    spans = by_name(exporter.get_finished_spans())
    [job] = spans["calsync sync_due"]
    [sync] = spans["calsync sync"]
    [fetch] = spans["calsync fetch"]
    [parse] = spans["calsync parse"]
    assert parent_of(sync) == span_id(job)
    assert parent_of(fetch) == parent_of(parse) == span_id(sync)
    assert job.attributes is not None
    assert sync.attributes is not None
    assert job.attributes["messaging.operation.name"] == "sync_due"
    assert job.attributes["calsync.job.outcome"] == "ok"
    assert sync.attributes["calsync.calendar.id"] == calendar.id
    assert sync.attributes["calsync.sync.outcome"] == "changed"
    assert fetch.attributes is not None
    assert parse.attributes is not None
    assert fetch.attributes["server.address"] == "127.0.0.1"
    assert int(str(fetch.attributes["http.response.body.size"])) > 0
    assert parse.attributes["calsync.occurrences"] == 1
    assert "hunter2" not in recorded(exporter)


def recorded(exporter: InMemorySpanExporter) -> str:
    """Every attribute and status message of the finished spans, as one text."""
    return repr(
        [
            (dict(span.attributes or {}), span.status.description)
            for span in exporter.get_finished_spans()
        ]
    )


async def test_a_failed_fetch_ends_its_span_with_an_error_and_no_secret(
    engine: Engine, feeds: FeedServer, exporter: InMemorySpanExporter
) -> None:
    feeds.fail("/bad.ics", 500)
    await engine.add_calendar(feeds.url("/bad.ics?token=hunter2"))
    await engine.sync_due()
    [fetch] = by_name(exporter.get_finished_spans())["calsync fetch"]
    assert fetch.status.status_code is StatusCode.ERROR
    assert fetch.attributes is not None
    assert fetch.attributes["error.type"] == "FetchStatusError"
    assert "hunter2" not in recorded(exporter)


async def test_a_failing_job_ends_its_span_with_an_error(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(Exception, match="no calendar"):
        await engine.sync_calendar("missing")
    [job] = by_name(exporter.get_finished_spans())["calsync sync_calendar"]
    assert job.status.status_code is StatusCode.ERROR
    assert job.attributes is not None
    assert job.attributes["error.type"] == "CalendarNotFound"


async def test_no_spans_while_tracing_is_off(engine: Engine, feeds: FeedServer) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_tracing(provider)
    disable_tracing()
    feeds.set("/good.ics", ics(event("standup", T0 + 15 * MINUTE)))
    await engine.add_calendar(feeds.url("/good.ics"))
    await engine.sync_due()
    assert exporter.get_finished_spans() == ()
    provider.shutdown()
