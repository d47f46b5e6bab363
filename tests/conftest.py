"""Shared fixtures: quiv needs asyncio (aiosqlite), so every async test runs on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _stores_support import BACKENDS, POSTGRES_ENV, drop_database, private_database, store_url


@pytest.fixture(params=[("asyncio", {"debug": True})], ids=["asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Override anyio's default (every backend) with asyncio in debug mode."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh durable store, once per backend (PostgreSQL only when enabled)."""
    return store_url(request.param, tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _private_postgres_database() -> Iterator[None]:
    """Point ``QUIV_TEST_POSTGRES_URL`` at a database of this session's own.

    Test sessions run side by side in CI against one server; each drops and
    creates quiv's tables, so each needs its own database. Child processes (the
    multi-process tests, the benchmark smoke run) inherit the changed variable.
    """
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        yield
        return
    url, name = private_database(base)
    os.environ[POSTGRES_ENV] = url
    try:
        yield
    finally:
        os.environ[POSTGRES_ENV] = base
        drop_database(base, name)
