"""History in the store, and the bounds on every buffer between a producer and its consumer.

The limits are patched small here so that each bound is reached with a few
dozen jobs; each test also shows the bound was actually reached (otherwise it
could not fail).
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import anyio
import pytest

from _support import read_from_short_lived_threads
from quiv import (
    AsyncQuiv,
    Event,
    Job,
    JobNotFoundError,
    JobStatus,
    Quiv,
    Task,
    VirtualClock,
    _dispatch,
    _engine,
)
from quiv._store import Store

DEADLINE = 10.0


async def noop() -> None:
    pass


class Ends:
    """Final job snapshots as the listeners saw them, and a way to await a count."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self._changed = anyio.Event()

    async def attach(self, scheduler: AsyncQuiv) -> None:
        for event in (Event.JOB_COMPLETED, Event.JOB_FAILED, Event.JOB_CANCELLED):
            await scheduler.add_listener(event, self.on_end)

    def on_end(self, event: Event, task: Task, job: Job) -> None:
        self.jobs.append(job)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(DEADLINE):
            while len(self.jobs) < count:
                await self._changed.wait()


async def _flushed(scheduler: AsyncQuiv) -> None:
    # Twice: a change noted while the first batch was written is in the second.
    await scheduler._store.flush()
    await scheduler._store.flush()


# -- the history lives in the store -----------------------------------------------------


async def test_finished_jobs_leave_memory_once_stored_and_reads_still_see_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_engine, "HISTORY_WINDOW", 3)
    ends = Ends()
    release = anyio.Event()

    async def long_running() -> None:
        await release.wait()

    async def failing() -> None:
        raise ValueError("boom")

    async with AsyncQuiv(pool_size=2, shutdown_timeout=1) as scheduler:
        await ends.attach(scheduler)
        registry = scheduler._engine.registry
        # Created first, still running while twelve later jobs end and are stored.
        await scheduler.add_task("long", long_running, interval=3600, run_once=True)
        for i in range(12):
            await scheduler.add_task(f"j{i}", failing if i == 4 else noop, 3600, run_once=True)
            await ends.wait_for(i + 1)  # one after the other: creation order is end order
        await _flushed(scheduler)
        # Memory holds the live job and the last three finished ones; the rest is stored.
        assert len(registry.jobs) == 1 + 3
        assert len(registry.stored_ends) >= 1
        [live] = await scheduler.get_all_jobs("running")
        assert live.task_name == "long"
        first = ends.jobs[0]
        assert await scheduler.get_job(first.id) == first  # the very same model, from the store
        everything = await scheduler.get_all_jobs()
        assert [job.task_name for job in everything] == ["long", *(f"j{i}" for i in range(12))]
        assert everything[1:] == ends.jobs
        assert await scheduler.get_all_jobs("failed") == [ends.jobs[4]]
        completed = await scheduler.get_all_jobs("completed")
        assert completed == [job for i, job in enumerate(ends.jobs) if i != 4]
        # The long job ends: its newer state in memory wins over its stored "running" row.
        release.set()
        await ends.wait_for(13)
        assert await scheduler.get_all_jobs("running") == []
        everything = await scheduler.get_all_jobs()
        assert everything[0].task_name == "long"
        assert everything[0].status is JobStatus.COMPLETED
        assert (await scheduler.get_all_jobs("completed"))[0] == everything[0]
        with pytest.raises(JobNotFoundError):
            await scheduler.get_job("no-such-job")


