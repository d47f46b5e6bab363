"""The durable SQLite store in one process: options, checks, restart continuity, sharing.

Two schedulers on one file in one process stand in for two processes where
only the store's behaviour matters (what one changes, the other sees within
the poll period); real processes are in ``test_shared_processes``.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import stat
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from _stores_support import query
from _support import noop, read_from_short_lived_threads
from quiv import (
    AsyncQuiv,
    ConfigurationError,
    HandlerRegistrationError,
    Job,
    JobStatus,
    Quiv,
    TaskStatus,
)
from quiv._exceptions import DatabaseInitializationError

DEADLINE = 10.0
LONG = 3600


@pytest.fixture
def url(tmp_path: Path) -> str:
    directory = tmp_path / "db"
    directory.mkdir(mode=0o700)
    return f"sqlite:///{directory / 'quiv.db'}"


def _path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


runs: list[tuple[str, Any]] = []


def remember(label: str, value: Any = None) -> None:
    """A module-level handler: importable by any process."""
    runs.append((label, value))


# -- options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"store": "mysql://localhost/db"}, "'sqlite:///' or 'postgresql://'"),
        ({"store": "sqlite://"}, "three slashes"),
        ({"store": 42}, "database URL or None"),
        ({"serializer": "yaml"}, "'json' or 'pickle'"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"lease_seconds": 5, "lease_renewal": 5}, "shorter than lease_seconds"),
    ],
)
@pytest.mark.parametrize("facade", [AsyncQuiv, Quiv])
def test_bad_store_options_are_refused(
    facade: type[AsyncQuiv] | type[Quiv], options: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(")):
        facade(**options)


async def test_a_lambda_or_a_closure_cannot_be_a_durable_handler(url: str) -> None:
    scheduler = AsyncQuiv(store=url)

    def inner() -> None:
        pass

    with pytest.raises(HandlerRegistrationError, match="a lambda"):
        await scheduler.add_task("l", lambda: None, interval=LONG)
    with pytest.raises(HandlerRegistrationError, match="closure"):
        await scheduler.add_task("c", inner, interval=LONG)
    assert await scheduler.get_all_tasks() == []
    # The private store has no such rule.
    assert await AsyncQuiv().add_task("l", lambda: None, interval=LONG)


async def test_durable_arguments_must_be_json_unless_pickle_is_chosen(url: str) -> None:
    scheduler = AsyncQuiv(store=url)
    with pytest.raises(HandlerRegistrationError, match="JSON-serialisable"):
        await scheduler.add_task("a", remember, interval=LONG, args=("x", {1, 2}))
    with pytest.raises(HandlerRegistrationError, match="JSON-serialisable"):
        await scheduler.add_task("k", remember, interval=LONG, kwargs={"value": b"raw"})
    pickled = AsyncQuiv(store=url, serializer="pickle")
    assert await pickled.add_task("a", remember, interval=LONG, args=("x", {1, 2}))


@pytest.mark.parametrize("facade", ["async", "sync"])
async def test_task_id_is_the_callers_and_unique(facade: str) -> None:
    if facade == "async":
        scheduler = AsyncQuiv()
        assert await scheduler.add_task("a", noop, interval=LONG, task_id="nightly") == "nightly"
        assert (await scheduler.get_task("nightly")).id == "nightly"
        with pytest.raises(ConfigurationError, match="already in use"):
            await scheduler.add_task("b", noop, interval=LONG, task_id="nightly")
        for bad in ("", 7, "x" * 201, "tab\there"):
            with pytest.raises(ConfigurationError, match="task_id"):
                await scheduler.add_task("b", noop, interval=LONG, task_id=bad)  # type: ignore[arg-type]
        assert [task.id for task in await scheduler.get_all_tasks()] == ["nightly"]
    else:
        with Quiv() as sync_scheduler:
            assert sync_scheduler.add_task("a", noop, interval=LONG, task_id="n") == "n"
            with pytest.raises(ConfigurationError, match="already in use"):
                sync_scheduler.add_task("b", noop, interval=LONG, task_id="n")
            assert sync_scheduler.get_task("n").task_name == "a"


# -- the file -------------------------------------------------------------------


async def test_the_file_is_private_wal_and_versioned(url: str) -> None:
    async with AsyncQuiv(store=url) as scheduler:
        await scheduler.add_task("a", remember, interval=LONG, delay=LONG, task_id="a")
        await scheduler._store.flush()
    path = _path(url)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        version = connection.execute(
            "SELECT value FROM quiv_meta WHERE key = 'schema_version'"
        ).fetchone()
        assert version == ("1",)
        assert connection.execute("SELECT id FROM quiv_tasks").fetchall() == [("a",)]


async def test_a_directory_others_may_write_to_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    scheduler = AsyncQuiv(store=f"sqlite:///{shared / 'quiv.db'}")
    with pytest.raises(DatabaseInitializationError, match="other users may write"):
        async with scheduler:
            pass
    assert not (shared / "quiv.db").exists()


async def test_an_unknown_schema_version_is_refused_and_left_alone(url: str) -> None:
    async with AsyncQuiv(store=url):
        pass
    path = _path(url)
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("UPDATE quiv_meta SET value = '99' WHERE key = 'schema_version'")
        connection.commit()
    before = path.read_bytes()
    with pytest.raises(DatabaseInitializationError, match="schema version 99"):
        async with AsyncQuiv(store=url):
            pass
    assert path.read_bytes() == before


# -- continuity -------------------------------------------------------------------


async def _wait_for_runs(label: str, count: int) -> None:
    with anyio.fail_after(DEADLINE):
        while sum(1 for name, _ in runs if name == label) < count:  # noqa: ASYNC110 - the database, written by another scheduler
            await anyio.sleep(0.01)


async def test_a_restart_continues_the_stored_schedule_and_history(store: str) -> None:
    runs.clear()
    async with AsyncQuiv(store=store) as first:
        await first.add_task("beat", remember, interval=0.2, args=("beat",), task_id="beat")
        await _wait_for_runs("beat", 3)
        await first._store.flush()
        first_jobs = {job.id for job in await first.get_all_jobs()}
    before = len(runs)
    await anyio.sleep(0.7)  # three due times pass while nothing runs
    async with AsyncQuiv(store=store) as second:
        # Added again from code, with the same id: the stored state goes on.
        await second.add_task("beat", remember, interval=0.2, args=("beat",), task_id="beat")
        await _wait_for_runs("beat", before + 2)
        jobs = await second.get_all_jobs()
    # History of both lives is there; the overdue due times were coalesced into one run.
    assert first_jobs <= {job.id for job in jobs}
    dues = [due for (due,) in query(store, "SELECT due FROM quiv_claims ORDER BY due")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(dues)]
    assert len(set(dues)) == len(dues)
    assert any(gap >= 600_000 for gap in gaps)  # the down time: coalesced, not replayed
    assert all(gap % 200_000 == 0 for gap in gaps)  # one cadence across both lives


async def test_a_paused_task_stays_paused_across_a_restart(store: str) -> None:
    async with AsyncQuiv(store=store) as first:
        await first.add_task("p", remember, interval=LONG, delay=LONG, task_id="p")
        await first._store.flush()
        await first.pause_task("p")
    async with AsyncQuiv(store=store) as second:
        await second.add_task("p", remember, interval=LONG, delay=LONG, task_id="p")
        with anyio.fail_after(DEADLINE):
            while (await second.get_task("p")).status is not TaskStatus.PAUSED:  # noqa: ASYNC110 - the database, written by another scheduler
                await anyio.sleep(0.01)


# -- two schedulers on one file -------------------------------------------------------


async def test_pause_resume_and_remove_reach_the_other_scheduler(store: str) -> None:
    async with AsyncQuiv(store=store) as one, AsyncQuiv(store=store) as other:
        for scheduler in (one, other):
            await scheduler.add_task("x", remember, interval=LONG, delay=LONG, task_id="x")
        await one._store.flush()
        await other._store.flush()

        async def status_in_other() -> TaskStatus | None:
            tasks = await other.get_all_tasks()
            return tasks[0].status if tasks else None

        # PostgreSQL wakes the other process by NOTIFY; SQLite's poll period is 0.5 s.
        within = 0.3 if store.startswith("postgres") else 1.0

        async def wait_until(status: TaskStatus | None) -> None:
            with anyio.fail_after(within):
                while await status_in_other() is not status:  # noqa: ASYNC110 - the database, written by another scheduler
                    await anyio.sleep(0.01)

        await one.pause_task("x")
        await wait_until(TaskStatus.PAUSED)
        await one.resume_task("x", delay=LONG)
        await wait_until(TaskStatus.ACTIVE)
        await one.remove_task("x")
        await wait_until(None)


async def test_jobs_of_every_scheduler_are_read_from_either(store: str) -> None:
    runs.clear()
    async with AsyncQuiv(store=store) as one, AsyncQuiv(store=store) as other:
        await one.add_task(
            "once", remember, interval=LONG, run_once=True, args=("once",), task_id="once"
        )
        await _wait_for_runs("once", 1)
        await one._store.flush()
        with anyio.fail_after(DEADLINE):
            while not (jobs := await other.get_all_jobs()):  # noqa: ASYNC110 - the database, written by another scheduler
                await anyio.sleep(0.01)
        [job] = jobs
        assert job.status is JobStatus.COMPLETED
        assert job.worker is not None and job.worker.endswith(f"/{os.getpid()}")
        assert await other.get_job(job.id) == job


async def reporting(_progress_hook: Any, _stop_event: Any) -> None:
    """Reports progress, then waits to be told to stop."""
    _progress_hook(step=1)
    while not _stop_event.is_set():  # noqa: ASYNC110 - a threading.Event cannot be awaited
        await anyio.sleep(0.01)
    remember("stopped")


async def _running_in_one_seen_by_other(one: AsyncQuiv, other: AsyncQuiv) -> Job:
    """Start task ``r`` (``reporting``) in ``one``; its running job, once ``other`` sees it."""
    await one.add_task("r", reporting, interval=LONG, task_id="r")
    with anyio.fail_after(DEADLINE):
        while not (jobs := await other.get_all_jobs(status="running")):  # noqa: ASYNC110 - the database
            await anyio.sleep(0.01)
    [job] = jobs
    return job


async def test_a_task_added_in_one_scheduler_is_known_and_controlled_from_the_other(
    store: str,
) -> None:
    runs.clear()
    async with AsyncQuiv(store=store) as one, AsyncQuiv(store=store) as other:
        # The other learns of it within the poll period, and sees its job and progress.
        job = await _running_in_one_seen_by_other(one, other)
        with anyio.fail_after(DEADLINE):
            while (await other.get_job(job.id)).progress != {"step": 1}:  # noqa: ASYNC110 - the database
                await anyio.sleep(0.01)
        assert (await other.get_task("r")).task_name == "r"
        assert await other.cancel_job(job.id) is True  # runs in ``one``: asked through the store
        await _wait_for_runs("stopped", 1)
        with anyio.fail_after(DEADLINE):
            while (await other.get_job(job.id)).status is not JobStatus.CANCELLED:  # noqa: ASYNC110 - the database
                await anyio.sleep(0.01)
        assert await other.cancel_job(job.id) is False


async def test_waiting_for_a_job_that_another_scheduler_runs(store: str) -> None:
    runs.clear()
    async with AsyncQuiv(store=store) as one, AsyncQuiv(store=store) as other:
        job = await _running_in_one_seen_by_other(one, other)
        ended: list[Job] = []

        async def wait() -> None:
            ended.append(await other.wait_for_job(job.id, timeout=DEADLINE))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.sleep(0.7)  # more than a poll period: it still runs, so still waited for
            assert ended == []
            await one.cancel_job(job.id)
        assert [(found.id, found.status) for found in ended] == [(job.id, JobStatus.CANCELLED)]


async def test_waiting_for_a_tasks_next_run_in_another_scheduler(store: str) -> None:
    runs.clear()
    async with AsyncQuiv(store=store) as one, AsyncQuiv(store=store) as other:
        for scheduler in (one, other):
            await scheduler.add_task(
                "t", remember, interval=LONG, delay=LONG, args=("t",), task_id="t"
            )
        ended: list[Job] = []

        async def wait() -> None:
            ended.append(await other.wait_for_task("t", timeout=DEADLINE))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await one.run_task_immediately("t")  # runs in ``one``
        assert runs == [("t", None)]
        [job] = ended
        assert (job.task_id, job.status) == ("t", JobStatus.COMPLETED)
        assert [found.id for found in await one.get_all_jobs(task_id="t")] == [job.id]


async def test_a_locked_database_holds_runs_back_and_none_runs_twice(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Claims wait while another process holds the write lock; a warning says so."""
    from quiv._stores import _sqlite

    monkeypatch.setattr(_sqlite, "BUSY_TIMEOUT_SECONDS", 0.1)
    runs.clear()

    def beats() -> int:
        return sum(1 for name, _ in runs if name == "beat")

    async with AsyncQuiv(store=url) as scheduler:
        await scheduler.add_task("beat", remember, interval=0.1, args=("beat",), task_id="beat")
        await _wait_for_runs("beat", 2)
        with closing(sqlite3.connect(_path(url), isolation_level=None)) as blocker:
            blocker.execute("BEGIN EXCLUSIVE")
            with anyio.fail_after(DEADLINE):
                while "could not reach its database" not in caplog.text:  # noqa: ASYNC110 - a log
                    await anyio.sleep(0.01)
            during = beats()
            await anyio.sleep(0.5)  # five due times: none can be claimed, none runs
            assert beats() <= during + 1  # at most a job claimed just before the lock
            held_back = beats()
            blocker.execute("ROLLBACK")
        await _wait_for_runs("beat", held_back + 2)
        with anyio.fail_after(DEADLINE):
            while "reaches its database" not in caplog.text:  # noqa: ASYNC110 - a log
                await anyio.sleep(0.01)
        await scheduler._store.flush()
        await scheduler.pause_task("beat")
        await scheduler._store.flush()
    ran = query(
        url,
        "SELECT COUNT(*) FROM quiv_claims JOIN quiv_jobs ON quiv_jobs.id = quiv_claims.job_id "
        "WHERE quiv_jobs.status = 'completed'",
    )
    assert ran == [(beats(),)]  # every run had a claim of its own: none ran twice


