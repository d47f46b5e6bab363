"""Persistence: a private temporary SQLite database, written behind the scheduler.

The live schedule is in memory (see ``_registry``), so no dispatch ever waits on
the disk. Every change is also sent, as a row, through a memory object stream
to one writer task that commits whatever has piled up in a single transaction.
A burst of ten thousand job records costs a handful of commits, not ten thousand.

The database holds pickled arguments, so it lives in a directory only this
user can enter (0700), in a file only this user can read (0600). It is created
on the first write, not at start-up (an idle scheduler starts in well under a
millisecond), and the whole directory is removed when the store closes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import anyio
import sqlalchemy as sa
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Field, SQLModel

from ._registry import JOB_COLUMNS, TASK_COLUMNS

__all__ = ["JobRecord", "Store", "TaskRecord"]


class TaskRecord(SQLModel, table=True):
    """A task as persisted; ``args``/``kwargs`` are pickled."""

    __tablename__ = "quiv_tasks"

    id: str = Field(primary_key=True)
    task_name: str
    args: bytes
    kwargs: bytes
    interval_seconds: float
    fixed_interval: bool
    run_once: bool
    status: str
    next_run_at: datetime


class JobRecord(SQLModel, table=True):
    """A job as persisted."""

    __tablename__ = "quiv_jobs"

    id: str = Field(primary_key=True)
    task_id: str
    task_name: str
    status: str
    started_at: datetime
    ended_at: datetime | None = Field(default=None, index=True)
    duration_seconds: float | None = None
    error_message: str | None = None


_TASKS: sa.Table = TaskRecord.__table__  # type: ignore[attr-defined]
_JOBS: sa.Table = JobRecord.__table__  # type: ignore[attr-defined]


class Row(Protocol):
    """A live object the store can persist: the registry's task and job entries."""

    id: str

    def to_row(self) -> tuple[Any, ...]: ...


class _Table:
    """Driver-level statements for one table, derived from its SQLModel definition.

    The hot path goes straight to the driver with ready-made tuples, skipping
    SQLAlchemy's per-row type processing; ``columns`` must match the order the
    entries' ``to_row`` produces.
    """

    def __init__(self, table: sa.Table, columns: tuple[str, ...]) -> None:
        declared = tuple(column.name for column in table.columns)
        if set(declared) != set(columns):
            raise RuntimeError(f"{table.name}: row columns {columns} do not match {declared}")
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        self.upsert = f"INSERT OR REPLACE INTO {table.name} ({names}) VALUES ({marks})"
        self.delete = f"DELETE FROM {table.name} WHERE id = ?"


_TASK_SQL = _Table(_TASKS, TASK_COLUMNS)
_JOB_SQL = _Table(_JOBS, JOB_COLUMNS)
_PURGE_SQL = f"DELETE FROM {_JOBS.name} WHERE ended_at < ?"

#: Writes committed per transaction at most, so one commit never holds the loop long.
BATCH_LIMIT = 2_000


@dataclass(frozen=True, slots=True)
class _Write:
    kind: str  # "task" | "job" | "delete_task" | "purge" | "flush"
    item: Any = None


