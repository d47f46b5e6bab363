"""The sync facade mirrors the async core, method for method."""

from __future__ import annotations

import inspect

import pytest

from quiv import AsyncQuiv, Quiv

# Lifecycle differs by design: AsyncQuiv is entered (async with / serve / lifespan),
# Quiv is started and stopped; both can be shut down early with shutdown(timeout).
SYNC_ONLY = {"start", "startup", "stop"}
ASYNC_ONLY = {"serve"}


def _public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    }


ASYNC_METHODS = {
    name: fn
    for name, fn in _public(AsyncQuiv).items()
    if inspect.iscoroutinefunction(fn) and name not in ASYNC_ONLY
}


def test_every_async_method_has_a_sync_twin_and_back() -> None:
    sync_methods = set(_public(Quiv)) - SYNC_ONLY - {"lifespan"}
    assert set(ASYNC_METHODS) == sync_methods


@pytest.mark.parametrize("name", sorted(ASYNC_METHODS))
def test_signatures_match(name: str) -> None:
    async_signature = inspect.signature(getattr(AsyncQuiv, name))
    sync_signature = inspect.signature(getattr(Quiv, name))
    assert list(async_signature.parameters.values()) == list(sync_signature.parameters.values())
    assert async_signature.return_annotation == sync_signature.return_annotation


def test_constructors_match() -> None:
    assert inspect.signature(AsyncQuiv.__init__) == inspect.signature(Quiv.__init__)


def test_both_offer_a_lifespan() -> None:
    assert inspect.signature(AsyncQuiv.lifespan) == inspect.signature(Quiv.lifespan)
