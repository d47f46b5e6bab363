"""The private temporary store (``store=None``): ``quiv._store.Store``, unchanged.

Its write path is tuned on its own; this module only states that it fulfils
the interface, so mypy tells if the two ever drift apart.
"""

from __future__ import annotations

import logging
from typing import Any

from quiv._store import Store as TemporaryStore

from ._interface import StoreBackend

__all__ = ["TemporaryStore", "temporary_store"]


def temporary_store(logger: logging.Logger | logging.LoggerAdapter[Any]) -> StoreBackend:
    """A new private temporary store (deleted when it closes)."""
    return TemporaryStore(logger)