class Store:
    """The writer side of the database: queue rows, commit them in batches."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = logger
        # Created by start(); until then (tasks added before start) writes wait here.
        self._early: list[_Write] = []
        self._send: MemoryObjectSendStream[_Write] | None = None
        self._receive: MemoryObjectReceiveStream[_Write] | None = None
        self._directory: Path | None = None
        self._engine: AsyncEngine | None = None
        self.failed_batches = 0

    @property
    def path(self) -> Path | None:
        """The database file, once the first write has created it."""
        return None if self._directory is None else self._directory / "quiv.sqlite3"

    # -- producers (synchronous, any time before close) ---------------------

    def start(self) -> None:
        """Open the write queue; :meth:`run` must follow in a task."""
        # Unbounded: writes come from synchronous transitions that must not wait.
        self._send, self._receive = anyio.create_memory_object_stream[_Write](float("inf"))
        for write in self._early:
            self._send.send_nowait(write)
        self._early.clear()

    def _queue(self, write: _Write) -> None:
        if self._send is None:
            self._early.append(write)
            return
        try:
            self._send.send_nowait(write)
        except anyio.ClosedResourceError:
            self._logger.debug("quiv store is closed; dropped a %s write", write.kind)

    # Entries are queued by reference and rendered when the batch is committed, so
    # a job that starts and ends within one batch is rendered and written once.

    def save_task(self, task: Row) -> None:
        self._queue(_Write("task", task))

    def delete_task(self, task_id: str) -> None:
        self._queue(_Write("delete_task", task_id))

    def save_job(self, job: Row) -> None:
        self._queue(_Write("job", job))

    def purge_jobs(self, ended_before: datetime) -> None:
        self._queue(_Write("purge", ended_before))

    async def flush(self) -> None:
        """Wait until every write queued before this call is committed (or failed)."""
        done = anyio.Event()
        self._queue(_Write("flush", done))
        await done.wait()

    # -- the writer task ----------------------------------------------------

    async def run(self) -> None:
        """Commit batches until :meth:`close`; then commit the rest and delete the files."""
        receive = self._receive
        assert receive is not None, "start() first"
        try:
            async with receive:
                async for first in receive:
                    batch = [first]
                    while len(batch) < BATCH_LIMIT:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._commit(batch)
        finally:
            with anyio.CancelScope(shield=True):
                await self._dispose()

    def close(self) -> None:
        """Accept no more writes; :meth:`run` drains what is queued and returns."""
        if self._send is not None:
            self._send.close()

    async def _commit(self, batch: Sequence[_Write]) -> None:
        tasks: dict[str, Row | None] = {}
        jobs: dict[str, Row] = {}
        purge_before: datetime | None = None
        flushed: list[anyio.Event] = []
        for write in batch:  # later writes of the same row win
            kind, item = write.kind, write.item
            if kind == "job":
                jobs[item.id] = item
            elif kind == "task":
                tasks[item.id] = item
            elif kind == "delete_task":
                tasks[item] = None
            elif kind == "purge":
                purge_before = item
            else:
                flushed.append(item)
        try:
            if tasks or jobs or purge_before is not None:
                await self._write(tasks, jobs, purge_before)
        except Exception:
            self.failed_batches += 1
            self._logger.exception(
                "quiv could not write %d task and %d job records to its database; "
                "scheduling goes on from memory",
                len(tasks),
                len(jobs),
            )
        finally:
            for event in flushed:
                event.set()

    async def _write(
        self,
        tasks: dict[str, Row | None],
        jobs: dict[str, Row],
        purge_before: datetime | None,
    ) -> None:
        engine = self._engine or await self._open()
        saved = [entry.to_row() for entry in tasks.values() if entry is not None]
        deleted = [(task_id,) for task_id, entry in tasks.items() if entry is None]
        async with engine.begin() as connection:
            if deleted:
                await connection.exec_driver_sql(_TASK_SQL.delete, deleted)
            if saved:
                await connection.exec_driver_sql(_TASK_SQL.upsert, saved)
            if jobs:
                rows = [job.to_row() for job in jobs.values()]
                await connection.exec_driver_sql(_JOB_SQL.upsert, rows)
            if purge_before is not None:
                await connection.exec_driver_sql(_PURGE_SQL, (purge_before.isoformat(" "),))

    async def _open(self) -> AsyncEngine:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="quiv-"))  # mode 0700
        path = self._directory / "quiv.sqlite3"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _tune(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers (a debugging session, a test) look while we write;
            # NORMAL sync is safe in WAL and the file is temporary anyway.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        async with engine.begin() as connection:
            await connection.run_sync(SQLModel.metadata.create_all, tables=[_TASKS, _JOBS])
        self._engine = engine
        return engine

    async def _dispose(self) -> None:
        engine, self._engine = self._engine, None
        try:
            if engine is not None:
                await engine.dispose()
        finally:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)

    async def read_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``"tasks"`` or ``"jobs"`` as committed; for tests and debugging."""
        await self.flush()
        if self._engine is None:
            return []
        source = _TASKS if table == "tasks" else _JOBS
        async with self._engine.connect() as connection:
            result = await connection.execute(source.select())
            return [dict(row._mapping) for row in result]
