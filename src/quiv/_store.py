"""Persistence: a private temporary SQLite database, written behind the scheduler.

The live schedule is in memory (see ``_registry``), so no dispatch ever waits on
the disk and every read sees every change at once. Each change is also noted
for one writer task, which commits whatever has piled up in a few transactions:
a burst of ten thousand job records costs a handful of commits, not ten thousand.

The database holds pickled arguments, so it lives in a directory only this
user can enter (0700), in a file only this user can read (0600). It is created
on the first write, not at start-up (an idle scheduler starts in well under a
millisecond), and the whole directory is removed when the store closes.

A process killed before it could close (SIGKILL, or SIGTERM with Python's
default handler, which quiv does not replace) leaves its directory behind. So
the directory is named ``quiv-<pid>-<random>`` and its owner holds a lock on a
file in it for as long as it lives; the next store that opens one removes the
directories of this user whose process no longer exists and whose lock nobody
holds, and touches nothing else.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Field, SQLModel

from ._exceptions import DatabaseInitializationError
from ._registry import JOB_COLUMNS, TASK_COLUMNS

__all__ = ["JobRecord", "Store", "TaskRecord"]


class TaskRecord(SQLModel, table=True):
    """A task as persisted; ``args``/``kwargs`` are pickled."""

    __tablename__ = "quiv_tasks"

    id: str = Field(primary_key=True)
    task_name: str
    args: bytes
    kwargs: bytes
    interval_seconds: float | None = None
    fixed_interval: bool
    run_once: bool
    status: str
    next_run_at: datetime
    trigger: str
    cron: str | None = None
    run_at: datetime | None = None
    timezone: str
    jitter: float
    misfire_grace: float | None = None
    coalesce: bool
    max_instances: int
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    timeout: float | None = None


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
    error_type: str | None = None
    attempt: int
    retry_of: str | None = None


#: ``quiv-<pid>-<mkdtemp's random part>``: the pid of the process that made it.
_DIRECTORY_NAME = re.compile(r"quiv-([0-9]+)-[a-z0-9_]+")
_LOCK_FILE = "owner.lock"

try:
    import fcntl
except ImportError:  # not POSIX: no clean-up of leftovers there
    fcntl = None  # type: ignore[assignment]


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we could have written: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's process
        return True
    return True


def _lock_is_held(directory: str) -> bool:
    """Whether a live process holds the owner lock (it may live in another pid namespace)."""
    try:
        fd = os.open(os.path.join(directory, _LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock we may have taken
    return False


def remove_leftover_directories(parent: str) -> list[str]:
    """Remove the private directories that dead processes of this user left in ``parent``.

    Only a directory (not a link) named like ours, owned by this user, whose pid
    names no running process and whose owner lock nobody holds is removed.
    """
    if fcntl is None or os.name != "posix":
        return []
    removed: list[str] = []
    try:
        entries = os.scandir(parent)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            match = _DIRECTORY_NAME.fullmatch(entry.name)
            if match is None or int(match[1]) == os.getpid():
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            if _process_exists(int(match[1])) or _lock_is_held(entry.path):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


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


def _storable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with any text SQLite cannot take stored backslash-escaped instead.

    A lone surrogate (what ``surrogateescape`` makes of a non-UTF-8 file name)
    has no UTF-8 form; it is stored as its escape, a backslash, ``u`` and four
    hex digits. Checking is nearly free: ASCII text is the common case.
    """
    for value in row:
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                break
    else:
        return row
    return tuple(
        value.encode("utf-8", "backslashreplace").decode("utf-8")
        if isinstance(value, str)
        else value
        for value in row
    )


_TASK_SQL = _Table(_TASKS, TASK_COLUMNS)
_JOB_SQL = _Table(_JOBS, JOB_COLUMNS)
_PURGE_SQL = f"DELETE FROM {_JOBS.name} WHERE ended_at < ?"

#: Rows written per transaction at most, so rendering one never holds the loop long.
BATCH_LIMIT = 500
#: Seconds the writer lets changes gather after the first one (group commit). It
#: also keeps the writer out of the way of the dispatch that caused the change.
WRITE_DELAY = 0.005
#: After a failed write, the writer waits this long before retrying, doubling up to
#: the maximum; closing the store ends the wait for one last attempt.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
#: Seconds a write waits on a database locked by someone else before it fails
#: (and is retried later) rather than holding up the writer and shutdown.
BUSY_TIMEOUT_SECONDS = 0.25


