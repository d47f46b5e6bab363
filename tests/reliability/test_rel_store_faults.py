"""The database under the scheduler fails: the schedule, which lives in memory, goes on.

For each fault: an error is logged, scheduling continues, no pool slot leaks
(``pool_size=1`` and several one-off jobs all still run) and no task or job is
left showing ``running``. The store is internal; this suite reaches it as
``scheduler._store`` (``AsyncQuiv``) / ``scheduler._core._store`` (``Quiv``).

A lock held across shutdown is tested in ``test_rel_subprocess.py`` because it
can hang the host event loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest
from rel_support import (
    DEADLINE,
    EventLog,
    assert_nothing_running,
    eventually,
    exercise_pool,
    exercise_pool_sync,
    noop,
    store_of,
    wait_until,
)
from sqlalchemy.ext.asyncio import create_async_engine

from quiv import AsyncQuiv, Event, Quiv


def _write_errors(caplog: pytest.LogCaptureFixture, needle: str = "") -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "Quiv"
        and r.levelno >= logging.ERROR
        and "database" in r.getMessage()
        and (not needle or (r.exc_info is not None and needle in str(r.exc_info[1])))
    ]


def _disk_full(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


async def _disk_full_async(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


async def _rows(store: Any, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await store.read_rows(table)
    return rows


# -- disk full ------------------------------------------------------------------------


async def test_async_core_disk_full(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    log = EventLog()
    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        store = store_of(scheduler)
        monkeypatch.setattr(store, "_write", _disk_full_async)
        await log.attach_async(scheduler)
        recurring = await scheduler.add_task("recurring", noop, interval=0.01)
        await exercise_pool(scheduler, log)
        await eventually(lambda: log.count(Event.JOB_COMPLETED, recurring) >= 3)
        await store.flush()
        assert store.failed_batches >= 1
        assert _write_errors(caplog, "No space left on device")
        await scheduler.remove_task(recurring)
        await assert_nothing_running(scheduler)
    log.assert_lifecycles_consistent()


def test_sync_facade_disk_full(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    log = EventLog()
    with Quiv(pool_size=1, shutdown_timeout=1) as scheduler:
        store = store_of(scheduler)
        monkeypatch.setattr(store, "_write", _disk_full_async)
        log.attach_sync(scheduler)
        recurring = scheduler.add_task("recurring", noop, interval=0.01)
        exercise_pool_sync(scheduler, log)
        wait_until(
            lambda: (
                store.failed_batches >= 1 and bool(_write_errors(caplog, "No space left on device"))
            ),
            what="a failed batch, logged",
        )
        scheduler.remove_task(recurring)
        wait_until(lambda: scheduler.get_all_jobs("running") == [], what="no running job")
        assert all(t.status != "running" for t in scheduler.get_all_tasks(include_run_once=True))
    log.assert_lifecycles_consistent()


async def test_store_catches_up_after_transient_write_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once space is back, the database again mirrors the live schedule.

    Rows whose batch failed must be written again later (a task added while the
    disk was full and never touched since must not be missing for good).
    """
    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        store = store_of(scheduler)
        with monkeypatch.context() as patch:
            patch.setattr(store, "_write", _disk_full_async)
            idle = await scheduler.add_task("added-while-full", noop, interval=3600, delay=3600)
            await store.flush()
            assert store.failed_batches >= 1
        failed = store.failed_batches
        later = await scheduler.add_task("added-after", noop, interval=3600, delay=3600)
        await store.flush()
        assert store.failed_batches == failed
        stored = {row["id"] for row in await _rows(store, "tasks")}
        live = {t.id for t in await scheduler.get_all_tasks(include_run_once=True)}
        assert live == {idle, later}
        assert stored == live, f"rows missing from the database for good: {live - stored}"


# -- the database directory deleted ---------------------------------------------------------


async def test_database_directory_deleted_while_running(caplog: pytest.LogCaptureFixture) -> None:
    """Writes after the directory is gone must not vanish without a trace.

    Either the store notices (logs an error) or it recreates its database; what
    it must not do is keep "committing" into an unlinked file.
    """
    caplog.set_level(logging.INFO, logger="Quiv")
    log = EventLog()
    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        store = store_of(scheduler)
        await log.attach_async(scheduler)
        await scheduler.add_task("first", noop, interval=3600, delay=3600)
        await store.flush()
        path: Path = store.path
        assert await anyio.Path(path).exists()
        shutil.rmtree(path.parent)
        recurring = await scheduler.add_task("recurring", noop, interval=0.01)
        await exercise_pool(scheduler, log)
        await eventually(lambda: log.count(Event.JOB_COMPLETED, recurring) >= 3)
        await store.flush()
        noticed = store.failed_batches > 0 and bool(_write_errors(caplog))
        recreated = store.path is not None and await anyio.Path(store.path).exists()
        if recreated:
            # sqlite3's own "with" ends the transaction but does not close; closing does.
            with contextlib.closing(sqlite3.connect(store.path)) as reader:
                ids = {row[0] for row in reader.execute("SELECT id FROM quiv_tasks")}
            assert recurring in ids
        assert noticed or recreated, "writes went into a deleted database file, silently"
        await scheduler.remove_task(recurring)
        await assert_nothing_running(scheduler)
    log.assert_lifecycles_consistent()


