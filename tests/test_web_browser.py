"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver).

One operator's session: log in with the token, sync a failing calendar and see
its error, requeue a failed reminder and see it go out. Set
CALSYNC_WEB_SCREENSHOTS=docs/images to refresh the screenshots the docs show.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from _feeds import event, ics
from _web import T0, TOKEN, FlakyHandler, served, sqlite_engine
from calsync import Engine
from calsync.testing import FeedServer, ManualClock
from calsync.web import create_app

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)

WAIT_SECONDS = 60  # a bound on a hung browser, never a timing assertion


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    # The viewer's zone: the page shows fire times in it.
    service = Service(
        executable_path=str(CHROMEDRIVER),
        env={**os.environ, "TZ": "Europe/Berlin"},
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """Drives the browser from the event loop: every WebDriver call in a thread."""

    def __init__(self, driver: Any, shots: list[Path]) -> None:
        self.driver = driver
        self.shots = shots

    async def do(self, work: Callable[[Any], Any]) -> Any:
        return await asyncio.to_thread(work, self.driver)

    async def wait(self, condition: Callable[[Any], Any]) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return await self.do(
            lambda driver: WebDriverWait(driver, WAIT_SECONDS).until(condition)
        )

    async def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return str(await self.do(lambda d: d.find_element(By.CSS_SELECTOR, css).text))

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.do(lambda d: d.find_element(By.CSS_SELECTOR, css).click())

    async def screenshot(self, name: str) -> None:
        for folder in self.shots:
            folder.mkdir(parents=True, exist_ok=True)
            path = str(folder / name)
            await self.do(lambda d, path=path: d.save_screenshot(path))


def has(css: str, text: str = "") -> Callable[[Any], bool]:
    from selenium.webdriver.common.by import By

    def present(driver: Any) -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return any(text in element.text for element in found)

    return present


@pytest.fixture
async def scene(
    tmp_path: Path,
) -> AsyncIterator[tuple[Engine, FeedServer, FlakyHandler, str]]:
    """A failing feed, a good feed with a reminder that failed, and the app."""
    clock = ManualClock(T0)
    handler = FlakyHandler()
    async with (
        FeedServer() as feeds,
        sqlite_engine(tmp_path, clock) as engine,
        served(create_app(engine, token=TOKEN)) as url,
    ):
        feeds.fail("/flaky.ics", 500)
        feeds.set(
            "/team.ics",
            ics(event("review", T0 + timedelta(minutes=15), summary="Design review")),
        )
        await engine.add_calendar(feeds.url("/flaky.ics"), name="Flaky feed")
        team = await engine.add_calendar(feeds.url("/team.ics"), name="Team")
        await engine.sync_calendar(team.id)
        clock.advance(timedelta(minutes=6))
        await engine.check_notifications()
        await engine.dispatch_notifications(handler)
        yield engine, feeds, handler, url


async def test_an_operator_syncs_a_failing_feed_and_requeues_a_failed_reminder(
    browser: Any,
    scene: tuple[Engine, FeedServer, FlakyHandler, str],
    tmp_path: Path,
) -> None:
    engine, _, handler, url = scene
    shots = [tmp_path / "shots"]
    if os.environ.get("CALSYNC_WEB_SCREENSHOTS"):
        shots.append(Path(os.environ["CALSYNC_WEB_SCREENSHOTS"]))
    page = Page(browser, shots)
    [failed] = await engine.dead_letters()

    await page.do(lambda d: d.get(url + "/"))
    await page.wait(has("form input[name=token]"))
    await page.screenshot("dashboard-login.png")
    await page.do(
        lambda d: d.find_element("css selector", "input[name=token]").send_keys(TOKEN)
    )
    await page.click("form button[type=submit]")
    await page.wait(has("#calendars", "Flaky feed"))
    # The page read the browser's zone and shows times in it.
    await page.wait(has("#summary", "times in Europe/Berlin"))
    assert "CET" in await page.text("#dead")

    flaky = engine_row = await _calendar_id(engine, "Flaky feed")
    await page.click(f"#calendar-{engine_row} button[name=sync]")
    await page.wait(has("#flash", "Sync failed"))
    assert "500" in await page.text("#flash")
    row = await page.text(f"#calendar-{flaky}")
    assert "failing \N{MULTIPLICATION SIGN}1" in row
    assert "500" in row
    await page.screenshot("dashboard-sync-failed.png")

    await page.click(f"#reminder-{failed.id} button[name=requeue]")
    await page.wait(has("#flash", "Requeued"))
    handler.up = True
    await engine.dispatch_notifications(handler)
    assert handler.delivered == [failed.id]
    await page.do(lambda d: d.refresh())
    await page.wait(has("#dead", "every reminder went out"))
    await page.screenshot("dashboard-requeued.png")


async def _calendar_id(engine: Engine, name: str) -> str:
    [calendar] = [c for c in await engine.list_calendars() if c.name == name]
    return calendar.id
