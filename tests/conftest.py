"""Shared fixtures: quiv needs asyncio (aiosqlite), so every async test runs on it."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(params=[("asyncio", {"debug": True})], ids=["asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Override anyio's default (every backend) with asyncio in debug mode."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend
