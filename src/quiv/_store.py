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

The store is also where the job history lives. Memory keeps the live jobs and
a bounded window of recently finished ones; a finished job leaves memory only
once its final row is committed, and from then on :meth:`Store.read_job` and
:meth:`Store.read_jobs` find it here. Those reads use the standard library's
``sqlite3`` on a read-only connection per thread (the file is in WAL mode, so a
reader never waits for the writer), and may be called from any thread.

Everything that touches the database is in this module, behind a small
surface: the producers (``save_task``, ``delete_task``, ``save_job``,
``purge_jobs``, ``flush``, ``close``), the writer task (``run``) and the reads.
SQLAlchemy and SQLModel, which cost more to import than the rest of quiv, are
loaded by the writer in a worker thread when the first change is noted (see
``_store_tables``); an idle scheduler never loads them.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._exceptions import DatabaseInitializationError
from ._readers import ThreadReaders
from ._registry import JOB_COLUMNS, TASK_COLUMNS

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Store"]


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


TASK_TABLE = "quiv_tasks"
JOB_TABLE = "quiv_jobs"


class Row(Protocol):
    """A live object the store can persist: the registry's task and job entries."""

    id: str

    def to_row(self) -> tuple[Any, ...]: ...


class _Table:
    """Driver-level statements for one table (``_store_tables`` checks the columns).

    The hot path goes straight to the driver with ready-made tuples, skipping
    SQLAlchemy's per-row type processing; ``columns`` must match the order the
    entries' ``to_row`` produces. An upsert updates a row in place, so a row
    keeps the ``rowid`` of its first write: job rows in ``rowid`` order are in
    the order the jobs were created.

    A batch goes in as a few statements of many rows each, not one statement
    per row: the driver lets go of the GIL for every statement it steps, and
    while the loop is busy running jobs each of those hand-backs waits for the
    loop to let go in turn, so a row at a time would crawl exactly when there
    is most to write.
    """

    def __init__(self, table: str, columns: tuple[str, ...]) -> None:
        self._names = ", ".join(columns)
        self._marks = "(" + ", ".join("?" for _ in columns) + ")"
        updates = ", ".join(f"{name} = excluded.{name}" for name in columns if name != "id")
        self._table = table
        self._on_conflict = f" ON CONFLICT (id) DO UPDATE SET {updates}"
        self._width = len(columns)
        self._statements: dict[int, str] = {}
        self.upsert = self.upsert_of(1)
        self.delete = f"DELETE FROM {table} WHERE id = ?"

    def upsert_of(self, count: int) -> str:
        """The upsert of ``count`` rows at once (statements are cached by size)."""
        sql = self._statements.get(count)
        if sql is None:
            values = ", ".join([self._marks] * count)
            sql = f"INSERT INTO {self._table} ({self._names}) VALUES {values}{self._on_conflict}"
            self._statements[count] = sql
        return sql

    def batches(self, rows: list[tuple[Any, ...]]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``rows`` as (statement, flat parameters) pairs: whole ``BATCH_LIMIT``-row
        chunks, then what is left in chunks of power-of-two sizes.

        Few distinct sizes keep the driver's statement cache warm; no statement
        goes over SQLite's limit on parameters.
        """
        most = max(1, _parameter_limit() // self._width)
        whole = BATCH_LIMIT if most >= BATCH_LIMIT else 0
        size = 1 << (most.bit_length() - 1)  # the largest power of two that fits
        start = 0
        while start < len(rows):
            left = len(rows) - start
            if whole and left >= whole:
                count = whole
            else:
                while size > left:
                    size >>= 1
                count = size
            chunk = rows[start : start + count]
            yield self.upsert_of(count), tuple(value for row in chunk for value in row)
            start += count


@functools.cache
def _parameter_limit() -> int:
    """Parameters one statement may take: 32766 since SQLite 3.32, 999 before."""
    import sqlite3  # here, not at import: ``import quiv`` stays light

    return 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


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


_TASK_SQL = _Table(TASK_TABLE, TASK_COLUMNS)
_JOB_SQL = _Table(JOB_TABLE, JOB_COLUMNS)
_PURGE_SQL = f"DELETE FROM {JOB_TABLE} WHERE ended_at < ?"
#: Job rows within the retention window (``ended_at`` is text in one UTC format, so
#: text order is time order), in the order the jobs were created.
_IN_WINDOW = "(ended_at IS NULL OR ended_at >= ?)"
_READ_JOB_SQL = f"SELECT {', '.join(JOB_COLUMNS)} FROM {JOB_TABLE} WHERE id = ? AND {_IN_WINDOW}"
_READ_JOBS_SQL = f"SELECT {', '.join(JOB_COLUMNS)} FROM {JOB_TABLE} WHERE {_IN_WINDOW}"
#: With a status: the rows of that status, and every unfinished row, which may be
#: stale (a final row never changes again, so a stale row is never final).
_READ_STATUS_SQL = f"{_READ_JOBS_SQL} AND (status = ? OR ended_at IS NULL)"

#: Rows written per transaction at most, so rendering one never holds the loop long.
BATCH_LIMIT = 500
#: Seconds the writer lets changes gather after the first one (group commit). It
#: also keeps the writer out of the way of the dispatch that caused the change.
WRITE_DELAY = 0.005
#: After a failed write, the writer waits this long before retrying, doubling up to
#: the maximum; closing the store ends the wait for one last attempt.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
#: Page cache of each connection, writer and readers, in KiB (SQLite's default: 2 MiB).
CACHE_KIB = 512
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

    Task rows go in a round with no job rows waiting (or on a flush or close).
    A task lives in memory anyway, while a finished job's memory waits for its
    row to be committed; and in a burst of run-once tasks most of them are gone
    before their row's turn comes, so they are never written at all.
    """

    reads_wait = False  # a local file

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = logger
        self._tasks: dict[str, Row | None] = {}  # None: delete
        self._jobs: dict[str, Row] = {}
        self._purge_before: datetime | None = None
        self._flushes: list[anyio.Event] = []
        self._stored_tasks: set[str] = set()  # ids committed to the database
        self._tasks_in_flight: set[str] = set()  # ids of the task rows being written now
        self._kick: anyio.Event | None = None  # created by start(), on the loop
        self._closing: anyio.Event | None = None
        self._closed = False
        self._directory: Path | None = None
        self._owner_lock: int | None = None  # fd holding the directory's owner lock
        self._engine: AsyncEngine | None = None
        self._retry_delay = RETRY_FIRST_SECONDS
        #: Prepares the first write from the first change noted on (see _wake_writer).
        self._preparer: threading.Thread | None = None
        self._preparing_error: BaseException | None = None
        self.failed_batches = 0
        #: True from a failed write to the next one that succeeds.
        self.failing = False
        #: Returns every live task and job; used to refill a database that vanished.
        self.snapshot: Callable[[], tuple[Iterable[Row], Iterable[Row]]] | None = None
        #: Called on the loop after each write attempt with the job entries whose
        #: latest state it committed (empty if it failed).
        self.committed: Callable[[list[Any]], None] | None = None
        # Readers: one read-only sqlite3 connection per thread, closed when the thread
        # ends or the store closes, whichever comes first.
        self._readers = ThreadReaders(BUSY_TIMEOUT_SECONDS, CACHE_KIB)

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
        if self._preparer is None and not self._closed:  # a first change, not the close
            self._start_preparing()

    def _start_preparing(self) -> None:
        """Begin, in a thread of its own, what the first write needs and the loop need not do.

        That is importing the database layer (a good part of a second, the first
        time in a process) and removing the directories dead processes left
        behind. The writer may not run for a while after the first change (the
        loop is busy with the burst that made it), and a thread hop costs a lot
        while the loop is busy: starting both with the first change lets them
        overlap the burst, and the first write hops at most once, to wait for them.
        """
        self._preparer = threading.Thread(target=self._prepare, name="quiv-store-prepare")
        self._preparer.start()

    def _prepare(self) -> None:
        try:
            _load_tables()  # at once if an earlier store in this process loaded it
            removed = remove_leftover_directories(tempfile.gettempdir())
        except BaseException as exc:  # raised again by the writer, in _initialise
            self._preparing_error = exc
            return
        if removed:
            self._logger.info(
                "quiv removed %d database directory(ies) left by processes that no longer "
                "exist: %s",
                len(removed),
                ", ".join(removed),
            )

    async def _prepared(self) -> None:
        """Wait, off the loop, for :meth:`_prepare`; raise what it raised."""
        preparer = self._preparer
        if preparer is None:
            self._start_preparing()
            preparer = self._preparer
            assert preparer is not None
        if preparer.is_alive():
            await anyio.to_thread.run_sync(preparer.join)
        error, self._preparing_error = self._preparing_error, None
        if error is not None:
            self._preparer = None  # the next attempt prepares afresh
            raise error

    @property
    def backlog(self) -> int:
        """Changes noted and not yet handed to the database (for ``stats()``)."""
        return len(self._tasks) + len(self._jobs)

    def save_task(self, task: Row) -> None:
        if not self._closed:
            self._tasks[task.id] = task
            self._wake_writer()

    def delete_task(self, task_id: str) -> None:
        if self._closed:
            return
        if task_id in self._stored_tasks or task_id in self._tasks_in_flight:
            self._tasks[task_id] = None
            self._wake_writer()
        else:  # never written, nor being written: there is no row to delete
            self._tasks.pop(task_id, None)

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
                if self._tasks:  # task rows left for the next round: come back for them
                    self._kick.set()
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
        if self._closed and self._engine is None and self._directory is None:
            # Never written, and the files go with the store: a database created
            # now would be deleted at once. Closing need not wait for one.
            self._tasks, self._jobs, self._purge_before = {}, {}, None
            flushes, self._flushes = self._flushes, []
            for event in flushes:
                event.set()
            return True
        if self._jobs and not (self._flushes or self._closed):
            tasks: dict[str, Row | None] = {}  # task rows wait for a round without job rows
        else:
            tasks, self._tasks = self._tasks, {}
        jobs, self._jobs = self._jobs, {}
        purge_before, self._purge_before = self._purge_before, None
        flushes, self._flushes = self._flushes, []
        self._tasks_in_flight = set(tasks)
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
            # Writes are idempotent upserts and deletes: note them again, in their
            # first order (new rows keep their creation order), with any newer change
            # of the same row winning, and try again later.
            tasks.update(self._tasks)
            self._tasks = tasks
            jobs.update(self._jobs)
            self._jobs = jobs
            if purge_before is not None and self._purge_before is None:
                self._purge_before = purge_before
            self.failing = True
            self._report_committed([])
            return False
        finally:
            self._tasks_in_flight = set()
            for event in flushes:
                event.set()
        if tasks_left or jobs_left:  # rows refused on their own: only they are retried
            self.failed_batches += 1
            for entry in tasks_left:
                self._tasks.setdefault(entry.id, entry)
            for job in jobs_left:
                self._jobs.setdefault(job.id, job)
            self.failing = True
            self._report_committed([])
            return False
        self.failing = False
        return True

    def _report_committed(self, entries: list[Row]) -> None:
        """Tell :attr:`committed` which job entries are on disk as they are now."""
        if self.committed is not None:
            noted = self._jobs  # changed again since they were rendered: not yet
            self.committed([entry for entry in entries if entry.id not in noted])

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
        if engine is None:  # closed while the database layer loaded: nothing to write to
            return tasks_left, jobs_left
        if deleted:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(_TASK_SQL.delete, deleted)
            stored.difference_update(task_id for (task_id,) in deleted)
        if saved:
            tasks_left = await self._upsert(engine, _TASK_SQL, saved)
            stored.update(entry.id for entry in saved if entry not in tasks_left)
        # Rows are rendered chunk by chunk, each from the entry as it is right then.
        for start in range(0, len(jobs), BATCH_LIMIT):
            chunk = jobs[start : start + BATCH_LIMIT]
            refused = await self._upsert(engine, _JOB_SQL, chunk)
            jobs_left += refused
            self._report_committed([job for job in chunk if job not in refused])
        if purge_before is not None:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(_PURGE_SQL, (purge_before.isoformat(" "),))
        return tasks_left, jobs_left

    async def _upsert(self, engine: AsyncEngine, table: _Table, entries: list[Row]) -> list[Row]:
        """Write ``entries`` in one transaction; return those refused on their own.

        If the transaction fails, each row is tried alone, so one bad row never
        holds back the others. If every row fails alone too, the fault is not
        theirs (a full disk, say): the batch's error propagates.
        """
        rows = [_storable(entry.to_row()) for entry in entries]
        try:
            async with engine.begin() as connection:
                for statement, parameters in table.batches(rows):
                    await connection.exec_driver_sql(statement, parameters)
            return []
        except Exception as exc:
            if len(rows) == 1:
                raise
            batch_error = exc
        refused: list[tuple[Row, BaseException]] = []
        for entry, row in zip(entries, rows, strict=True):
            try:
                async with engine.begin() as connection:
                    await connection.exec_driver_sql(table.upsert, row)
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
        self._readers.close()
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

    async def _initialise(self) -> AsyncEngine | None:
        """Create the database; None if the store closed while the layer was loading."""
        try:
            await self._prepared()
            if self._closed and self._directory is None:  # closed meanwhile: none needed
                return None
            return await self._open()
        except Exception as exc:
            raise DatabaseInitializationError(
                f"quiv could not create its database: {type(exc).__name__}: {exc}"
            ) from exc

    async def _open(self) -> AsyncEngine:
        if self._directory is None:
            parent = tempfile.gettempdir()
            self._directory = Path(tempfile.mkdtemp(prefix=f"quiv-{os.getpid()}-", dir=parent))
            if fcntl is not None:  # mode 0700 above; the lock says "still in use"
                lock = os.open(self._directory / _LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._owner_lock = lock
        path = self._directory / "quiv.sqlite3"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        await anyio.to_thread.run_sync(_create_schema, path)
        from . import _store_tables as tables  # loaded already, off the loop

        engine = tables.create_async_engine(
            f"sqlite+aiosqlite:///{path}",
            connect_args={"timeout": BUSY_TIMEOUT_SECONDS},
            # Every use is an ``engine.begin()`` block, which commits or rolls back
            # itself: a rollback when the connection goes back to the pool would be
            # one more trip to the driver's thread per transaction, for nothing.
            pool_reset_on_return=None,
        )

        @tables.sa.event.listens_for(engine.sync_engine, "connect")
        def _tune(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # NORMAL sync is safe in WAL (see _create_schema) and the file is
            # temporary anyway.
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Rows are appended and read back rarely: a small page cache is enough,
            # and it is memory the history would otherwise cost after all.
            cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            cursor.close()

        self._engine = engine
        return engine

    async def _dispose(self) -> None:
        engine, self._engine = self._engine, None
        self._readers.close()
        try:
            if engine is not None:
                await engine.dispose()
            # Not abandoned: a thread still importing while the interpreter exits
            # can disturb the exit (SQLAlchemy runs exec() as it loads).
            preparer = self._preparer
            if preparer is not None and preparer.is_alive():
                await anyio.to_thread.run_sync(preparer.join)
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
        from . import _store_tables as tables

        source = tables.TASKS if table == "tasks" else tables.JOBS
        async with self._engine.connect() as connection:
            result = await connection.execute(source.select())
            return [dict(row._mapping) for row in result]

    # -- reads: synchronous, from any thread -----------------------------------

    def read_job(self, job_id: str, ended_since: datetime) -> tuple[Any, ...] | None:
        """The committed row of one job, in ``JOB_COLUMNS`` order, unless it ended
        before ``ended_since`` (outside the retention window) or is not there."""
        rows = self._read(_READ_JOB_SQL, (job_id, _sql_time(ended_since)))
        return rows[0] if rows else None

    def read_jobs(self, ended_since: datetime, status: str | None = None) -> list[tuple[Any, ...]]:
        """The committed job rows within the window, in the order the jobs were created.

        With ``status``: the rows of that status plus every unfinished row (which
        a newer state in memory may have overtaken); the caller merges.
        """
        since = _sql_time(ended_since)
        if status is None:
            return self._read(f"{_READ_JOBS_SQL} ORDER BY rowid", (since,))
        return self._read(f"{_READ_STATUS_SQL} ORDER BY rowid", (since, status))

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        connection = self._reader()
        if connection is None:
            return []
        import sqlite3

        try:
            return connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            if "no such table" in str(exc):  # the writer has not created it yet
                return []
            self._logger.warning("quiv could not read its job history: %s", exc)
            return []

    def _reader(self) -> sqlite3.Connection | None:
        """This thread's read-only connection to the database, if there is one."""
        path = self.path
        if path is None:
            return None
        import sqlite3

        try:
            return self._readers.connection(path)
        except sqlite3.Error as exc:
            self._logger.warning("quiv could not open its job history for reading: %s", exc)
            return None


def _sql_time(value: datetime) -> str:
    # The text form the rows are written in (see ``_registry``).
    return value.isoformat(" ")


def _create_schema(path: Path) -> None:
    """Create the tables in the new file at ``path``, in WAL mode (in a worker thread).

    Through a plain synchronous engine on the standard library's driver: one
    trip to a thread in all, where the asynchronous engine makes one per
    statement, and each of those waits long while the loop is busy. WAL lets
    readers (the history reads, a debugging session) look while the writer
    writes, and it is a property of the file: the writer's connections keep it.
    """
    from . import _store_tables as tables

    engine = tables.sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            tables.metadata.create_all(connection, tables=[tables.TASKS, tables.JOBS])
    finally:
        engine.dispose()


def _load_tables() -> None:
    """Import the database layer (SQLAlchemy, SQLModel and the tables)."""
    from . import _store_tables  # noqa: F401