async def test_history_retention_purges_old_jobs_and_claims(store: str) -> None:
    runs.clear()
    async with AsyncQuiv(store=store, history_retention_seconds=0.3) as scheduler:
        await scheduler.add_task("beat", remember, interval=0.1, args=("beat",), task_id="beat")
        await scheduler.add_task("once", remember, interval=LONG, run_once=True, args=("once",))
        await _wait_for_runs("beat", 8)
        await scheduler.pause_task("beat")
        await anyio.sleep(0.5)  # every run so far is now older than the retention
        await scheduler._store.flush()
        with anyio.fail_after(DEADLINE):
            while query(store, "SELECT COUNT(*) FROM quiv_claims") != [(0,)]:  # noqa: ASYNC110 - the database
                await anyio.sleep(0.05)
        assert query(store, "SELECT COUNT(*) FROM quiv_jobs") == [(0,)]
        # The run-once task's row went with its run's history (it kept a restart from
        # running it again: test below); the repeating task's row stays.
        assert query(store, "SELECT id FROM quiv_tasks") == [("beat",)]


async def test_a_run_once_task_added_again_after_its_run_does_not_run_twice(store: str) -> None:
    runs.clear()
    async with AsyncQuiv(store=store) as first:
        await first.add_task(
            "setup", remember, interval=LONG, run_once=True, args=("setup",), task_id="setup"
        )
        await _wait_for_runs("setup", 1)
    async with AsyncQuiv(store=store) as second:  # a restart adds it again, from code
        await second.add_task(
            "setup", remember, interval=LONG, run_once=True, args=("setup",), task_id="setup"
        )
        with anyio.fail_after(DEADLINE):
            while await second.get_all_tasks(include_run_once=True):  # noqa: ASYNC110 - the database
                await anyio.sleep(0.01)
    assert runs == [("setup", None)]


