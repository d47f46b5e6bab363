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
