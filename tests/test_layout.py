"""The package layout: the pure core loads no I/O code, module names are unique."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import calsync

PACKAGE = Path(calsync.__file__).parent


def test_importing_the_core_loads_no_network_or_database_code() -> None:
    code = (
        "import sys, calsync.core, calsync.core.settings\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'aiohttp', 'psycopg', 'psycopg_pool', 'sqlite3', 'sqlalchemy', 'pymysql'} "
        "or (m.startswith('calsync.') and not m.startswith('calsync.core')))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_no_two_modules_share_a_name() -> None:
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name in {"__init__.py", "__main__.py"}:
            continue
        names.setdefault(path.stem.lstrip("_"), []).append(
            str(path.relative_to(PACKAGE))
        )
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    shared = {
        name: paths
        for name, paths in names.items()
        if len(paths) > 1 or name in packages
    }
    assert shared == {}


def test_every_root_name_resolves_and_is_the_packages_own() -> None:
    assert 30 <= len(calsync.__all__) <= 42
    for name in calsync.__all__:
        assert getattr(calsync, name) is not None
    assert calsync.Engine.__module__ == "calsync.engine.service"
