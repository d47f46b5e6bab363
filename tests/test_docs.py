"""The documentation's code is real code.

The rule: every code block in ``docs/`` is either a plain-text diagram
(``text`` or ``mermaid``) or an include of a file from ``examples/``, written in
the block form of pymdownx.snippets (a ``--8<--`` line, one ``path[:section]``
per line, a closing ``--8<--`` line; unlike the one-line form, this is not
valid Python, so ruff's Markdown formatting leaves it alone), and
``tests/test_examples.py`` runs every example. These tests enforce that rule,
check that each include points at a file and section that exist, and keep the
README's example identical to ``examples/hello.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PAGES = sorted(DOCS.glob("*.md"))

FENCE = re.compile(
    r"^(?P<fence>```|~~~)(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)\s*$", re.M | re.S
)
MARKER = "--8<--"
INCLUDE = re.compile(r"^(?P<path>examples/[\w-]+\.py)(?::(?P<section>[\w-]+))?$")
DIAGRAMS = {"text", "mermaid"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in FENCE.finditer(text)]


def included(body: str) -> list[re.Match[str]] | None:
    """The include specs of a code block, or None if it holds anything else."""
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    if len(lines) < 3 or lines[0] != MARKER or lines[-1] != MARKER:
        return None
    specs = [INCLUDE.match(line) for line in lines[1:-1]]
    return None if None in specs else [spec for spec in specs if spec is not None]


def test_there_are_pages() -> None:
    assert len(PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_code_blocks_are_includes_or_diagrams(page: Path) -> None:
    for lang, body in code_blocks(page.read_text()):
        if lang not in DIAGRAMS:
            assert included(body), f"{page.name}: a {lang!r} block that is not an include:\n{body}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_includes_point_at_example_files_and_sections(page: Path) -> None:
    for _, body in code_blocks(page.read_text()):
        for match in included(body) or []:
            target = ROOT / match["path"]
            assert target.is_file(), f"{page.name}: missing file {match['path']}"
            section = match["section"]
            if section is not None:
                source = target.read_text()
                assert f"# --8<-- [start:{section}]" in source, f"{match['path']}: no {section}"
                assert f"# --8<-- [end:{section}]" in source, f"{match['path']}: no {section} end"


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", config, re.M))
    assert listed == {page.name for page in PAGES}


def test_every_example_has_a_test() -> None:
    tests = (ROOT / "tests" / "test_examples.py").read_text()
    for example in sorted(EXAMPLES.glob("*.py")):
        name = example.stem
        marks = (f'load_example("{name}")', f'"{name}.py"', f'"{name}": (')  # last: a table key
        assert any(mark in tests for mark in marks), name


def test_readme_example_is_hello_py() -> None:
    blocks = code_blocks((ROOT / "README.md").read_text())
    python = [body for lang, body in blocks if lang == "python"]
    hello = (EXAMPLES / "hello.py").read_text()
    docstring, _, program = hello.partition('"""\n\n')
    assert docstring.startswith('"""')
    assert python == [program]


def test_readme_setup_is_make_demo_and_make_test() -> None:
    blocks = code_blocks((ROOT / "README.md").read_text())
    shell = [body for lang, body in blocks if lang == "bash"]
    assert len(shell) == 1
    commands = [line.split("#")[0].strip() for line in shell[0].splitlines()]
    assert commands == ["make demo", "make test"]


def test_performance_page_keeps_the_bench_table_marker() -> None:
    assert "<!-- BENCH-TABLE -->" in (DOCS / "performance.md").read_text()