async def test_filters_and_paging_see_the_history_held_by_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_engine, "HISTORY_WINDOW", 10**6)  # all in memory, at first
    ends = Ends()

    async def failing() -> None:
        raise ValueError("boom")

    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        await ends.attach(scheduler)
        odd = await scheduler.add_task("odd", failing, interval=0.001)
        even = await scheduler.add_task("even", noop, interval=0.001)
        await ends.wait_for(16)
        await scheduler.pause_task(odd)
        await scheduler.pause_task(even)
        engine = scheduler._engine
        with anyio.fail_after(DEADLINE):
            while engine.registry.running or engine.registry.ready:  # noqa: ASYNC110
                await anyio.sleep(0.001)  # a run under way ends
        await _flushed(scheduler)
        expected = await scheduler.get_all_jobs()  # from memory alone, as before
        assert len(expected) >= 16 and not engine.registry.stored_ends
        # Now memory keeps three of them: the others are read back from the store.
        monkeypatch.setattr(_engine, "HISTORY_WINDOW", 3)
        engine._rows_committed([])
        assert len(engine.registry.jobs) == 3 and engine.registry.stored_ends
        assert await scheduler.get_all_jobs() == expected
        middle = expected[len(expected) // 2].started_at
        queries: list[dict[str, Any]] = [
            {"status": "failed"},
            {"task_id": even},
            {"since": middle},
            {"until": middle},
            {"limit": 4, "offset": 3},
            {"newest_first": True, "limit": 5},
            {"status": "completed", "task_id": even, "newest_first": True, "offset": 1},
        ]
        for query in queries:
            wanted = [
                job
                for job in expected
                if job.status.value == query.get("status", job.status.value)
                and job.task_id == query.get("task_id", job.task_id)
                and job.started_at >= query.get("since", job.started_at)
                and ("until" not in query or job.started_at < query["until"])
            ]
            if query.get("newest_first"):
                wanted.reverse()
            offset = query.get("offset", 0)
            stop = None if "limit" not in query else offset + query["limit"]
            assert await scheduler.get_all_jobs(**query) == wanted[offset:stop], query
        # Waiting for a job that memory has let go returns at once, from the store.
        first = expected[0]
        assert first.id not in scheduler._engine.registry.jobs
        assert await scheduler.wait_for_job(first.id, timeout=1) == first


async def test_purge_removes_history_held_only_by_the_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_engine, "HISTORY_WINDOW", 2)
    clock = VirtualClock()
    ends = Ends()
    async with AsyncQuiv(history_retention_seconds=10, clock=clock) as scheduler:
        await ends.attach(scheduler)
        for i in range(6):
            await scheduler.add_task(f"j{i}", noop, 3600, run_once=True)
            await ends.wait_for(i + 1)
        await _flushed(scheduler)
        registry = scheduler._engine.registry
        assert len(registry.jobs) == 2 and registry.stored_ends
        first = ends.jobs[0]
        clock.advance(9.8)
        await anyio.wait_all_tasks_blocked()
        assert await scheduler.get_job(first.id) == first
        assert len(await scheduler.get_all_jobs()) == 6
        clock.advance(0.4)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(JobNotFoundError):
            await scheduler.get_job(first.id)
        assert await scheduler.get_all_jobs() == []
        assert not registry.stored_ends
        assert await scheduler._store.read_rows("jobs") == []


