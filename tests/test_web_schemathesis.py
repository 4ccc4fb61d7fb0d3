"""The HTTP API against its own OpenAPI document: schemathesis, thousands of requests.

A real server on 127.0.0.1 over a real SQLite store answers every phase
(examples, coverage, fuzzing, stateful through the document's links), with
every check but positive_data_acceptance (a valid-looking feed URL may still be
refused: a private address, an unknown zone). Deterministic: the same requests
in every run.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from _web import TOKEN, served, web_settings
from calsync import Engine, HttpFetcher, SQLiteStore
from calsync.web import create_app

MAX_EXAMPLES = 100
AT_LEAST = 1_000


class NoNetwork(AbstractResolver):
    """A resolver that knows no host: syncs of generated feed URLs fail at once."""

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(f"{host}: no network in this test")

    async def close(self) -> None:
        return None


async def run_schemathesis(url: str, cwd: Path) -> tuple[int, str]:
    command: list[Any] = [
        sys.executable,
        "-c",
        "import sys, schemathesis.cli as cli; sys.exit(cli.schemathesis())",
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


async def test_the_api_keeps_its_openapi_document_under_generated_requests(
    tmp_path: Path,
) -> None:
    fetcher = HttpFetcher(resolver=NoNetwork(), total_timeout=timedelta(seconds=5))
    engine = Engine(SQLiteStore(tmp_path / "api.db"), fetcher, settings=web_settings())
    async with engine, served(create_app(engine, token=TOKEN)) as url:
        status, output = await run_schemathesis(url, tmp_path)
    assert status == 0, output[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated is not None, output[-3000:]
    assert int(generated[1]) >= AT_LEAST
    assert generated[1] == generated[2]