class Store:
    """The writer side of the database: note changes now, commit them in batches.

    Changes are noted by reference in insertion-ordered dicts keyed by id, so a
    job that is created, started and finished before the writer gets to it is
    rendered and written once, with its final state, and a run-once task that
    comes and goes between two commits never touches the disk. The writer task
    sleeps on an event until there is something to write.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = logger
        self._tasks: dict[str, Row | None] = {}  # None: delete
        self._jobs: dict[str, Row] = {}
        self._purge_before: datetime | None = None
        self._flushes: list[anyio.Event] = []
        self._stored_tasks: set[str] = set()  # ids committed to the database
        self._kick: anyio.Event | None = None  # created by start(), on the loop
        self._closing: anyio.Event | None = None
        self._closed = False
        self._directory: Path | None = None
        self._owner_lock: int | None = None  # fd holding the directory's owner lock
        self._engine: AsyncEngine | None = None
        self._retry_delay = RETRY_FIRST_SECONDS
        self.failed_batches = 0
        #: Returns every live task and job; used to refill a database that vanished.
        self.snapshot: Callable[[], tuple[Iterable[Row], Iterable[Row]]] | None = None

    @property
    def path(self) -> Path | None:
        """The database file, once the first write has created it."""
        return None if self._directory is None else self._directory / "quiv.sqlite3"

    # -- producers: synchronous, on the loop (or before start) -------------------

    def start(self) -> None:
        """Get ready to write; :meth:`run` must follow in a task."""
        self._kick = anyio.Event()
        self._closing = anyio.Event()
        if self._tasks or self._jobs:
            self._kick.set()

    def _wake_writer(self) -> None:
        if self._kick is not None:
            self._kick.set()

    def save_task(self, task: Row) -> None:
        if not self._closed:
            self._tasks[task.id] = task
            self._wake_writer()

    def delete_task(self, task_id: str) -> None:
        if not self._closed:
            self._tasks[task_id] = None
            self._wake_writer()

    def save_job(self, job: Row) -> None:
        if not self._closed:
            self._jobs[job.id] = job
            self._wake_writer()

    def purge_jobs(self, ended_before: datetime) -> None:
        if not self._closed:
            self._purge_before = ended_before
            self._wake_writer()

    async def flush(self) -> None:
        """Wait until every change noted before this call is committed (or has failed)."""
        if self._kick is None:
            raise RuntimeError("the store has not started")
        done = anyio.Event()
        self._flushes.append(done)
        self._wake_writer()
        await done.wait()

    def close(self) -> None:
        """Accept no more changes; :meth:`run` writes what is noted and returns."""
        self._closed = True
        self._wake_writer()
        if self._closing is not None:
            self._closing.set()

    # -- the writer task ----------------------------------------------------

    async def run(self) -> None:
        """Commit until :meth:`close`; then commit the rest and delete the files."""
        assert self._kick is not None, "start() first"
        try:
            while True:
                await self._kick.wait()
                if not (self._flushes or self._closed):
                    await anyio.sleep(WRITE_DELAY)
                self._kick = anyio.Event()
                written = await self._commit_noted()
                if self._closed:
                    if written and (self._tasks or self._jobs or self._flushes):
                        continue  # changes noted while the last batch was written
                    return
                if not written:  # the disk refuses: let changes gather, then retry
                    assert self._closing is not None
                    with anyio.move_on_after(self._retry_delay):
                        await self._closing.wait()
                    self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)
                    self._kick.set()
                else:
                    self._retry_delay = RETRY_FIRST_SECONDS
        finally:
            with anyio.CancelScope(shield=True):
                await self._dispose()

    async def _commit_noted(self) -> bool:
        """Write every noted change; on failure note them again and return False."""
        tasks, self._tasks = self._tasks, {}
        jobs, self._jobs = self._jobs, {}
        purge_before, self._purge_before = self._purge_before, None
        flushes, self._flushes = self._flushes, []
        try:
            tasks_left, jobs_left = await self._write(tasks, list(jobs.values()), purge_before)
        except Exception:
            self.failed_batches += 1
            self._logger.exception(
                "quiv could not write %d task and %d job records to its database; "
                "scheduling goes on from memory and the write will be retried",
                len(tasks),
                len(jobs),
            )
            # Writes are idempotent upserts and deletes: put them back behind any
            # newer change of the same rows, and try again later.
            for task_id, entry in tasks.items():
                self._tasks.setdefault(task_id, entry)
            for job_id, job in jobs.items():
                self._jobs.setdefault(job_id, job)
            if purge_before is not None and self._purge_before is None:
                self._purge_before = purge_before
            return False
        finally:
            for event in flushes:
                event.set()
        if tasks_left or jobs_left:  # rows refused on their own: only they are retried
            self.failed_batches += 1
            for entry in tasks_left:
                self._tasks.setdefault(entry.id, entry)
            for job in jobs_left:
                self._jobs.setdefault(job.id, job)
            return False
        return True

    async def _write(
        self, tasks: dict[str, Row | None], jobs: list[Row], purge_before: datetime | None
    ) -> tuple[list[Row], list[Row]]:
        """Write the changes; return the task and job entries refused row by row."""
        if self._engine is not None and not self._file_intact():
            tasks, jobs = await self._recreate(tasks, jobs)
        stored = self._stored_tasks
        deleted = [
            (task_id,) for task_id, entry in tasks.items() if entry is None and task_id in stored
        ]
        saved = [entry for entry in tasks.values() if entry is not None]
        tasks_left: list[Row] = []
        jobs_left: list[Row] = []
        if not (deleted or saved or jobs or purge_before is not None):
            return tasks_left, jobs_left
        engine = self._engine or await self._initialise()
        if deleted:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(_TASK_SQL.delete, deleted)
            stored.difference_update(task_id for (task_id,) in deleted)
        if saved:
            tasks_left = await self._upsert(engine, _TASK_SQL.upsert, saved)
            stored.update(entry.id for entry in saved if entry not in tasks_left)
        # Rows are rendered chunk by chunk, each from the entry as it is right then.
        for start in range(0, len(jobs), BATCH_LIMIT):
            jobs_left += await self._upsert(
                engine, _JOB_SQL.upsert, jobs[start : start + BATCH_LIMIT]
            )
        if purge_before is not None:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(_PURGE_SQL, (purge_before.isoformat(" "),))
        return tasks_left, jobs_left

    async def _upsert(self, engine: AsyncEngine, sql: str, entries: list[Row]) -> list[Row]:
        """Write ``entries`` in one transaction; return those refused on their own.

        If the transaction fails, each row is tried alone, so one bad row never
        holds back the others. If every row fails alone too, the fault is not
        theirs (a full disk, say): the batch's error propagates.
        """
        rows = [_storable(entry.to_row()) for entry in entries]
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(sql, rows)
            return []
        except Exception as exc:
            if len(rows) == 1:
                raise
            batch_error = exc
        refused: list[tuple[Row, BaseException]] = []
        for entry, row in zip(entries, rows, strict=True):
            try:
                async with engine.begin() as connection:
                    await connection.exec_driver_sql(sql, row)
            except Exception as row_error:
                refused.append((entry, row_error))
        if len(refused) == len(entries):
            raise batch_error
        for entry, error in refused:
            self._logger.error(
                "quiv could not write the record %s to its database (the others were "
                "written); it will be retried",
                entry.id,
                exc_info=error,
            )
        return [entry for entry, _ in refused]

    def _file_intact(self) -> bool:
        path = self.path
        return path is not None and path.exists()

    async def _recreate(
        self, tasks: dict[str, Row | None], jobs: list[Row]
    ) -> tuple[dict[str, Row | None], list[Row]]:
        """Start a new database when the file was deleted under us, filled from memory.

        SQLite would otherwise go on "committing" into the unlinked file.
        """
        self._logger.error(
            "quiv's database file %s disappeared; writing a new one from memory", self.path
        )
        engine, self._engine = self._engine, None
        if engine is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await engine.dispose()
                except Exception:
                    self._logger.debug("quiv could not close the vanished database", exc_info=True)
        self._remove_directory()
        self._stored_tasks.clear()
        if self.snapshot is None:
            return tasks, jobs
        live_tasks, live_jobs = self.snapshot()
        every_task: dict[str, Row | None] = {task.id: task for task in live_tasks}
        every_task.update((key, entry) for key, entry in tasks.items() if entry is not None)
        every_job = {job.id: job for job in live_jobs}
        every_job.update((job.id, job) for job in jobs)
        return every_task, list(every_job.values())

    async def _initialise(self) -> AsyncEngine:
        try:
            return await self._open()
        except Exception as exc:
            raise DatabaseInitializationError(
                f"quiv could not create its database: {type(exc).__name__}: {exc}"
            ) from exc

    async def _open(self) -> AsyncEngine:
        if self._directory is None:
            parent = tempfile.gettempdir()
            removed = await anyio.to_thread.run_sync(remove_leftover_directories, parent)
            if removed:
                self._logger.info(
                    "quiv removed %d database directory(ies) left by processes that no longer "
                    "exist: %s",
                    len(removed),
                    ", ".join(removed),
                )
            self._directory = Path(tempfile.mkdtemp(prefix=f"quiv-{os.getpid()}-", dir=parent))
            if fcntl is not None:  # mode 0700 above; the lock says "still in use"
                lock = os.open(self._directory / _LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._owner_lock = lock
        path = self._directory / "quiv.sqlite3"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_SECONDS}
        )

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
            self._remove_directory(forget=False)  # path stays readable, for tests

    def _remove_directory(self, forget: bool = True) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            if forget:
                self._directory = None
        if self._owner_lock is not None:
            os.close(self._owner_lock)
            self._owner_lock = None

    async def read_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``"tasks"`` or ``"jobs"`` as committed; for tests and debugging."""
        await self.flush()
        if self._engine is None:
            return []
        source = _TASKS if table == "tasks" else _JOBS
        async with self._engine.connect() as connection:
            result = await connection.execute(source.select())
            return [dict(row._mapping) for row in result]

    @property
    def backlog(self) -> int:
        """Changes noted and not yet handed to the database (for ``stats()``)."""
        return len(self._tasks) + len(self._jobs)
