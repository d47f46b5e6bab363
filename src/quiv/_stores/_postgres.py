"""The PostgreSQL store (``store="postgresql://user@host/db"``): processes on many machines.

The same rounds as every durable store (``_durable``), each one transaction
through SQLAlchemy's asyncio engine over asyncpg (see ``_postgres_sql`` for
the claims). Other processes are woken by ``LISTEN``/``NOTIFY`` as soon as one
commits a change they must see, so control reaches them in milliseconds; the
periodic poll stays as a safety net. Leases, wake-ups and the synchronous
history reads live on a side thread of their own (``_postgres_side``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from quiv._exceptions import DatabaseInitializationError

from ._durable import Answers, AnyLogger, Batch, DurableStore
from ._options import StoreOptions
from ._postgres_schema import SCHEMA, SCHEMA_LOCK
from ._postgres_side import CONNECT_TIMEOUT, PostgresSide
from ._postgres_sql import CHANNEL, transaction
from ._sqlite_schema import SCHEMA_VERSION, SELECT_JOBS

__all__ = ["PostgresStore"]

#: Seconds one statement of a round may take before the round fails.
STATEMENT_TIMEOUT = 10.0
_IN_WINDOW = "(ended_at IS NULL OR ended_at >= ${})"


class PostgresStore(DurableStore):
    """Durable, shared schedule and history in a PostgreSQL database."""

    reads_wait = True  # a network round trip, or READ_TIMEOUT if the server is gone

    def __init__(self, options: StoreOptions, logger: AnyLogger, worker: Callable[[], str]) -> None:
        super().__init__(options, logger, worker)
        assert options.url is not None
        url = make_url(options.url)
        self._url = url.set(drivername="postgresql+asyncpg")
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._engine: AsyncEngine | None = None
        self._side: PostgresSide | None = None

    @property
    def path(self) -> Path | None:
        return None

    @property
    def where(self) -> str:
        return self._url.render_as_string(hide_password=True)

    async def open(self) -> None:
        engine = create_async_engine(
            self._url,
            pool_size=2,
            max_overflow=2,
            # A server that stops answering fails the round (it is retried, decided
            # afresh) instead of holding it, and shutdown, for ever.
            connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": STATEMENT_TIMEOUT},
        )
        try:
            async with engine.begin() as connection:
                await self._check_schema(connection)
        except DatabaseInitializationError:
            await engine.dispose()
            raise
        except Exception as exc:
            await engine.dispose()
            raise DatabaseInitializationError(
                f"quiv could not open its database {self.where}: {type(exc).__name__}: {exc}"
            ) from exc
        options = self._options
        side = PostgresSide(
            self._dsn,
            self._worker,
            options.lease_seconds,
            options.lease_renewal,
            CHANNEL,
            self._logger,
        )
        loop = asyncio.get_running_loop()

        def changed() -> None:
            loop.call_soon_threadsafe(self.poll_now)

        side.changed = changed
        side.abandoned = self._tell_abandoned
        try:
            await anyio.to_thread.run_sync(side.start)
        except Exception as exc:
            await engine.dispose()
            raise DatabaseInitializationError(
                f"quiv could not connect to {self.where}: {type(exc).__name__}: {exc}"
            ) from exc
        self._engine, self._side = engine, side

    async def _check_schema(self, connection: Any) -> None:
        # Processes starting together create the tables one at a time.
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        await connection.execute(text(SCHEMA[0]))
        found = (
            await connection.execute(
                text("SELECT value FROM quiv_meta WHERE key = 'schema_version'")
            )
        ).first()
        if found is None:
            for statement in SCHEMA[1:]:
                await connection.execute(text(statement))
            await connection.execute(
                text("INSERT INTO quiv_meta (key, value) VALUES ('schema_version', :version)"),
                {"version": str(SCHEMA_VERSION)},
            )
        elif found[0] != str(SCHEMA_VERSION):
            raise DatabaseInitializationError(
                f"quiv cannot use the database {self.where}: it has schema version {found[0]}, "
                f"and this quiv reads version {SCHEMA_VERSION} only; it was left unchanged "
                "(use the quiv version that wrote it, or another database)"
            )

    async def _commit(self, batch: Batch) -> Answers:
        if self._engine is None:
            raise DatabaseInitializationError("the database is not open")
        async with self._engine.begin() as connection:
            return await transaction(connection, batch)

    async def _dispose(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            await anyio.to_thread.run_sync(side.stop)
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    # -- reads: synchronous, from any thread -----------------------------------

    def _read(self, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
        side = self._side
        if side is None:
            return []
        try:
            return side.read(sql, *parameters)
        except Exception as exc:
            self._logger.warning(
                "quiv could not read its job history: %s", f"{type(exc).__name__}: {exc}"
            )
            return []

    def read_job(self, job_id: str, ended_since: datetime) -> tuple[Any, ...] | None:
        where = f"id = $1 AND {_IN_WINDOW.format(2)}"
        rows = self._read(f"{SELECT_JOBS} WHERE {where}", job_id, ended_since.isoformat(" "))
        return rows[0] if rows else None

    def read_jobs(self, ended_since: datetime, status: str | None = None) -> list[tuple[Any, ...]]:
        since = ended_since.isoformat(" ")
        if status is None:
            return self._read(f"{SELECT_JOBS} WHERE {_IN_WINDOW.format(1)} ORDER BY seq", since)
        where = f"{_IN_WINDOW.format(1)} AND (status = $2 OR ended_at IS NULL)"
        return self._read(f"{SELECT_JOBS} WHERE {where} ORDER BY seq", since, status)

    async def read_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``"tasks"``, ``"jobs"`` or ``"claims"`` as committed; for tests."""
        await self.flush()
        name = {"tasks": "quiv_tasks", "jobs": "quiv_jobs", "claims": "quiv_claims"}[table]
        if self._engine is None:
            return []
        async with self._engine.connect() as connection:
            result = await connection.execute(text(f"SELECT * FROM {name}"))
            return [dict(row._mapping) for row in result]
