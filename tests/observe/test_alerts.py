"""The shipped alert rules and dashboard: promtool tests them; their metrics exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from _feeds import event, ics
from calsync import Engine
from calsync.observe import Metrics
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, Recorder

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "alerts"
RULES = ALERTS / "calsync.rules.yml"
DASHBOARD = ALERTS / "calsync.dashboard.json"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found is not None, (
        "promtool is missing: install Debian's prometheus package "
        "(apt-get install prometheus), as .ci/run does"
    )
    return found


def test_the_rules_file_is_valid() -> None:
    subprocess.run([promtool(), "check", "rules", str(RULES)], check=True)


def test_every_alert_fires_when_it_must_and_not_before() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "calsync.rules.test.yml"],
        cwd=ALERTS,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_test() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    tested = set(
        re.findall(r"alertname: (\w+)", (ALERTS / "calsync.rules.test.yml").read_text())
    )
    assert alerts == tested


def queried(text: str) -> set[str]:
    """The calsync metric names an expression text refers to."""
    return set(re.findall(r"\bcalsync_[a-z0-9_]+", text))


async def served_names(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> set[str]:
    """The sample names a real Engine's metrics serve after syncs and reminders."""
    metrics = Metrics(engine, registry=CollectorRegistry())
    try:
        feeds.set("/good.ics", ics(event("standup", T0 + 15 * MINUTE)))
        await engine.add_calendar(feeds.url("/good.ics"))
        await engine.sync_due()
        clock.advance(5 * MINUTE + timedelta(seconds=1))
        await engine.check_notifications()
        await engine.dispatch_notifications(Recorder())
        body, _ = await metrics.exposition()
    finally:
        metrics.close()
    families = text_string_to_metric_families(body.decode())
    return {sample.name for family in families for sample in family.samples}


async def test_every_metric_the_rules_and_dashboard_query_is_served(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    served = await served_names(engine, feeds, clock)
    rules = queried(RULES.read_text())
    panels = json.loads(DASHBOARD.read_text())["panels"]
    dashboard = queried(
        " ".join(target["expr"] for panel in panels for target in panel["targets"])
    )
    assert rules
    assert sorted(rules - served) == []
    assert sorted(dashboard - served) == []