# -- a read-only database ----------------------------------------------------------------


async def test_database_file_made_read_only(caplog: pytest.LogCaptureFixture) -> None:
    """chmod the file and its directory read-only under a running scheduler.

    The store keeps its connection open, so writes may go on succeeding (always
    as root, who ignores modes); if they fail, that must be logged. Either way
    scheduling is unaffected and shutdown still removes the files.
    """
    caplog.set_level(logging.INFO, logger="Quiv")
    log = EventLog()
    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        store = store_of(scheduler)
        await log.attach_async(scheduler)
        await scheduler.add_task("first", noop, interval=3600, delay=3600)
        await store.flush()
        path: Path = store.path
        os.chmod(path, stat.S_IRUSR)
        os.chmod(path.parent, stat.S_IRUSR | stat.S_IXUSR)
        try:
            recurring = await scheduler.add_task("recurring", noop, interval=0.01)
            await exercise_pool(scheduler, log)
            await eventually(lambda: log.count(Event.JOB_COMPLETED, recurring) >= 3)
            await store.flush()
            if store.failed_batches:
                assert _write_errors(caplog)
            await scheduler.remove_task(recurring)
            await assert_nothing_running(scheduler)
        finally:
            os.chmod(path.parent, stat.S_IRWXU)
            if await anyio.Path(path).exists():
                os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    assert not await anyio.Path(path.parent).exists()
    log.assert_lifecycles_consistent()


async def test_database_opened_read_only(caplog: pytest.LogCaptureFixture) -> None:
    """What a read-only file looks like to SQLite, even as root: every write is refused."""
    caplog.set_level(logging.INFO, logger="Quiv")
    log = EventLog()
    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        store = store_of(scheduler)
        await log.attach_async(scheduler)
        await scheduler.add_task("first", noop, interval=3600, delay=3600)
        await store.flush()
        writable = store._engine
        store._engine = create_async_engine(
            f"sqlite+aiosqlite:///file:{store.path}?mode=ro&uri=true"
        )
        await writable.dispose()
        recurring = await scheduler.add_task("recurring", noop, interval=0.01)
        await exercise_pool(scheduler, log)
        await eventually(lambda: log.count(Event.JOB_COMPLETED, recurring) >= 3)
        await store.flush()
        assert store.failed_batches >= 1
        assert _write_errors(caplog, "readonly database")
        await scheduler.remove_task(recurring)
        await assert_nothing_running(scheduler)
    log.assert_lifecycles_consistent()


# -- locked by another connection ---------------------------------------------------------