def test_the_sync_facade_shares_a_durable_schedule(store: str) -> None:
    runs.clear()
    with Quiv(store=store) as scheduler:
        assert scheduler.add_task("s", remember, interval=LONG, args=("s",), task_id="s") == "s"
        deadline = time.monotonic() + DEADLINE
        while not (jobs := scheduler.get_all_jobs(status="completed")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    [job] = jobs
    assert job.worker is not None and job.worker.endswith(f"/{os.getpid()}")
    with Quiv(store=store) as again:  # a restart: the stored history is read back
        assert [old.id for old in again.get_all_jobs(status="completed")] == [job.id]
    assert runs == [("s", None)]


def test_a_threads_read_connection_closes_with_the_thread(url: str) -> None:
    """Reads from short-lived threads (sync handlers' workers, say) leave no file open."""
    with Quiv(store=url) as scheduler:
        scheduler.add_task("s", remember, interval=LONG, args=("s",), task_id="s")
        deadline = time.monotonic() + DEADLINE
        while not scheduler.get_all_jobs(status="completed"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        store = scheduler._core._store
        since = datetime.now(timezone.utc) - timedelta(days=1)
        counts = read_from_short_lived_threads(
            _path(url), lambda: len(store.read_jobs(since)), rounds=8
        )
    assert counts == [1] * 160


async def test_a_new_trigger_moves_the_stored_schedule(store: str) -> None:
    runs.clear()
    async with AsyncQuiv(store=store) as scheduler:
        await scheduler.add_task("r", remember, interval=LONG, delay=LONG, args=("r",), task_id="r")
        await scheduler._store.flush()
        await scheduler.update_task("r", interval=0.2)
        await _wait_for_runs("r", 3)  # due at once, then every 0.2 s
        await scheduler.pause_task("r")
        await scheduler._store.flush()
        [(due,)] = query(store, "SELECT next_due FROM quiv_tasks WHERE id = 'r'")
    [(latest,)] = query(store, "SELECT MAX(due) FROM quiv_claims WHERE task_id = 'r'")
    assert isinstance(due, int) and isinstance(latest, int)
    assert due > latest and (due - latest) % 200_000 == 0  # the stored cadence is the new one
