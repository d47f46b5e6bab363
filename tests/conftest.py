"""Shared fixtures: quiv needs asyncio (aiosqlite), so every async test runs on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _stores_support import BACKENDS, store_url


@pytest.fixture(params=[("asyncio", {"debug": True})], ids=["asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Override anyio's default (every backend) with asyncio in debug mode."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh durable store, once per backend (PostgreSQL only when enabled)."""
    return store_url(request.param, tmp_path)
