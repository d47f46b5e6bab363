"""Public paths that are easy to leave untested: queued cancellation, back-pressure, failures."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from _support import AsyncRecorder
from quiv import AsyncQuiv, Event, JobStatus, Quiv, SchedulerStateError
from quiv._dispatch import HIGH_WATER, Dispatcher
from quiv._store import Store


async def test_cancel_job_waiting_for_a_pool_slot_ends_it_without_running() -> None:
    gate, ran = threading.Event(), threading.Event()

    def holder() -> None:
        assert gate.wait(5)

    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("holder", holder, interval=3600)
        await recorder.wait_for(Event.JOB_STARTED)
        await scheduler.add_task("queued", ran.set, interval=3600)
        [waiting] = await scheduler.get_all_jobs(status="scheduled")
        assert await scheduler.cancel_job(waiting.id) is True
        cancelled = await scheduler.get_job(waiting.id)
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.error_message == "cancelled before it started"
        assert await scheduler.cancel_job(waiting.id) is False  # already over
        gate.set()
        await recorder.wait_for(Event.JOB_COMPLETED)
        assert [r for r in recorder.records if r[0].startswith("job_")] == [
            ("job_started", "holder", "running"),
            ("job_cancelled", "queued", "cancelled"),
            ("job_completed", "holder", "completed"),
        ]
        assert not ran.is_set()
        assert await scheduler.get_all_jobs(status="running") == []


async def test_a_thread_flooding_progress_is_held_back_and_nothing_is_lost() -> None:
    total = HIGH_WATER * 3
    posted: list[int] = []
    received: list[int] = []
    gate = anyio.Event()

    def producer(_progress_hook: Any) -> None:
        for i in range(total):
            _progress_hook(i=i)
            posted.append(i)

    async def slow_consumer(i: int) -> None:
        if i == 0:
            await gate.wait()  # the consumer stalls on the first payload
        received.append(i)

    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        dispatcher: Dispatcher = scheduler._engine.dispatcher
        await scheduler.add_task(
            "flood", producer, interval=3600, run_once=True, progress_callback=slow_consumer
        )
        try:
            with anyio.fail_after(5):  # until the producer thread is held back
                while dispatcher._waiters == 0:  # noqa: ASYNC110 - a private counter, polled
                    await anyio.sleep(0.001)
            # The high-water mark of undelivered payloads is reached: the thread waits.
            assert len(posted) == HIGH_WATER
            assert dispatcher.backlog() == HIGH_WATER
        finally:
            gate.set()
        await recorder.wait_for(Event.JOB_COMPLETED)
    assert received == list(range(total))
    assert posted == list(range(total))


def test_facade_call_that_would_wait_on_the_loop_thread_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome: list[BaseException | str] = []
    heard = threading.Event()

    async def suspending_get_task(task_id: str) -> Any:
        await asyncio.sleep(0)  # pragma: no cover - never resumed

    with Quiv() as scheduler:

        def listener(event: Event, task: Any, job: Any) -> None:  # runs on the loop thread
            try:
                scheduler.get_task(task.id)
                outcome.append("returned")
            except BaseException as exc:
                outcome.append(exc)
            heard.set()

        scheduler.add_listener(Event.JOB_STARTED, listener)
        monkeypatch.setattr(scheduler._core, "get_task", suspending_get_task)
        scheduler.add_task("t", lambda: None, interval=3600)
        assert heard.wait(5)
    [error] = outcome
    assert isinstance(error, SchedulerStateError)
    assert "own loop thread" in str(error)


class StartFailed(Exception):
    pass


def _fail_to_start(self: Store) -> None:
    raise StartFailed("the store could not start")


async def test_async_start_up_failure_propagates_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Store, "start", _fail_to_start)
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    scheduler = AsyncQuiv()
    with pytest.raises(StartFailed):
        async with scheduler:
            pytest.fail("the body must not run")  # pragma: no cover
    assert asyncio.all_tasks() == tasks_before
    assert set(threading.enumerate()) <= threads_before


def test_sync_start_up_failure_propagates_and_stops_the_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Store, "start", _fail_to_start)
    threads_before = set(threading.enumerate())
    scheduler = Quiv()
    with pytest.raises(StartFailed):
        scheduler.start()
    assert set(threading.enumerate()) <= threads_before  # the private loop thread is gone
    scheduler.shutdown()  # nothing to stop: returns at once
