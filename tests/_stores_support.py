"""Durable stores for the tests: a URL for each backend, and direct queries.

The PostgreSQL tests need a server: set ``QUIV_TEST_POSTGRES_URL`` (for example
``postgresql://postgres@127.0.0.1:5432/test``); without it they are skipped.
Each test session works in a database of its own, created on that server for
the session and dropped after it (CI runs test sessions side by side), and
each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_ENV = "QUIV_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]
_TABLES = ("quiv_claims", "quiv_jobs", "quiv_tasks", "quiv_meta")


def store_url(backend: str, tmp_path: Path) -> str:
    """A fresh store of ``backend`` (the PostgreSQL one emptied first), or a skip."""
    if backend == "sqlite":
        directory = tmp_path / "db"
        directory.mkdir(mode=0o700, exist_ok=True)
        return f"sqlite:///{directory / 'quiv.db'}"
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(
            f"PostgreSQL store tests need a server: set {POSTGRES_ENV}, e.g. "
            "postgresql://postgres@127.0.0.1:5432/test (each test session creates a database "
            "of its own there, and drops it)"
        )
    query(url, f"DROP TABLE IF EXISTS {', '.join(_TABLES)}")
    return url


async def _postgres(url: str, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await connection.fetch(sql, *parameters)]
    finally:
        await connection.close()


def private_database(url: str) -> tuple[str, str]:
    """Create a database for this session on ``url``'s server; its URL and its name."""
    name = f"quiv_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    query(url, f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}")), name


def drop_database(url: str, name: str) -> None:
    query(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on the store at ``url``; its rows."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(path, isolation_level=None)) as connection:
            return connection.execute(sql, parameters).fetchall()
    numbered = sql
    for number in range(1, len(parameters) + 1):
        numbered = numbered.replace("?", f"${number}", 1)
    # A thread of its own: the caller may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _postgres(url, numbered, parameters)).result()
