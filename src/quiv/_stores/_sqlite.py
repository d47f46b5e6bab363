"""The durable SQLite store (``store="sqlite:///path"``): one file, the processes of one machine.

One background task (:meth:`SQLiteStore.run`) does all the database work, so no
public method waits on the disk. Each round is one ``BEGIN IMMEDIATE``
transaction, which takes SQLite's write lock first: adoptions of tasks, claims
of due occurrences (see ``_sqlite_claims``), then the changes noted since the
last round (job and task rows, written behind as in the private store). The
answers reach the engine only once the transaction has committed.

Every ``POLL_SECONDS`` the round also reads every task's run state, so a pause,
resume, removal or a next due time set by another process is seen here within
that bound: SQLite cannot notify other processes, and this short poll is the
one place quiv polls. The file is WAL (readers never wait for the writer) with a
``busy_timeout``, created 0600 in a directory only this user may write to. It
relies on POSIX file locks: use it on a local disk, not over NFS.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from quiv._exceptions import DatabaseInitializationError
from quiv._registry import JOB_COLUMNS

from ._interface import Row
from ._options import StoreOptions
from ._requests import Adoption, Cancel, Claim, ClaimResult, Poll, Replan, TaskState
from ._sqlite_claims import (
    adopt,
    cancel,
    claim,
    job_upsert_sql,
    read_poll,
    replan,
    saved_task_row,
    task_row,
    task_update_sql,
)
from ._sqlite_leases import Abandoned, LeaseKeeper
from ._sqlite_schema import JOB_EXTRA, SCHEMA, SCHEMA_VERSION

__all__ = ["SQLiteStore"]

#: Seconds between looks at what other processes changed (the one polling path).
POLL_SECONDS = 0.5
#: Seconds changes gather before a round that has nothing more urgent to do.
WRITE_DELAY = 0.005
#: Seconds a transaction waits for another process's write lock before failing.
BUSY_TIMEOUT_SECONDS = 5.0
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 10.0

_SELECT_JOBS = f"SELECT {', '.join((*JOB_COLUMNS, *JOB_EXTRA))} FROM quiv_jobs"
_IN_WINDOW = "(ended_at IS NULL OR ended_at >= ?)"

AnyLogger = logging.Logger | logging.LoggerAdapter[Any]


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


class SQLiteStore:
    """Durable, shared schedule and history in one SQLite file."""

    def __init__(self, options: StoreOptions, logger: AnyLogger, worker: Callable[[], str]) -> None:
        assert options.path is not None
        self._options = options
        #: Whether stored pickles may be loaded here (``serializer="pickle"``).
        self.allow_pickle = options.serializer == "pickle"
        self._path = options.path
        self._logger = logger
        self._worker = worker
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one statement stream on the connection at a time
        self._tasks: dict[str, Row | None] = {}
        self._jobs: dict[str, Row] = {}
        self._adoptions: list[Adoption] = []
        self._claims: list[Claim] = []
        self._replans: list[Replan] = []
        self._purge_before: datetime | None = None
        self._flushes: list[anyio.Event] = []
        self._adopted: set[str] = set()
        self._kick: anyio.Event | None = None
        self._closed = False
        self._next_poll = 0.0
        self._retry = RETRY_FIRST_SECONDS
        self._readers = threading.local()
        self._reader_list: list[sqlite3.Connection] = []
        self.failing = False
        self.failed_batches = 0
        self.snapshot: Callable[[], tuple[Iterable[Row], Iterable[Row]]] | None = None
        self.committed: Callable[[list[Any]], None] | None = None
        #: Called on the loop with what other processes changed, each poll.
        self.polled: Callable[[Poll], None] | None = None
        #: The ids of the tasks this process knows (read on the loop, each poll).
        self.known: Callable[[], frozenset[str]] = frozenset
        self._cancels: list[Cancel] = []
        #: Called from the lease thread with jobs it recorded abandoned.
        self.abandoned: Callable[[list[Abandoned]], None] | None = None
        self._leases: LeaseKeeper | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def backlog(self) -> int:
        return len(self._tasks) + len(self._jobs)

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
            connection.execute("PRAGMA journal_mode=WAL")
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

    def _tell_abandoned(self, jobs: list[Abandoned]) -> None:
        if self.abandoned is not None:
            self.abandoned(jobs)

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

    # -- producers: synchronous, on the loop ---------------------------------

    def start(self) -> None:
        self._kick = anyio.Event()
        self._kick.set()

    def _wake(self) -> None:
        if self._kick is not None:
            self._kick.set()

    def save_task(self, task: Row) -> None:
        if not self._closed and task.id in self._adopted:
            self._tasks[task.id] = task
            self._wake()

    def delete_task(self, task_id: str) -> None:
        if not self._closed:
            self._adopted.discard(task_id)
            self._tasks[task_id] = None
            self._wake()

    def save_job(self, job: Row) -> None:
        if not self._closed:
            self._jobs[job.id] = job
            self._wake()

    def purge_jobs(self, ended_before: datetime) -> None:
        if not self._closed:
            self._purge_before = ended_before
            self._wake()

    def adopt(self, request: Adoption) -> None:
        if not self._closed:
            self._adoptions.append(request)
            self._wake()

    def mark_adopted(self, task_id: str) -> None:
        """``task_id`` is stored already (another process added it): save its changes."""
        self._adopted.add(task_id)

    def claim(self, request: Claim) -> None:
        if not self._closed:
            self._claims.append(request)
            self._wake()

    def cancel(self, request: Cancel) -> None:
        if not self._closed:
            self._cancels.append(request)
            self._wake()

    def replan(self, request: Replan) -> None:
        if not self._closed:
            self._replans.append(request)
            self._wake()

    async def flush(self) -> None:
        done = anyio.Event()
        self._flushes.append(done)
        self._wake()
        await done.wait()

    def close(self) -> None:
        self._closed = True
        self._wake()

    # -- the background task -------------------------------------------------

    async def run(self) -> None:
        assert self._kick is not None, "start() first"
        try:
            while True:
                urgent = any((self._adoptions, self._claims, self._replans, self._cancels))
                urgent = urgent or bool(self._flushes)
                if not urgent and not self._closed:
                    wait = max(0.0, self._next_poll - time.monotonic())
                    with anyio.move_on_after(wait):
                        await self._kick.wait()
                    if not (self._claims or self._adoptions or self._flushes or self._closed):
                        await anyio.sleep(WRITE_DELAY)
                self._kick = anyio.Event()
                ok = await self._round()
                if self._closed and not (self.backlog or self._claims or self._replans):
                    return
                if ok:
                    self._retry = RETRY_FIRST_SECONDS
                else:
                    await anyio.sleep(self._retry)
                    self._retry = min(self._retry * 2, RETRY_MAX_SECONDS)
                    if self._closed:
                        return  # the database refuses: what is noted is lost, said so
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._dispose)

    async def _round(self) -> bool:
        adoptions, self._adoptions = self._adoptions, []
        claims, self._claims = self._claims, []
        replans, self._replans = self._replans, []
        cancels, self._cancels = self._cancels, []
        tasks, self._tasks = self._tasks, {}
        jobs, self._jobs = self._jobs, {}
        purge, self._purge_before = self._purge_before, None
        flushes, self._flushes = self._flushes, []
        poll = self.polled is not None and time.monotonic() >= self._next_poll
        known = self.known() if poll else frozenset()
        # Rows are rendered here, on the loop, from each entry as it is now.
        worker = self._worker()
        now_us = int(time.time() * 1_000_000)
        lease_us = now_us + int(self._options.lease_seconds * 1_000_000)
        adopt_rows = [(request, task_row(request.task)) for request in adoptions]
        task_rows = [saved_task_row(entry) for entry in tasks.values() if entry is not None]
        deleted = [(task_id,) for task_id, entry in tasks.items() if entry is None]
        job_rows = [(*job.to_row(), *_job_extra(job, worker), lease_us) for job in jobs.values()]
        try:
            answers = await anyio.to_thread.run_sync(
                self._transaction,
                adopt_rows,
                claims,
                replans,
                cancels,
                task_rows,
                deleted,
                job_rows,
                purge,
                known if poll else None,
                worker,
                now_us,
                lease_us,
            )
        except Exception as exc:
            self.failed_batches += 1
            if not self.failing:
                self._logger.warning(
                    "quiv could not reach its database %s (%s: %s); scheduling goes on from "
                    "memory, and claims and records are retried",
                    self._path,
                    type(exc).__name__,
                    exc,
                )
            self.failing = True
            # Put everything back, older first; a claim retried is decided afresh.
            self._adoptions[:0] = adoptions
            self._claims[:0] = claims
            self._replans[:0] = replans
            self._cancels[:0] = cancels
            self._tasks = {**tasks, **self._tasks}
            self._jobs = {**jobs, **self._jobs}
            if self._purge_before is None:
                self._purge_before = purge
            for event in flushes:
                event.set()
            if self.committed is not None:
                self.committed([])
            return False
        if self.failing:
            self._logger.warning("quiv reaches its database %s again", self._path)
        self.failing = False
        adopted_states, claim_results, polled = answers
        for request, state in zip(adoptions, adopted_states, strict=True):
            self._adopted.add(request.task.id)
            request.done(state)
        for asked, result in zip(claims, claim_results, strict=True):
            asked.done(result)
        if self.committed is not None:
            self.committed(list(jobs.values()))
        if polled is not None:
            self._next_poll = time.monotonic() + POLL_SECONDS
            assert self.polled is not None
            self.polled(polled)
        for event in flushes:
            event.set()
        return True

    def _transaction(
        self,
        adoptions: list[tuple[Adoption, tuple[Any, ...]]],
        claims: list[Claim],
        replans: list[Replan],
        cancels: list[Cancel],
        task_rows: list[tuple[Any, ...]],
        deleted: list[tuple[str]],
        job_rows: list[tuple[Any, ...]],
        purge: datetime | None,
        known: frozenset[str] | None,
        worker: str,
        now_us: int,
        lease_us: int,
    ) -> tuple[list[TaskState], list[ClaimResult], Poll | None]:
        connection = self._connection
        if connection is None:
            raise DatabaseInitializationError("the database is not open")
        with self._lock:
            connection.execute("BEGIN IMMEDIATE")
            try:
                adopted = [adopt(connection, row, request.proposed) for request, row in adoptions]
                if job_rows:  # before claims: a finished job frees its slot for them
                    connection.executemany(job_upsert_sql(), job_rows)
                results = [claim(connection, ask, worker, now_us, lease_us) for ask in claims]
                for request in replans:
                    replan(connection, request)
                for wish in cancels:
                    cancel(connection, wish)
                if deleted:
                    connection.executemany("DELETE FROM quiv_tasks WHERE id = ?", deleted)
                    connection.executemany("DELETE FROM quiv_claims WHERE task_id = ?", deleted)
                if task_rows:
                    connection.executemany(task_update_sql(), task_rows)
                if purge is not None:
                    connection.execute(
                        "DELETE FROM quiv_jobs WHERE ended_at < ?", (purge.isoformat(" "),)
                    )
                polled = None if known is None else read_poll(connection, known, worker)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return adopted, results, polled

    def _dispose(self) -> None:
        if self._leases is not None:
            self._leases.stop()
            self._leases = None
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            for reader in self._reader_list:
                reader.close()
            self._reader_list.clear()

    # -- reads: synchronous, from any thread -----------------------------------

    def _reader(self) -> sqlite3.Connection | None:
        connection: sqlite3.Connection | None = getattr(self._readers, "connection", None)
        if connection is None and not self._closed:
            try:
                connection = sqlite3.connect(
                    f"{self._path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=BUSY_TIMEOUT_SECONDS,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                self._logger.warning("quiv could not read its database %s: %s", self._path, exc)
                return None
            self._readers.connection = connection
            with self._lock:
                self._reader_list.append(connection)
        return connection

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
            f"{_SELECT_JOBS} WHERE id = ? AND {_IN_WINDOW}", (job_id, ended_since.isoformat(" "))
        )
        return rows[0] if rows else None

    def read_jobs(self, ended_since: datetime, status: str | None = None) -> list[tuple[Any, ...]]:
        since = ended_since.isoformat(" ")
        if status is None:
            return self._read(f"{_SELECT_JOBS} WHERE {_IN_WINDOW} ORDER BY rowid", (since,))
        where = f"{_IN_WINDOW} AND (status = ? OR ended_at IS NULL)"
        return self._read(f"{_SELECT_JOBS} WHERE {where} ORDER BY rowid", (since, status))

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


def _job_extra(job: Any, holder: str) -> tuple[Any, ...]:
    """The durable job columns beyond the private store's: worker and progress (JSON).

    A live job not started yet is held (its lease renewed) by this process, ``holder``.
    """
    progress = job.progress
    worker = job.worker or (None if job.status.is_final else holder)
    return worker, None if progress is None else json.dumps(progress, default=repr)
