"""User code that calls back into the scheduler while the scheduler is calling it.

Handlers (in worker threads and on the loop), listeners and progress callbacks
add tasks, cancel their own job, remove their own task and shut the scheduler
down. None of it may deadlock, raise ``SchedulerStateError`` or leave a job
without a final status. Every wait has a deadline, so a deadlock fails the test
instead of hanging it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import anyio.from_thread
import pytest
from rel_support import DEADLINE, EventLog, eventually, noop, stop_requested, wait_until

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


def _is_closed(scheduler: Quiv) -> bool:
    try:
        scheduler.get_all_tasks()
    except SchedulerClosedError:
        return True
    return False


def _only_final(log: EventLog, task_id: str) -> Job:
    finals = log.finals(task_id)
    assert len(finals) == 1, finals
    return finals[0]


def _wait_for_ticks(log: EventLog, ticker: str, runs: int = 5) -> None:
    """Let a fast task run ``runs`` more times: proof that the loop went round."""
    target = log.count(Event.JOB_COMPLETED, ticker) + runs
    wait_until(lambda: log.count(Event.JOB_COMPLETED, ticker) >= target, what="ticker runs")


# -- Quiv: sync handlers in worker threads -------------------------------------------


def test_sync_handler_adds_a_task() -> None:
    child_ran = threading.Event()
    added: list[str] = []
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)

        def parent() -> None:
            added.append(scheduler.add_task("child", child_ran.set, interval=60))

        parent_id = scheduler.add_task("parent", parent, interval=60)
        assert child_ran.wait(DEADLINE)
        wait_until(lambda: len(log.finals(parent_id)) == 1)
        assert _only_final(log, parent_id).status is JobStatus.COMPLETED
        ids = [t.id for t in scheduler.get_all_tasks()]
        assert ids == [parent_id, *added]


def test_sync_handler_cancels_its_own_job() -> None:
    outcome: dict[str, Any] = {}
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)

        def handler(_job_id: str, _stop_event: threading.Event) -> None:
            outcome["cancel_job"] = scheduler.cancel_job(_job_id)
            outcome["stop_seen"] = _stop_event.wait(DEADLINE)

        tid = scheduler.add_task("self-cancel", handler, interval=60)
        wait_until(lambda: len(log.finals(tid)) == 1)
        job = _only_final(log, tid)
    assert outcome == {"cancel_job": True, "stop_seen": True}
    assert job.status is JobStatus.CANCELLED
    assert job.error_message is None


def test_sync_handler_removes_its_own_task() -> None:
    outcome: dict[str, Any] = {}
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        ticker = scheduler.add_task("ticker", noop, interval=0.01)

        def handler(_job_id: str, _stop_event: threading.Event) -> None:
            own = scheduler.get_job(_job_id).task_id
            scheduler.remove_task(own)
            outcome["stop_seen"] = _stop_event.wait(DEADLINE)
            try:
                scheduler.get_task(own)
            except TaskNotFoundError:
                outcome["gone"] = True

        tid = scheduler.add_task("self-remove", handler, interval=0.01)
        wait_until(lambda: len(log.finals(tid)) == 1)
        _wait_for_ticks(log, ticker)
        assert tid not in [t.id for t in scheduler.get_all_tasks(include_run_once=True)]
        assert log.count(Event.JOB_STARTED, tid) == 1, "a removed task ran again"
        assert log.count(Event.TASK_REMOVED, tid) == 1
        job = _only_final(log, tid)
    assert outcome == {"stop_seen": True, "gone": True}
    assert job.status is JobStatus.CANCELLED


@pytest.mark.parametrize("is_async", [False, True], ids=["sync-handler", "async-handler"])
def test_handler_calls_shutdown(is_async: bool) -> None:
    """``shutdown()`` from inside a handler returns at once and the scheduler closes."""
    outcome: dict[str, Any] = {}
    log = EventLog()
    scheduler = Quiv(shutdown_timeout=2)

    def sync_handler(_stop_event: threading.Event) -> None:
        began = time.monotonic()
        scheduler.shutdown()
        outcome["returned_after"] = time.monotonic() - began
        outcome["stop_seen"] = _stop_event.wait(DEADLINE)

    async def async_handler(_stop_event: threading.Event) -> None:
        began = time.monotonic()
        scheduler.shutdown()
        outcome["returned_after"] = time.monotonic() - began
        outcome["stop_seen"] = await stop_requested(_stop_event, within=DEADLINE)

    try:
        scheduler.start()
        log.attach_sync(scheduler)
        tid = scheduler.add_task("closer", async_handler if is_async else sync_handler, 60)
        wait_until(lambda: _is_closed(scheduler), what="the scheduler to close")
    finally:
        began = time.monotonic()
        scheduler.shutdown()  # already closed (or closing): must return promptly
        assert time.monotonic() - began < DEADLINE
    assert outcome["returned_after"] < 0.5
    assert outcome["stop_seen"] is True
    job = _only_final(log, tid)
    assert job.status is JobStatus.CANCELLED
    log.assert_lifecycles_consistent()


# -- Quiv: code running on the private loop thread -------------------------------------


def test_async_handler_uses_sync_facade_on_the_loop_thread() -> None:
    """An async handler runs on the private loop; blocking calls there must not deadlock."""
    outcome: dict[str, Any] = {}
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        other = scheduler.add_task("other", noop, interval=3600, delay=3600)

        async def handler(_job_id: str, _stop_event: threading.Event) -> None:
            outcome["thread"] = threading.current_thread().name
            outcome["child"] = scheduler.add_task("child", noop, interval=3600, delay=3600)
            scheduler.pause_task(other)
            outcome["paused"] = scheduler.get_task(other).status
            scheduler.resume_task(other, delay=3600)
            outcome["resumed"] = scheduler.get_task(other).status
            outcome["tasks"] = len(scheduler.get_all_tasks())
            outcome["own"] = scheduler.get_job(_job_id).status
            outcome["running"] = [j.id for j in scheduler.get_all_jobs("running")]
            outcome["cancel"] = scheduler.cancel_job(_job_id)
            await anyio.lowlevel.checkpoint()

        tid = scheduler.add_task("reentrant", handler, interval=3600)
        wait_until(lambda: len(log.finals(tid)) == 1)
        job = _only_final(log, tid)
        assert job.status is JobStatus.CANCELLED, job.error_message
        assert outcome["child"] in [t.id for t in scheduler.get_all_tasks()]
    assert outcome["paused"] is TaskStatus.PAUSED
    assert outcome["resumed"] is TaskStatus.ACTIVE
    assert outcome["tasks"] == 3  # other, reentrant and child
    assert outcome["own"] is JobStatus.RUNNING
    assert outcome["running"] == [job.id]
    assert outcome["cancel"] is True


def test_listener_uses_sync_facade() -> None:
    """Listeners run on the private loop thread (no host loop) and may call the facade."""
    outcome: dict[str, Any] = {}
    errors: list[BaseException] = []
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)

        def on_completed(event: Event, task: Task, job: Job) -> None:
            try:
                if task.task_name != "target":
                    return
                outcome["thread"] = threading.current_thread().name
                scheduler.pause_task(task.id)
                outcome["status"] = scheduler.get_task(task.id).status
                outcome["job"] = scheduler.get_job(job.id).status
                if "child" not in outcome:
                    outcome["child"] = scheduler.add_task("child", noop, interval=3600, delay=60)
            except BaseException as exc:
                errors.append(exc)

        async def on_added(event: Event, task: Task) -> None:
            try:
                outcome.setdefault("added", []).append(len(scheduler.get_all_tasks()))
            except BaseException as exc:
                errors.append(exc)

        scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        scheduler.add_listener(Event.TASK_ADDED, on_added)
        tid = scheduler.add_task("target", noop, interval=0.02)
        wait_until(lambda: "status" in outcome and scheduler.get_task(tid).status == "paused")
        wait_until(lambda: len(outcome.get("added", [])) == 2)
    assert errors == []
    assert outcome["thread"] == "quiv-loop"
    assert outcome["status"] is TaskStatus.PAUSED
    assert outcome["job"] is JobStatus.COMPLETED


def test_progress_callback_uses_sync_facade() -> None:
    outcome: dict[str, Any] = {}
    errors: list[BaseException] = []
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)

        def on_progress(task_id: str, step: int) -> None:
            try:
                outcome.setdefault("statuses", []).append(scheduler.get_task(task_id).status)
                if step == 2:
                    scheduler.remove_task(task_id)
            except BaseException as exc:
                errors.append(exc)

        def handler(_job_id: str, _progress_hook: Any, _stop_event: threading.Event) -> None:
            own = scheduler.get_job(_job_id).task_id
            for step in (1, 2):
                _progress_hook(task_id=own, step=step)
            outcome["stop_seen"] = _stop_event.wait(DEADLINE)

        tid = scheduler.add_task("progress", handler, interval=60, progress_callback=on_progress)
        wait_until(lambda: len(log.finals(tid)) == 1)
    assert errors == []
    assert outcome["statuses"] == [TaskStatus.RUNNING, TaskStatus.RUNNING]
    assert outcome["stop_seen"] is True
    assert _only_final(log, tid).status is JobStatus.CANCELLED


def test_listener_calls_shutdown() -> None:
    log = EventLog()
    scheduler = Quiv(shutdown_timeout=1)
    returned_after: list[float] = []

    def on_started(event: Event, task: Task, job: Job) -> None:
        began = time.monotonic()
        scheduler.shutdown()
        returned_after.append(time.monotonic() - began)

    try:
        scheduler.start()
        log.attach_sync(scheduler)
        scheduler.add_listener(Event.JOB_STARTED, on_started)
        scheduler.add_task("cooperative", lambda _stop_event: _stop_event.wait(DEADLINE), 60)
        wait_until(lambda: _is_closed(scheduler), what="the scheduler to close")
    finally:
        scheduler.shutdown()
    assert len(returned_after) == 1 and returned_after[0] < 0.5
    log.assert_lifecycles_consistent()


# -- AsyncQuiv ------------------------------------------------------------------------


async def test_async_handler_adds_cancels_and_removes() -> None:
    outcome: dict[str, Any] = {}
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        ticker = await scheduler.add_task("ticker", noop, interval=0.01)

        async def handler(_job_id: str, _stop_event: threading.Event) -> None:
            own = (await scheduler.get_job(_job_id)).task_id
            outcome["child"] = await scheduler.add_task("child", noop, interval=3600, delay=60)
            outcome["cancel"] = await scheduler.cancel_job(_job_id)
            await scheduler.remove_task(own)
            outcome["stop_seen"] = _stop_event.is_set()

        tid = await scheduler.add_task("reentrant", handler, interval=0.01)
        await eventually(lambda: len(log.finals(tid)) == 1)
        target = log.count(Event.JOB_COMPLETED, ticker) + 5
        await eventually(lambda: log.count(Event.JOB_COMPLETED, ticker) >= target)
        remaining = [t.id for t in await scheduler.get_all_tasks(include_run_once=True)]
    assert remaining == [ticker, outcome["child"]]
    assert outcome["cancel"] is True and outcome["stop_seen"] is True
    assert log.count(Event.JOB_STARTED, tid) == 1
    assert _only_final(log, tid).status is JobStatus.CANCELLED


async def test_sync_handler_reaches_async_core_through_from_thread() -> None:
    """A sync handler runs in an anyio worker thread, so ``anyio.from_thread`` works."""
    outcome: dict[str, Any] = {}
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)

        def handler(_job_id: str, _stop_event: threading.Event) -> None:
            outcome["child"] = anyio.from_thread.run(scheduler.add_task, "child", noop, 3600, 60)
            outcome["cancel"] = anyio.from_thread.run(scheduler.cancel_job, _job_id)
            outcome["stop_seen"] = _stop_event.wait(DEADLINE)

        tid = await scheduler.add_task("threaded", handler, interval=3600)
        await eventually(lambda: len(log.finals(tid)) == 1)
        ids = [t.id for t in await scheduler.get_all_tasks()]
    assert ids == [tid, outcome["child"]]
    assert outcome["cancel"] is True and outcome["stop_seen"] is True
    assert _only_final(log, tid).status is JobStatus.CANCELLED


async def test_async_listener_and_progress_callback_call_the_core() -> None:
    outcome: dict[str, Any] = {}
    errors: list[BaseException] = []
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)

        async def on_completed(event: Event, task: Task, job: Job) -> None:
            try:
                await scheduler.pause_task(task.id)
                outcome["paused"] = (await scheduler.get_task(task.id)).status
            except BaseException as exc:
                errors.append(exc)

        async def on_progress(step: int) -> None:
            try:
                outcome.setdefault("running", []).append(
                    len(await scheduler.get_all_jobs("running"))
                )
            except BaseException as exc:
                errors.append(exc)

        async def handler(_progress_hook: Any) -> None:
            for step in range(3):
                _progress_hook(step=step)
                await anyio.lowlevel.checkpoint()

        await scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        tid = await scheduler.add_task("t", handler, interval=0.02, progress_callback=on_progress)
        await eventually(lambda: "paused" in outcome)
        assert (await scheduler.get_task(tid)).status is TaskStatus.PAUSED
    assert errors == []
    assert outcome["paused"] is TaskStatus.PAUSED
    assert len(outcome["running"]) >= 3


# -- Quiv inside a host event loop (the FastAPI arrangement) ---------------------------


async def test_host_loop_listener_uses_sync_facade_and_shutdown_does_not_deadlock() -> None:
    """Started from a coroutine, ``Quiv`` delivers callbacks on that (host) loop.

    A listener there makes blocking facade calls, and ``shutdown()`` is called on
    the host loop while deliveries to it may still be pending: the private loop
    never waits for the host loop, so neither may deadlock.
    """
    outcome: dict[str, Any] = {}
    errors: list[BaseException] = []
    host_thread = threading.current_thread()
    scheduler = Quiv(shutdown_timeout=1)
    scheduler.start()
    try:

        async def on_completed(event: Event, task: Task, job: Job) -> None:
            try:
                outcome["on_host"] = threading.current_thread() is host_thread
                scheduler.pause_task(task.id)
                outcome["status"] = scheduler.get_task(task.id).status
            except BaseException as exc:
                errors.append(exc)

        scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        scheduler.add_task("t", noop, interval=0.01)
        await eventually(lambda: "status" in outcome)
    finally:
        began = time.monotonic()
        scheduler.shutdown()
        took = time.monotonic() - began
    assert errors == []
    assert outcome == {"on_host": True, "status": TaskStatus.PAUSED}
    assert took < 1.0, f"shutdown on the host loop took {took:.2f}s"
