"""Quiv: the blocking facade, from every kind of thread."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

import anyio
import pytest

from _support import SyncRecorder, noop
from quiv import (
    AsyncQuiv,
    Event,
    Job,
    JobStatus,
    Quiv,
    SchedulerClosedError,
    Task,
    TaskNotFoundError,
    TaskStatus,
)


def test_start_is_idempotent_and_shutdown_cleans_up() -> None:
    scheduler = Quiv()
    recorder = SyncRecorder()
    recorder.attach(scheduler)
    task_id = scheduler.add_task("before-start", noop, interval=60)
    assert [t.id for t in scheduler.get_all_tasks()] == [task_id]
    scheduler.start()
    scheduler.startup()
    recorder.wait_for(Event.JOB_COMPLETED)
    assert scheduler._portal is not None
    scheduler._portal.call(scheduler._core._store.flush)
    path = scheduler._core._store.path
    assert path is not None
    assert path.exists()
    scheduler.shutdown()
    scheduler.stop()
    assert not path.parent.exists()
    with pytest.raises(SchedulerClosedError):
        scheduler.add_task("late", noop, interval=1)
    with pytest.raises(SchedulerClosedError):
        scheduler.get_task(task_id)
    with pytest.raises(SchedulerClosedError):
        scheduler.start()


def test_ctrl_c_while_start_waits_closes_the_core_and_leaves_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ctrl-C that lands while ``start()`` waits for the core: the core is closed
    once open, its loop thread ends, and the interrupt reaches the caller."""
    entered = threading.Event()
    enter = AsyncQuiv.__aenter__

    async def slow_enter(self: AsyncQuiv) -> AsyncQuiv:
        entered.set()
        await anyio.sleep(0.5)  # the interrupt lands meanwhile
        return await enter(self)

    monkeypatch.setattr(AsyncQuiv, "__aenter__", slow_enter)
    scheduler = Quiv()
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def interrupt() -> None:
        assert entered.wait(10)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        scheduler.start()
    assert [t.name for t in threading.enumerate() if t.name == "quiv-loop"] == []
    with pytest.raises(SchedulerClosedError):
        scheduler.start()
    scheduler.shutdown()  # nothing left to do, and no error


def test_shutdown_before_start_closes_it() -> None:
    scheduler = Quiv()
    scheduler.shutdown()
    with pytest.raises(SchedulerClosedError):
        scheduler.start()


def test_context_manager_runs_a_job_and_reports_it() -> None:
    with Quiv() as scheduler:
        recorder = SyncRecorder()
        recorder.attach(scheduler)
        task_id = scheduler.add_task("once", noop, interval=1, run_once=True)
        recorder.wait_for(Event.TASK_REMOVED)
        (job,) = scheduler.get_all_jobs()
        assert isinstance(job, Job)
        assert job.task_id == task_id
        assert job.status is JobStatus.COMPLETED
        assert scheduler.get_job(job.id) == job
        with pytest.raises(TaskNotFoundError):
            scheduler.get_task(task_id)
    assert [r[0] for r in recorder.records] == [
        "task_added",
        "job_started",
        "job_completed",
        "task_removed",
    ]
    # Without a host loop, listeners run on the private loop thread.
    assert recorder.threads == {"quiv-loop"}


def test_calls_from_another_thread() -> None:
    with Quiv() as scheduler:
        recorder = SyncRecorder()
        recorder.attach(scheduler)
        results: list[Any] = []

        def worker() -> None:
            task_id = scheduler.add_task("from-thread", noop, interval=60, delay=60)
            scheduler.pause_task(task_id)
            results.append(scheduler.get_task(task_id))

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(5)
        assert not thread.is_alive()
        (task,) = results
        assert isinstance(task, Task)
        assert task.status is TaskStatus.PAUSED


