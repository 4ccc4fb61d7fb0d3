"""Every Python example in README.md and docs/*.md runs and prints what it shows.

A ```python block is executed on its own, in a fresh namespace. When the next
fenced block after it is a ```text block (only prose or blank lines between),
that block is the output the example must print, compared line by line with
trailing whitespace ignored.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import textwrap
import tomllib
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


# -- the commands the pages show work from a clone -------------------------------

SHELL_LANGUAGES = frozenset({"console", "shell", "sh", "bash", "ini", ""})


def shell_pages() -> list[Path]:
    """The pages a user follows: README, docs/ and each adapter's README."""
    return [*documentation_pages(), *sorted(ROOT.glob("adapters/*/README.md"))]


def shell_lines() -> list[tuple[str, str]]:
    """Every command line of a console block, as (page:line, command)."""
    found = []
    for page in shell_pages():
        for block in fenced_blocks(page.read_text(encoding="utf-8")):
            if block.language not in SHELL_LANGUAGES:
                continue
            for offset, line in enumerate(block.source.splitlines()):
                command = line.removeprefix("$ ").split(" #", 1)[0].strip()
                where = f"{page.relative_to(ROOT).as_posix()}:{block.line + offset}"
                found.append((where, command))
    return found


def calsync_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for where, line in shell_lines():
        words = shlex.split(line.removeprefix("ExecStart="))
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]  # VARIABLE=value before the command
        if words and words[0].rsplit("/", 1)[-1] == "calsync":
            commands.append((where, words[1:]))
    return commands


def pip_installs() -> list[tuple[str, list[str]]]:
    return [
        (where, shlex.split(line)[2:])
        for where, line in shell_lines()
        if line.startswith("pip install ")
    ]


# What a page may ask pip to fetch from PyPI: packages that are published there.
ON_PYPI = frozenset({"nox", "celery[redis]"})


@pytest.mark.parametrize(
    ("where", "args"), calsync_commands(), ids=[w for w, _ in calsync_commands()]
)
def test_every_calsync_command_a_page_shows_is_accepted(
    where: str, args: list[str]
) -> None:
    from click.testing import CliRunner

    from calsync.cli.commands import cli

    # --help stops before any work, but only once every option was accepted.
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, f"{where}: calsync {' '.join(args)}\n{result.output}"


@pytest.mark.parametrize(
    ("where", "args"), pip_installs(), ids=[w for w, _ in pip_installs()]
)
def test_every_pip_install_a_page_shows_works_from_a_clone(
    where: str, args: list[str]
) -> None:
    for requirement in args:
        if requirement.startswith("-"):
            continue
        path = requirement.split("[", 1)[0]
        local = path == "." or path.startswith(("./", "adapters/"))
        if local:
            assert (ROOT / path / "pyproject.toml").is_file(), f"{where}: {path}"
        else:
            assert requirement in ON_PYPI, f"{where}: {requirement} is not on PyPI"


def test_the_calsync_command_needs_no_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = {
        re.split(r"[<>=\[; ]", requirement, maxsplit=1)[0]
        for requirement in project["project"]["dependencies"]
    }
    assert {"click", "rich"} <= names


PACKAGES = (
    "calsync",
    "calsync.core",
    "calsync.fetch",
    "calsync.stores",
    "calsync.engine",
    "calsync.handlers",
    "calsync.config",
    "calsync.cli",
    "calsync.testing",
    "calsync.web",
    "calsync.observe",
)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_in_the_api_reference(package: str) -> None:
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", api))
    names = importlib.import_module(package).__all__
    assert sorted(set(names) - shown) == [], f"{package}: add them to docs/api.md"


def test_no_page_or_docstring_cites_the_design_document() -> None:
    """Users do not have DESIGN.md: pages and docstrings say the rule in words."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    citing = [page.name for page in pages if "DESIGN" in page.read_text("utf-8")]
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        citing += [
            f"{source.relative_to(ROOT)}: {getattr(node, 'name', 'module')}"
            for node in ast.walk(tree)
            if isinstance(node, documented)
            and "DESIGN" in (ast.get_docstring(node) or "")
        ]
    assert citing == []
