"""mkdocs hooks: the changelog page shows CHANGELOG.md with links that work there.

CHANGELOG.md links pages as ``docs/engine.md`` so they work in the repository;
on the site, next to the pages, the same links must read ``engine.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def on_page_markdown(markdown: str, page: Any, config: Any, **_: Any) -> str:
    """Put CHANGELOG.md, links rewritten, in place of the changelog page's text."""
    if page.file.src_uri != "changelog.md":
        return markdown
    root = Path(config["config_file_path"]).parent
    changelog = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    return changelog.replace("](docs/", "](")
