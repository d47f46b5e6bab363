"""Durable stores for the tests: a URL for each backend, and direct queries.

The PostgreSQL tests need a server: set ``QUIV_TEST_POSTGRES_URL`` (for example
``postgresql://postgres@127.0.0.1:5432/test``); without it they are skipped.
Each test starts from empty tables (they are dropped first), so the database
must be one for tests only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

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
            "postgresql://postgres@127.0.0.1:5432/test (its quiv_* tables are dropped)"
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
