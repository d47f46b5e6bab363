"""The durable SQLite store (``store="sqlite:///path"``): one file, the processes of one machine.

The rounds are the durable store's (``_durable``); each one is a single
``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock before anything
is read, run with the standard library's ``sqlite3`` in a worker thread, so the
loop never waits on the disk (see ``_sqlite_claims`` for the statements).
SQLite cannot notify other processes: every ``POLL_SECONDS`` a round also reads
what they changed, the one place quiv polls. The file is WAL (readers never
wait for the writer) with a ``busy_timeout``, created 0600 in a directory only
this user may write to, and its schema version is checked. It relies on POSIX
file locks: use it on a local disk, not over NFS. History reads are synchronous,
from any thread, on a read-only connection per thread.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from quiv._exceptions import DatabaseInitializationError
from quiv._readers import ThreadReaders

from ._durable import Answers, AnyLogger, Batch, DurableStore
from ._options import StoreOptions
from ._rows import SPENT_ONE_SHOTS
from ._sqlite_claims import (
    adopt,
    cancel,
    claim,
    job_upsert_sql,
    read_poll,
    replan,
    task_update_sql,
)
from ._sqlite_leases import LeaseKeeper
from ._sqlite_schema import SCHEMA, SCHEMA_VERSION, SELECT_JOBS

__all__ = ["SQLiteStore"]

#: Seconds a transaction waits for another process's write lock before failing.
BUSY_TIMEOUT_SECONDS = 5.0

_IN_WINDOW = "(ended_at IS NULL OR ended_at >= ?)"


def check_location(path: Path) -> None:
    """Refuse a database file in a directory that other users may write to, or not ours."""
    directory = path.parent
    try:
        info = directory.stat()
    except FileNotFoundError:
        raise DatabaseInitializationError(
            f"quiv cannot create its database {path}: the directory {directory} does not exist"
        ) from None
    if os.name == "posix":
        if info.st_uid != os.getuid():
            raise DatabaseInitializationError(
                f"quiv refuses the database {path}: the directory {directory} belongs to "
                "another user; put the file in a directory you own"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise DatabaseInitializationError(
                f"quiv refuses the database {path}: other users may write to {directory} "
                f"(mode {stat.S_IMODE(info.st_mode):o}); put it in a directory only you can "
                "write to"
            )


def _use_wal(connection: sqlite3.Connection) -> None:
    """Put the file in WAL mode (it stays so), waiting out other processes' openings.

    Switching the journal mode of a new file fails at once with "database is
    locked", without waiting for the busy timeout, while another process that
    opens the same file at the same moment is in its schema transaction: so
    several processes starting together try again until the timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)  # a worker thread: the other process's transaction is short