def test_calls_from_handlers_and_listeners_on_the_loop_thread() -> None:
    seen: dict[str, Any] = {}
    done = threading.Event()
    scheduler = Quiv()

    async def async_handler(_job_id: str) -> None:
        # Runs on the private loop thread: the facade must not deadlock here.
        seen["handler_thread"] = threading.current_thread().name
        seen["job"] = scheduler.get_job(_job_id).status
        seen["child"] = scheduler.add_task("child", noop, interval=60, delay=60)

    def listener(event: Event, task: Task, job: Job) -> None:
        seen["listener_thread"] = threading.current_thread().name
        seen["listed"] = [t.task_name for t in scheduler.get_all_tasks()]
        scheduler.remove_task(seen["child"])
        done.set()

    def sync_handler() -> None:
        seen["sync_thread_add"] = scheduler.add_task("grandchild", noop, 60, delay=60)

    with scheduler:
        scheduler.add_listener(Event.JOB_COMPLETED, listener)
        scheduler.add_task("parent", async_handler, interval=60, run_once=True)
        assert done.wait(5)
        scheduler.remove_listener(Event.JOB_COMPLETED, listener)
        recorder = SyncRecorder()
        recorder.attach(scheduler)
        scheduler.add_task("sync", sync_handler, interval=60, run_once=True)
        recorder.wait_for(Event.JOB_COMPLETED)
        names = [t.task_name for t in scheduler.get_all_tasks()]
    assert seen["handler_thread"] == "quiv-loop"
    assert seen["listener_thread"] == "quiv-loop"
    assert seen["job"] is JobStatus.RUNNING
    assert seen["listed"] == ["child"]
    assert names == ["grandchild"]


def test_cancel_a_sync_job_from_the_main_thread() -> None:
    started = threading.Event()

    def poll(_stop_event: threading.Event) -> None:
        started.set()
        while not _stop_event.wait(0.001):
            pass

    with Quiv() as scheduler:
        recorder = SyncRecorder()
        recorder.attach(scheduler)
        scheduler.add_task("poll", poll, interval=60, run_once=True)
        assert started.wait(5)
        (job,) = scheduler.get_all_jobs("running")
        assert scheduler.cancel_job(job.id) is True
        recorder.wait_for(Event.JOB_CANCELLED)
        assert scheduler.get_job(job.id).status is JobStatus.CANCELLED


def test_shutdown_from_inside_a_handler_does_not_deadlock() -> None:
    finished = threading.Event()
    scheduler = Quiv()

    def stopper(_stop_event: threading.Event) -> None:
        scheduler.shutdown()
        assert _stop_event.wait(5)
        finished.set()

    scheduler.start()
    scheduler.add_task("stopper", stopper, interval=60)
    assert finished.wait(5)
    (helper,) = [t for t in threading.enumerate() if t.name == "quiv-shutdown"]
    helper.join(5)
    assert not helper.is_alive()
    with pytest.raises(SchedulerClosedError):
        scheduler.get_all_tasks()


async def test_started_inside_a_host_loop_delivers_callbacks_there() -> None:
    host_thread = threading.get_ident()
    host_loop = asyncio.get_running_loop()
    progress: list[tuple[int, bool, bool]] = []
    finished = anyio.Event()

    def work(_progress_hook: Any) -> None:
        for step in range(20):
            _progress_hook(step=step)

    async def on_progress(step: int) -> None:
        progress.append(
            (step, threading.get_ident() == host_thread, asyncio.get_running_loop() is host_loop)
        )

    async def on_done(event: Event, task: Task, job: Job) -> None:
        finished.set()

    scheduler = Quiv()
    scheduler.start()  # blocks this loop briefly; that is the documented trade-off
    try:
        scheduler.add_listener(Event.JOB_COMPLETED, on_done)
        scheduler.add_task("work", work, 60, run_once=True, progress_callback=on_progress)
        with anyio.fail_after(5):
            await finished.wait()
    finally:
        scheduler.shutdown()
    assert progress == [(step, True, True) for step in range(20)]
