"""Print a pip constraints file that pins every runtime dependency to its floor.

Runtime dependencies are ``[project] dependencies`` and the extras that serve
quiv itself at run time (``postgres``: the PostgreSQL store's driver).

CI installs quiv with ``pip install -c <this output>`` and runs the tests, so the
lowest versions that pyproject.toml admits are the ones actually tested. A
runtime dependency without a ``>=`` floor is an error: an untested floor is a
promise nobody checked.

With ``--test-requirements`` it prints instead the ``dev`` extra without the web
stack (the frameworks, the dashboard's templates and server, the browser
driver), whose own floors are far above quiv's (FastAPI needs a much newer
pydantic, selenium a newer typing_extensions): the tests that use them run in
every other CI step.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

WEB_STACK = {"starlette", "fastapi", "httpx2", "jinja2", "uvicorn", "websockets", "selenium"}

# name, optional [extras], version specifiers, optional "; marker"
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


#: Extras that are part of quiv's runtime (not developer tools): their floors are pinned too.
RUNTIME_EXTRAS = ("postgres",)


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = []
    extras = project.get("optional-dependencies", {})
    for requirement in [*project["dependencies"], *(r for e in RUNTIME_EXTRAS for r in extras[e])]:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot parse requirement {requirement!r}")
        name, _extras, specifiers, marker = match.groups()
        lows = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
        if len(lows) != 1:
            raise SystemExit(f"runtime dependency {requirement!r} needs exactly one '>=' floor")
        # Constraints take no extras; the marker keeps a floor to the Pythons it is for.
        lines.append(f"{name}=={lows[0]}{marker or ''}")
    return lines


def test_requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    dev = project["optional-dependencies"]["dev"]
    return [r for r in dev if _name(r) not in WEB_STACK]


def _name(requirement: str) -> str:
    match = REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"cannot parse requirement {requirement!r}")
    return match.group(1).lower().replace("_", "-")


if __name__ == "__main__":
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if sys.argv[1:] == ["--test-requirements"]:
        sys.stdout.write("".join(line + "\n" for line in test_requirements(pyproject)))
    elif sys.argv[1:]:
        raise SystemExit("usage: floors.py [--test-requirements]")
    else:
        sys.stdout.write("".join(line + "\n" for line in floors(pyproject)))