def test_history_reads_from_the_loop_thread_and_other_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener (on the scheduler's own loop thread) and plain threads read stored history."""
    monkeypatch.setattr(_engine, "HISTORY_WINDOW", 2)
    ended: list[Job] = []
    seen_in_listener: list[object] = []
    heard = threading.Event()
    with Quiv(pool_size=1) as scheduler:

        def on_end(event: Event, task: Task, job: Job) -> None:
            ended.append(job)
            if task.task_name == "last":
                try:
                    seen_in_listener.append(scheduler.get_job(ended[0].id))
                    seen_in_listener.append(len(scheduler.get_all_jobs()))
                except BaseException as exc:  # reported below
                    seen_in_listener.append(exc)
                heard.set()

        scheduler.add_listener(Event.JOB_COMPLETED, on_end)
        for i in range(8):
            scheduler.add_task(f"j{i}", lambda: None, 3600, run_once=True)
        store = scheduler._core._store
        deadline = time.monotonic() + DEADLINE
        while not (len(ended) == 8 and scheduler._core._engine.registry.stored_ends):
            assert time.monotonic() < deadline, "the first jobs were never stored"
            time.sleep(0.01)
        scheduler.add_task("last", lambda: None, 3600, run_once=True)
        assert heard.wait(DEADLINE)
        assert seen_in_listener == [ended[0], 9]
        # The store's reads themselves are safe from any thread at once.
        assert scheduler._portal is not None
        scheduler._portal.call(store.flush)
        scheduler._portal.call(store.flush)
        since = ended[0].started_at.replace(year=2000)
        path = store.path
        assert path is not None
        results = read_from_short_lived_threads(path, lambda: len(store.read_jobs(since)), 3)
        assert results == [9] * 60
        # Each thread's connection is closed when the thread ends (its state is freed
        # just after join() returns).
        deadline = time.monotonic() + DEADLINE
        while len(store._readers._open) > 1:  # the loop thread's own
            assert time.monotonic() < deadline, "connections of ended threads left open"
            gc.collect()
            time.sleep(0.01)


# -- the write-behind queue holds back new jobs, never the loop --------------------------


async def test_a_slow_writer_holds_new_jobs_back_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    high = 20
    pool = 4
    total = 200
    monkeypatch.setattr(_engine, "UNWRITTEN_HIGH", high)
    monkeypatch.setattr(_engine, "UNWRITTEN_LOW", high // 2)
    upsert = Store._upsert

    async def slow_upsert(self: Store, *args: Any) -> Any:
        await anyio.sleep(0.02)  # a disk much slower than the jobs
        return await upsert(self, *args)

    monkeypatch.setattr(Store, "_upsert", slow_upsert)
    ends = Ends()
    unwritten: list[int] = []
    async with AsyncQuiv(pool_size=pool, shutdown_timeout=1) as scheduler:
        engine = scheduler._engine

        def on_end(event: Event, task: Task, job: Job) -> None:
            unwritten.append(engine._unwritten)

        await scheduler.add_listener(Event.JOB_COMPLETED, on_end)
        await ends.attach(scheduler)
        for i in range(total):
            await scheduler.add_task(f"j{i}", noop, 3600, run_once=True)
        await ends.wait_for(total)
        await _flushed(scheduler)
        rows = await scheduler._store.read_rows("jobs")
        assert engine._unwritten == 0
    assert high <= max(unwritten) <= high + pool  # reached, and held there
    assert [job.status for job in ends.jobs] == [JobStatus.COMPLETED] * total
    assert len(rows) == total and {row["status"] for row in rows} == {"completed"}


# -- callbacks: the dispatcher's backlog and the host loop ------------------------------


async def test_a_slow_listener_holds_new_jobs_back_and_misses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    high = 16
    pool = 4
    total = 100
    monkeypatch.setattr(_engine, "EVENTS_HIGH", high)
    monkeypatch.setattr(_engine, "EVENTS_LOW", high // 2)
    heard: list[tuple[str, str]] = []
    pending: list[int] = []
    done = anyio.Event()
    async with AsyncQuiv(pool_size=pool, shutdown_timeout=1) as scheduler:
        dispatcher = scheduler._engine.dispatcher

        async def slow_listener(event: Event, task: Task, job: Job) -> None:
            pending.append(dispatcher.pending)
            heard.append((event.value, task.task_name))
            await anyio.sleep(0.001)
            if len(heard) == 2 * total:
                done.set()

        for event in (Event.JOB_STARTED, Event.JOB_COMPLETED):
            await scheduler.add_listener(event, slow_listener)
        for i in range(total):
            await scheduler.add_task(f"j{i}", noop, 3600, run_once=True)
        with anyio.fail_after(DEADLINE):
            await done.wait()
    # Each job's start, then its end; every one of them heard.
    for i in range(total):
        started = heard.index(("job_started", f"j{i}"))
        assert heard.index(("job_completed", f"j{i}")) > started
    assert len(heard) == 2 * total
    # Ends of the jobs already running when the hold began may still come in.
    assert high <= max(pending) <= high + 2 * pool


def _outstanding(dispatcher: _dispatch.Dispatcher) -> int:
    sink = dispatcher._sink
    return -1 if sink is None else sink.outstanding


def _host_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="host-loop", daemon=True)
    thread.start()
    return loop, thread


async def _others_done() -> None:
    current = asyncio.current_task()
    await asyncio.gather(*(task for task in asyncio.all_tasks() if task is not current))


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Stop the host loop once it has run everything it was handed."""
    asyncio.run_coroutine_threadsafe(_others_done(), loop).result(DEADLINE)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(DEADLINE)
    loop.close()


def test_a_blocked_host_loop_holds_a_progress_flood_back_and_loses_nothing() -> None:
    total = 4 * _dispatch.SINK_HIGH
    posted: list[int] = []
    received: list[int] = []
    outstanding: list[int] = []
    gate = threading.Event()
    loop, thread = _host_loop()
    loop.call_soon_threadsafe(gate.wait, DEADLINE)  # the host loop is busy elsewhere
    try:
        with Quiv(main_loop=loop, shutdown_timeout=1) as scheduler:
            dispatcher = scheduler._core._engine.dispatcher

            def producer(_progress_hook: Any) -> None:
                for i in range(total):
                    _progress_hook(i=i)
                    posted.append(i)

            def consumer(i: int) -> None:
                outstanding.append(_outstanding(dispatcher))
                received.append(i)

            scheduler.add_task("flood", producer, 3600, run_once=True, progress_callback=consumer)
            deadline = time.monotonic() + DEADLINE
            # Until the host loop is SINK_HIGH behind and the producer thread held back.
            while not (dispatcher._waiters and _outstanding(dispatcher) >= _dispatch.SINK_HIGH):
                assert time.monotonic() < deadline, f"never held back after {len(posted)}"
                time.sleep(0.001)
            time.sleep(0.1)  # the dispatcher's last hand-over lets one more burst in
            held_at = len(posted)
            time.sleep(0.1)
            assert len(posted) == held_at  # then it stays held while the host loop is blocked
            gate.set()
            deadline = time.monotonic() + DEADLINE
            while len(received) < total:
                assert time.monotonic() < deadline, f"{len(received)} of {total} received"
                time.sleep(0.01)
    finally:
        gate.set()
        _stop(loop, thread)
    # Held once the host loop had SINK_HIGH to run and the dispatcher its own backlog.
    assert _dispatch.SINK_HIGH <= held_at <= _dispatch.SINK_HIGH + 3 * _dispatch.HIGH_WATER
    assert max(outstanding) <= _dispatch.SINK_HIGH + 2 * _dispatch.HIGH_WATER
    assert received == list(range(total)) and posted == received


def test_shutdown_on_a_blocked_host_loop_does_not_wait_for_itself() -> None:
    """The host loop calls shutdown() while the dispatcher waits for that very loop."""
    total = 4 * _dispatch.SINK_HIGH
    received: list[int] = []
    gate, shut = threading.Event(), threading.Event()
    took: list[float] = []
    ended: list[Job] = []
    loop, thread = _host_loop()
    scheduler = Quiv(main_loop=loop, shutdown_timeout=10)

    def shutdown_on_host_loop() -> None:
        gate.wait(DEADLINE)
        start = time.monotonic()
        scheduler.shutdown()  # blocks the host loop until the scheduler is closed
        took.append(time.monotonic() - start)
        shut.set()

    def producer(_progress_hook: Any) -> None:
        for i in range(total):
            _progress_hook(i=i)

    try:
        scheduler.start()
        dispatcher = scheduler._core._engine.dispatcher
        for event in (Event.JOB_COMPLETED, Event.JOB_CANCELLED):
            scheduler.add_listener(event, lambda e, t, j: ended.append(j))
        loop.call_soon_threadsafe(shutdown_on_host_loop)
        scheduler.add_task(
            "flood", producer, 3600, run_once=True, progress_callback=lambda i: received.append(i)
        )
        deadline = time.monotonic() + DEADLINE
        # Until the dispatcher waits for the host loop and the producer for the dispatcher.
        while not (dispatcher._waiters and _outstanding(dispatcher) >= _dispatch.SINK_HIGH):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        gate.set()
        assert shut.wait(3 * DEADLINE)
        deadline = time.monotonic() + DEADLINE
        assert took[0] < 5, f"shutdown waited {took[0]:.1f}s for the loop it blocked"
        while len(received) < total or not ended:  # the host loop runs what it was handed
            assert time.monotonic() < deadline, f"{len(received)} of {total} received"
            time.sleep(0.01)
    finally:
        gate.set()
        _stop(loop, thread)
    assert took[0] < 5, f"shutdown waited {took[0]:.1f}s for the loop it blocked"
    # It returned on its own (after shutdown set its stop event), not abandoned.
    assert [(job.status, job.error_message) for job in ended] == [(JobStatus.CANCELLED, None)]
    assert received == list(range(total))


# -- the database layer loads when first needed -------------------------------------------


def test_import_and_idle_lifecycle_do_not_load_the_database_layer() -> None:
    script = textwrap.dedent(
        """
        import sys
        import anyio
        import quiv

        LAYER = ("sqlalchemy", "sqlmodel", "aiosqlite")

        def loaded():
            return sorted({m.split(".")[0] for m in sys.modules if m.startswith(LAYER)})

        assert loaded() == [], loaded()

        async def main():
            async with quiv.AsyncQuiv():
                pass
            assert loaded() == [], loaded()
            async with quiv.AsyncQuiv() as scheduler:
                await scheduler.add_task("t", lambda: None, 3600, delay=3600)
                await scheduler._store.flush()
                assert scheduler._store.path.exists()
            assert loaded() == ["aiosqlite", "sqlalchemy", "sqlmodel"], loaded()

        anyio.run(main)
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


async def test_closing_while_the_database_layer_loads_creates_no_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scheduler that closes before its first write need not create a database at all."""
    from quiv import _store

    loading = threading.Event()
    finish = threading.Event()

    def slow_load() -> None:
        loading.set()
        finish.wait(DEADLINE)

    monkeypatch.setattr(_store, "_load_tables", slow_load)
    try:
        with anyio.fail_after(DEADLINE / 2):
            async with AsyncQuiv() as scheduler:
                await scheduler.add_task("t", noop, 3600, delay=3600)
                while not loading.is_set():  # noqa: ASYNC110 - a thread's event, polled
                    await anyio.sleep(0.001)
                finish.set()  # closing waits for the load; it must not then create a file
        assert scheduler._store.path is None
    finally:
        finish.set()


async def test_tasks_removed_before_their_rows_were_written_leave_nothing_noted() -> None:
    """A task that comes and goes unwritten needs no delete: with job rows always
    waiting (task rows go after them), delete markers would pile up unbounded."""
    async with AsyncQuiv() as scheduler:
        store = scheduler._store
        for i in range(100):
            task_id = await scheduler.add_task(f"t{i}", noop, 3600, delay=3600)
            await scheduler.remove_task(task_id)
        assert store.backlog == 0
        kept = await scheduler.add_task("kept", noop, 3600, delay=3600)
        await store.flush()
        await scheduler.remove_task(kept)  # written: its row must go
        assert store.backlog == 1
        await store.flush()
        assert await store.read_rows("tasks") == []
