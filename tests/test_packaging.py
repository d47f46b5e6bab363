"""The declared dependencies match what the code imports, in both directions.

An import that works only because another package happens to bring its
distribution along (pydantic through SQLModel) breaks when that package's range
admits an incompatible version; a declared package that nothing needs is dead
weight for every user. The declarations are read from the installed metadata,
which is what pip acted on.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Declared, not imported, and needed all the same.
RUNTIME_UNIMPORTED = {
    "aiosqlite": "SQLAlchemy loads it for the sqlite+aiosqlite:// URL of the store",
    "tzdata": "zoneinfo's time zone database where the system has none (Windows)",
}
DEV_UNIMPORTED = {
    "coverage": "command-line tool",
    "httpx2": "starlette.testclient's HTTP client",
    "jinja2": "the web extra's, for quiv.web in the dashboard tests",
    "mypy": "command-line tool",
    "pytest-timeout": "pytest plugin, configured in pyproject.toml",
    "uvicorn": "serves the example to the browser test, in a child process",
    "websockets": "uvicorn's websocket support, for that test",
    "ruff": "command-line tool",
    "asyncpg": "the PostgreSQL store tests query the database with it, imported where used",
}

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*(?:;(.*))?$")
EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(extra: str | None) -> set[str]:
    """Distributions required by quiv itself (``extra=None``) or by one of its extras."""
    names: set[str] = set()
    for requirement in requires("quiv") or []:
        match = REQUIREMENT.match(requirement)
        assert match is not None, requirement
        name, marker = match.groups()
        wanted = EXTRA.search(marker or "")
        if (wanted.group(1) if wanted else None) == extra:
            names.add(_normal(name))
    return names


def _optional(handlers: list[ast.ExceptHandler]) -> bool:
    """Whether a ``try`` catches ImportError: what it imports is optional by design."""
    caught = {"ImportError", "ModuleNotFoundError"}
    for handler in handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(kind, ast.Name) and kind.id in caught for kind in kinds):
            return True
    return False


def _skipped(node: ast.AST, module_level_only: bool) -> bool:
    if isinstance(node, ast.Try) and _optional(node.handlers):
        return True
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return module_level_only and isinstance(node, scopes)


def _imports(node: ast.AST, module_level_only: bool) -> set[str]:
    found: set[str] = set()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            found.update(alias.name.split(".")[0] for alias in child.names)
        elif isinstance(child, ast.ImportFrom):
            if child.level == 0 and child.module is not None:
                found.add(child.module.split(".")[0])
        elif not _skipped(child, module_level_only):
            found |= _imports(child, module_level_only)
    return found


def imported_distributions(
    folders: list[str], module_level_only: bool, exclude: str | None = None
) -> set[str]:
    """Third-party distributions whose modules the files under ``folders`` import.

    ``exclude``: leave out the files inside any folder of that name.
    """
    modules: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if exclude is not None and exclude in path.relative_to(ROOT / folder).parts[:-1]:
                continue
            modules |= _imports(ast.parse(path.read_text(encoding="utf-8")), module_level_only)
    local = {path.stem for folder in folders for path in (ROOT / folder).rglob("*.py")}
    local |= {"quiv", *folders}
    distributions = packages_distributions()
    found: set[str] = set()
    for module in modules - set(sys.stdlib_module_names) - local:
        # Not installed (the web frameworks in CI's floors step): most share their module's name.
        found.update(_normal(name) for name in distributions.get(module, [module]))
    return found


def test_runtime_imports_are_declared_and_declarations_used() -> None:
    used = imported_distributions(["src"], module_level_only=False)
    runtime, web, postgres = declared(None), declared("web"), declared("postgres")
    assert used - runtime - web - postgres == set(), "imported by quiv but not declared"
    assert runtime - used == set(RUNTIME_UNIMPORTED), "declared but not imported"
    assert web - used == set(), "a web dependency that nothing needs"
    assert postgres - used == set(), "a postgres dependency that nothing needs"


def test_the_web_extra_is_needed_only_by_quiv_web() -> None:
    core = imported_distributions(["src"], module_level_only=False, exclude="web")
    assert core <= declared(None) | declared("postgres"), "the core imports a web package"


def test_dev_imports_are_declared_and_declarations_used() -> None:
    used = imported_distributions(["tests", "examples", "benchmarks"], module_level_only=True)
    available = declared(None) | declared("dev")
    assert used - available == set(), "imported by tests, examples or benchmarks, not declared"
    assert declared("dev") - used == set(DEV_UNIMPORTED), "a dev dependency that nothing needs"
