"""OpenTelemetry spans for the Engine's work: off by default, and free while off.

`enable_tracing` (the ``calsync[tracing]`` extra) turns them on for the process:
each job run, calendar sync, fetch and parse is then a span. Attributes never
carry a feed URL or a secret: a fetch names its host only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from calsync.core.redact import redact_text

__all__ = ["annotate", "disable_tracing", "enable_tracing", "span"]

Attributes = Mapping[str, str | int | float | bool]

_OFF: contextlib.nullcontext[None] = contextlib.nullcontext(None)
_tracer: Any = None  # an opentelemetry.trace.Tracer while tracing is on


def enable_tracing(tracer_provider: Any = None) -> None:
    """Make spans for jobs, syncs, fetches and parses, on ``tracer_provider``.

    None uses OpenTelemetry's global provider. Needs opentelemetry-api
    (``pip install 'calsync[tracing]'``); raises ImportError without it.
    """
    from opentelemetry import trace

    global _tracer
    _tracer = trace.get_tracer("calsync", tracer_provider=tracer_provider)


def disable_tracing() -> None:
    """Stop making spans (the default)."""
    global _tracer
    _tracer = None


def span(name: str, attributes: Attributes) -> contextlib.AbstractContextManager[Any]:
    """Return a span around a step, or a shared no-op context while tracing is off.

    The span is the current one inside, so spans of nested steps are its
    children. An error ends it with status ERROR, its type and redacted message.
    """
    tracer = _tracer
    if tracer is None:
        return _OFF
    return _span(tracer, name, attributes)


def annotate(current: Any, attributes: Attributes) -> None:
    """Add attributes to a span from `span` (nothing while tracing is off)."""
    if current is not None:
        current.set_attributes(dict(attributes))


@contextlib.contextmanager
def _span(tracer: Any, name: str, attributes: Attributes) -> Iterator[Any]:
    from opentelemetry.trace import Status, StatusCode

    with tracer.start_as_current_span(
        name,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except (asyncio.CancelledError, GeneratorExit):
            current.set_attribute("error.type", "cancelled")
            raise
        except BaseException as error:
            current.set_attribute("error.type", type(error).__qualname__)
            message = redact_text(f"{type(error).__name__}: {error}")[:300]
            current.set_status(Status(StatusCode.ERROR, message))
            raise
