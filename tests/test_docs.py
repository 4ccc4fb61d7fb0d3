"""Every Python example in README.md and docs/*.md runs and prints what it shows.

A ```python block is executed on its own, in a fresh namespace. When the next
fenced block after it is a ```text block (only prose or blank lines between),
that block is the output the example must print, compared line by line with
trailing whitespace ignored.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON_LANGUAGES = frozenset({"python", "py"})


@attrs.frozen
class Block:
    """One fenced code block of a Markdown file."""

    language: str
    line: int
    source: str


@attrs.frozen
class Example:
    """A Python block and, when the page shows it, the output it must print."""

    path: Path
    index: int
    block: Block
    expected: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.index}"


def fenced_blocks(text: str) -> list[Block]:
    """Return the fenced blocks of a Markdown text, dedented, in order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        opening = lines[position].strip()
        if not opening.startswith("```"):
            position += 1
            continue
        fence = "`" * (len(opening) - len(opening.lstrip("`")))
        info = opening[len(fence) :].strip()
        language = info.split()[0].lower() if info else ""
        body: list[str] = []
        start_line = position + 2  # 1-based number of the first line inside
        position += 1
        while position < len(lines) and lines[position].strip() != fence:
            body.append(lines[position])
            position += 1
        blocks.append(Block(language, start_line, textwrap.dedent("\n".join(body))))
        position += 1
    return blocks


def examples_in(path: Path) -> list[Example]:
    """Pair each Python block of a page with the text block that follows it."""
    blocks = fenced_blocks(path.read_text(encoding="utf-8"))
    examples = []
    python_blocks = [
        (position, block)
        for position, block in enumerate(blocks)
        if block.language in PYTHON_LANGUAGES
    ]
    for index, (position, block) in enumerate(python_blocks):
        following = blocks[position + 1] if position + 1 < len(blocks) else None
        expected = (
            following.source
            if following is not None and following.language == "text"
            else None
        )
        examples.append(Example(path, index, block, expected))
    return examples


def documentation_pages() -> list[Path]:
    """README.md and every page in docs/, whatever exists at collection time."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def normalized(output: str) -> str:
    """Drop trailing whitespace on each line and trailing blank lines."""
    return "\n".join(line.rstrip() for line in output.splitlines()).rstrip("\n")


EXAMPLES = [example for page in documentation_pages() for example in examples_in(page)]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example_runs_and_prints_what_the_page_shows(
    example: Example, capsys: pytest.CaptureFixture[str]
) -> None:
    filename = f"{example.path.relative_to(ROOT).as_posix()}:{example.block.line}"
    code = compile(example.block.source, filename, "exec", dont_inherit=True)
    exec(code, {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    if example.expected is not None:
        assert normalized(printed) == normalized(example.expected)


def test_fenced_blocks_pairs_python_with_the_following_text_block() -> None:
    page = "\n".join(
        [
            "Intro.",
            "```python",
            "print('a')",
            "```",
            "It prints:",
            "```text",
            "a",
            "```",
            "```python",
            "x = 1",
            "```",
            "```console",
            "pip install calsync",
            "```",
        ]
    )
    blocks = fenced_blocks(page)
    assert [(b.language, b.line, b.source) for b in blocks] == [
        ("python", 3, "print('a')"),
        ("text", 7, "a"),
        ("python", 10, "x = 1"),
        ("console", 13, "pip install calsync"),
    ]
