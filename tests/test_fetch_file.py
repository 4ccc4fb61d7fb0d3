"""FileFetcher: file:// URLs and paths for local development, answering like HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calsync import FileFetcher
from calsync.fetch import (
    FetchBlocked,
    FetchConnectionError,
    FetchInvalidURL,
    FetchNotCalendar,
    FetchTooLarge,
)
from conftest import ics

FEED = ics("UID:a\nDTSTART:20260326T090000Z\nSUMMARY:Standup").encode()


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    path = tmp_path / "team.ics"
    path.write_bytes(FEED)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


async def test_reads_a_file_url(feed: Path) -> None:
    result = await FileFetcher().fetch(feed.as_uri())
    assert result.status == "fetched"
    assert result.body == FEED
    assert result.bytes_read == len(FEED)
    assert result.last_modified == "Tue, 14 Nov 2023 22:13:20 GMT"


async def test_reads_a_plain_path(feed: Path) -> None:
    result = await FileFetcher().fetch(str(feed))
    assert result.body == FEED


async def test_unchanged_file_is_not_modified(feed: Path) -> None:
    fetcher = FileFetcher()
    first = await fetcher.fetch(feed.as_uri())
    again = await fetcher.fetch(feed.as_uri(), etag=first.etag)
    assert again.status == "not_modified"
    assert again.etag == first.etag


async def test_changed_file_is_fetched_again(feed: Path) -> None:
    fetcher = FileFetcher()
    first = await fetcher.fetch(feed.as_uri())
    feed.write_bytes(FEED.replace(b"Standup", b"Retro"))
    os.utime(feed, (1_800_000_000, 1_800_000_000))
    again = await fetcher.fetch(feed.as_uri(), etag=first.etag)
    assert again.status == "fetched"
    assert again.etag != first.etag


async def test_missing_file_is_a_connection_error_that_will_not_heal(
    tmp_path: Path,
) -> None:
    with pytest.raises(FetchConnectionError, match="no such file") as caught:
        await FileFetcher().fetch((tmp_path / "gone.ics").as_uri())
    assert not caught.value.transient


async def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FetchConnectionError, match="not a regular file"):
        await FileFetcher().fetch(tmp_path.as_uri())


async def test_file_outside_the_root_is_blocked(feed: Path, tmp_path: Path) -> None:
    root = tmp_path / "feeds"
    root.mkdir()
    with pytest.raises(FetchBlocked):
        await FileFetcher(root=root).fetch(str(root / ".." / feed.name))


async def test_file_inside_the_root_is_read(feed: Path) -> None:
    result = await FileFetcher(root=feed.parent).fetch(feed.as_uri())
    assert result.body == FEED


async def test_file_over_the_cap_is_too_large(feed: Path) -> None:
    with pytest.raises(FetchTooLarge):
        await FileFetcher(max_body_bytes=10).fetch(feed.as_uri())


async def test_file_that_is_not_a_calendar_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html></html>")
    with pytest.raises(FetchNotCalendar):
        await FileFetcher().fetch(page.as_uri())


@pytest.mark.parametrize("url", ["https://example.com/cal.ics", "file://server/x.ics"])
async def test_non_local_urls_are_invalid(url: str) -> None:
    with pytest.raises(FetchInvalidURL):
        await FileFetcher().fetch(url)
