"""Stores: where the schedule and the job history are kept.

``StoreBackend`` is what the engine needs of any of them. The private temporary
store (``store=None``) is the seed's, unchanged; a durable store
(``store="sqlite:///..."`` or ``"postgresql://..."``) is a ``DurableStore``:
several processes share its schedule, and each due occurrence is claimed by
exactly one of them.
"""

from __future__ import annotations

import logging
from typing import Any

from quiv._exceptions import ConfigurationError

from ._durable import DurableStore
from ._interface import Row, StoreBackend
from ._options import StoreOptions, store_options
from ._sqlite import SQLiteStore
from ._temporary import TemporaryStore, temporary_store
from ._worker import worker_name

__all__ = [
    "DurableStore",
    "Row",
    "SQLiteStore",
    "StoreBackend",
    "StoreOptions",
    "TemporaryStore",
    "open_store",
    "store_options",
    "worker_name",
]


def open_store(
    options: StoreOptions, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> StoreBackend:
    """The store ``options`` name (nothing touches a database until it runs)."""
    if options.kind == "sqlite":
        return SQLiteStore(options, logger, worker_name)
    if options.kind == "postgresql":
        try:  # the postgres extra: quiv[postgres]
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise ConfigurationError(
                f"a PostgreSQL store needs asyncpg: pip install 'quiv[postgres]' ({exc})"
            ) from exc
        return PostgresStore(options, logger, worker_name)
    return temporary_store(logger)