async def test_database_locked_by_another_connection(caplog: pytest.LogCaptureFixture) -> None:
    """Another process holds an exclusive transaction, so writes fail once SQLite's
    busy timeout expires.

    The failed batch is logged; scheduling goes on while the lock is held; after
    the lock is released, writing resumes and catches up.
    """
    caplog.set_level(logging.INFO, logger="Quiv")
    log = EventLog()
    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        store = store_of(scheduler)
        await log.attach_async(scheduler)
        await scheduler.add_task("first", noop, interval=3600, delay=3600)
        await store.flush()
        locker = sqlite3.connect(store.path, timeout=0, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            recurring = await scheduler.add_task("recurring", noop, interval=0.01)
            await exercise_pool(scheduler, log)
            await eventually(lambda: log.count(Event.JOB_COMPLETED, recurring) >= 3)
            await eventually(lambda: store.failed_batches >= 1, within=DEADLINE + 5)
            assert _write_errors(caplog, "database is locked")
            # Still locked: the task keeps running on its 10 ms cadence.
            target = log.count(Event.JOB_COMPLETED, recurring) + 10
            await eventually(lambda: log.count(Event.JOB_COMPLETED, recurring) >= target)
        finally:
            locker.rollback()
            locker.close()
        await scheduler.remove_task(recurring)
        await assert_nothing_running(scheduler)
        failed = store.failed_batches
        last = await scheduler.add_task("after-unlock", noop, interval=3600, delay=3600)
        # A batch that started under the lock may still fail; the one after it must not.
        await store.flush()
        await store.flush()
        assert store.failed_batches <= failed + 1
        assert last in {row["id"] for row in await _rows(store, "tasks")}
    log.assert_lifecycles_consistent()


# -- text SQLite cannot encode, and rows refused on their own ------------------------------

#: What ``os.listdir`` gives for a file named with the Latin-1 byte 0xe9.
UNDECODABLE = "x" + b"\xe9".decode("utf-8", "surrogateescape")


def _missing_file() -> None:
    raise FileNotFoundError(UNDECODABLE)


async def test_lone_surrogates_are_stored_escaped_and_block_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The issue's example: a surrogate in a task name and in an error message."""
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        store = store_of(scheduler)
        bad_name = await scheduler.add_task(f"scan {UNDECODABLE}", noop, interval=3600)
        bad_error = await scheduler.add_task("open", _missing_file, interval=3600)
        await eventually(lambda: len(log.finals(bad_name)) == len(log.finals(bad_error)) == 1)
        await store.flush()
        later = [await scheduler.add_task(f"later-{i}", noop, interval=3600) for i in range(3)]
        await eventually(lambda: all(len(log.finals(t)) == 1 for t in later))
        jobs = {row["task_id"]: row for row in await _rows(store, "jobs")}
        tasks = {row["id"]: row for row in await _rows(store, "tasks")}
        failed = await scheduler.get_job(log.finals(bad_error)[0].id)
        assert store.failed_batches == 0
    # Every job is persisted, the unrelated ones included, with its final state.
    assert set(jobs) == {bad_name, bad_error, *later}
    assert all(jobs[t]["status"] == "completed" for t in [bad_name, *later])
    # The text is stored escaped; the live models keep it as it was.
    assert tasks[bad_name]["task_name"] == "scan x\\udce9"
    assert jobs[bad_name]["task_name"] == "scan x\\udce9"
    assert (jobs[bad_error]["error_type"], jobs[bad_error]["error_message"]) == (
        "FileNotFoundError",
        "x\\udce9",
    )
    assert failed.error_message == UNDECODABLE
    assert not _write_errors(caplog)


class _Row:
    """A job row the store can persist; ``value`` goes into its error_type column."""

    def __init__(self, row_id: str, value: object = None) -> None:
        self.id = row_id
        self.value = value

    def to_row(self) -> tuple[Any, ...]:
        when = "2030-01-01 00:00:00+00:00"
        return (self.id, "t", "n", "completed", when, when, 0.0, None, self.value, 1, None)


async def test_a_row_refused_on_its_own_is_retried_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch that fails is written row by row: only the bad row waits for a retry."""
    from quiv._store import Store

    store = Store(logging.getLogger("Quiv"))
    store.start()
    bad = _Row("bad", object())  # a value sqlite3 cannot bind
    async with anyio.create_task_group() as group:
        group.start_soon(store.run)
        with anyio.fail_after(DEADLINE):
            for row in (_Row("before"), bad, _Row("after")):
                store.save_job(row)
            await store.flush()
            assert {r["id"] for r in await _rows(store, "jobs")} == {"before", "after"}
            assert store.failed_batches >= 1
            refused = _write_errors(caplog)
            assert refused[0].args == ("bad",), refused[0].getMessage()
            # Retries (every 0.5 s or more) concern the bad row alone.
            assert all("'before'" not in str(r.exc_info) for r in refused)
            assert all("'after'" not in str(r.exc_info) for r in refused)
            bad.value = "ValueError"  # whatever was wrong with it is fixed: the retry writes it
            await store.flush()
            rows = {r["id"]: r for r in await _rows(store, "jobs")}
            assert set(rows) == {"before", "bad", "after"}
            assert rows["bad"]["error_type"] == "ValueError"
            store.close()


async def test_a_batch_every_row_of_which_fails_is_one_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When no row can be written alone either, the fault is the database's: one error."""
    from quiv._store import Store

    store = Store(logging.getLogger("Quiv"))
    store.start()
    async with anyio.create_task_group() as group:
        group.start_soon(store.run)
        with anyio.fail_after(DEADLINE):
            store.save_job(_Row("first"))
            await store.flush()  # the database exists
            store.save_job(_Row("a", object()))
            store.save_job(_Row("b", object()))
            await store.flush()
            assert store.failed_batches == 1
            errors = _write_errors(caplog)
            assert len(errors) == 1 and "2 job records" in errors[0].getMessage()
            store.close()