class SQLiteStore(DurableStore):
    """Durable, shared schedule and history in one SQLite file."""

    def __init__(self, options: StoreOptions, logger: AnyLogger, worker: Callable[[], str]) -> None:
        super().__init__(options, logger, worker)
        assert options.path is not None
        self._path = options.path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one statement stream on the connection at a time
        self._readers = ThreadReaders(BUSY_TIMEOUT_SECONDS)
        self._leases: LeaseKeeper | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def where(self) -> str:
        return str(self._path)

    # -- opening -------------------------------------------------------------

    async def open(self) -> None:
        """Create or check the file and its schema, in a worker thread."""
        await anyio.to_thread.run_sync(self._open_sync)

    def _open_sync(self) -> None:
        path = self._path
        check_location(path)
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
            os.close(fd)
            connection = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,  # transactions are begun by hand: BEGIN IMMEDIATE
                check_same_thread=False,
            )
            connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            _use_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseInitializationError(
                f"quiv could not open its database {path}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            self._check_schema(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        options = self._options
        leases = LeaseKeeper(
            path,
            self._worker,
            options.lease_seconds,
            options.lease_renewal,
            BUSY_TIMEOUT_SECONDS,
            self._logger,
        )
        leases.abandoned = self._tell_abandoned
        leases.start()
        self._leases = leases

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(SCHEMA[0])
            found = connection.execute(
                "SELECT value FROM quiv_meta WHERE key = 'schema_version'"
            ).fetchone()
            if found is None:
                for statement in SCHEMA[1:]:
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO quiv_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif found[0] != str(SCHEMA_VERSION):
                raise DatabaseInitializationError(
                    f"quiv cannot use the database {self._path}: it has schema version "
                    f"{found[0]}, and this quiv reads version {SCHEMA_VERSION} only; it was "
                    "left unchanged (use the quiv version that wrote it, or a new file)"
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    async def _commit(self, batch: Batch) -> Answers:
        return await anyio.to_thread.run_sync(self._transaction, batch)

    def _transaction(self, batch: Batch) -> Answers:
        connection = self._connection
        if connection is None:
            raise DatabaseInitializationError("the database is not open")
        worker, now_us, lease_us = batch.worker, batch.now_us, batch.lease_us
        with self._lock:
            connection.execute("BEGIN IMMEDIATE")
            try:
                adopted = [adopt(connection, row, ask.proposed) for ask, row in batch.adoptions]
                if batch.job_rows:  # before claims: a finished job frees its slot for them
                    connection.executemany(job_upsert_sql(), batch.job_rows)
                results = [claim(connection, ask, worker, now_us, lease_us) for ask in batch.claims]
                for request in batch.replans:
                    replan(connection, request)
                for wish in batch.cancels:
                    cancel(connection, wish)
                deleted = [(task_id,) for task_id in batch.deleted]
                if deleted:
                    connection.executemany("DELETE FROM quiv_tasks WHERE id = ?", deleted)
                    connection.executemany("DELETE FROM quiv_claims WHERE task_id = ?", deleted)
                if batch.task_rows:
                    connection.executemany(task_update_sql(), batch.task_rows)
                if batch.purge is not None:
                    ended = batch.purge.isoformat(" ")
                    before = int(batch.purge.timestamp() * 1_000_000)
                    spent = SPENT_ONE_SHOTS.format(before="?", ended="?")
                    connection.execute(spent, (before, ended))
                    connection.execute("DELETE FROM quiv_jobs WHERE ended_at < ?", (ended,))
                    # Claims that old guard nothing: next_due has long moved past them.
                    connection.execute("DELETE FROM quiv_claims WHERE due < ?", (before,))
                known = batch.known
                polled = (
                    None if known is None else read_poll(connection, known, worker, batch.watched)
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return adopted, results, polled

    async def _dispose(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        if self._leases is not None:
            self._leases.stop()
            self._leases = None
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        self._readers.close()

    # -- reads: synchronous, from any thread -----------------------------------

    def _reader(self) -> sqlite3.Connection | None:
        try:
            return self._readers.connection(self._path)
        except sqlite3.Error as exc:
            self._logger.warning("quiv could not read its database %s: %s", self._path, exc)
            return None

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        connection = self._reader()
        if connection is None:
            return []
        try:
            return connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            self._logger.warning("quiv could not read its job history: %s", exc)
            return []

    def read_job(self, job_id: str, ended_since: datetime) -> tuple[Any, ...] | None:
        rows = self._read(
            f"{SELECT_JOBS} WHERE id = ? AND {_IN_WINDOW}", (job_id, ended_since.isoformat(" "))
        )
        return rows[0] if rows else None

    def read_jobs(self, ended_since: datetime, status: str | None = None) -> list[tuple[Any, ...]]:
        since = ended_since.isoformat(" ")
        if status is None:
            return self._read(f"{SELECT_JOBS} WHERE {_IN_WINDOW} ORDER BY rowid", (since,))
        where = f"{_IN_WINDOW} AND (status = ? OR ended_at IS NULL)"
        return self._read(f"{SELECT_JOBS} WHERE {where} ORDER BY rowid", (since, status))

    async def read_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``"tasks"``, ``"jobs"`` or ``"claims"`` as committed; for tests."""
        await self.flush()
        name = {"tasks": "quiv_tasks", "jobs": "quiv_jobs", "claims": "quiv_claims"}[table]
        connection = self._reader()
        if connection is None:
            return []
        cursor = connection.execute(f"SELECT * FROM {name} ORDER BY rowid")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
