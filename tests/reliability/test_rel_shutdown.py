"""Shutting down: with jobs running, twice, from another thread, by cancellation.

After shutdown every call raises ``SchedulerClosedError`` (starting again too),
every job that started has a final event, and nothing is left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from rel_support import DEADLINE, EventLog, eventually, noop, stop_requested, wait_until

from quiv import (
    AsyncQuiv,
    Event,
    JobStatus,
    Quiv,
    SchedulerClosedError,
)


def cooperative_sync(_stop_event: threading.Event) -> None:
    _stop_event.wait(30)


async def cooperative_async(_stop_event: threading.Event) -> None:
    await stop_requested(_stop_event)


def _sync_calls(scheduler: Quiv) -> dict[str, Callable[[], Any]]:
    some_id = "00000000-0000-0000-0000-000000000000"
    return {
        "add_task": lambda: scheduler.add_task("late", noop, interval=1),
        "run_task_immediately": lambda: scheduler.run_task_immediately(some_id),
        "pause_task": lambda: scheduler.pause_task(some_id),
        "resume_task": lambda: scheduler.resume_task(some_id),
        "cancel_job": lambda: scheduler.cancel_job(some_id),
        "remove_task": lambda: scheduler.remove_task(some_id),
        "get_task": lambda: scheduler.get_task(some_id),
        "get_job": lambda: scheduler.get_job(some_id),
        "get_all_tasks": lambda: scheduler.get_all_tasks(),
        "get_all_jobs": lambda: scheduler.get_all_jobs(),
        "add_listener": lambda: scheduler.add_listener(Event.JOB_STARTED, noop),
        "remove_listener": lambda: scheduler.remove_listener(Event.JOB_STARTED, noop),
        "start": scheduler.start,
        "startup": scheduler.startup,
    }


def _assert_sync_facade_closed(scheduler: Quiv) -> None:
    for name, call in _sync_calls(scheduler).items():
        try:
            call()
        except SchedulerClosedError:
            continue
        pytest.fail(f"{name} did not raise SchedulerClosedError after shutdown")


async def _assert_async_core_closed(scheduler: AsyncQuiv) -> None:
    some_id = "00000000-0000-0000-0000-000000000000"
    calls: dict[str, Callable[[], Any]] = {
        "add_task": lambda: scheduler.add_task("late", noop, interval=1),
        "run_task_immediately": lambda: scheduler.run_task_immediately(some_id),
        "pause_task": lambda: scheduler.pause_task(some_id),
        "resume_task": lambda: scheduler.resume_task(some_id),
        "cancel_job": lambda: scheduler.cancel_job(some_id),
        "remove_task": lambda: scheduler.remove_task(some_id),
        "get_task": lambda: scheduler.get_task(some_id),
        "get_job": lambda: scheduler.get_job(some_id),
        "get_all_tasks": lambda: scheduler.get_all_tasks(),
        "get_all_jobs": lambda: scheduler.get_all_jobs(),
        "add_listener": lambda: scheduler.add_listener(Event.JOB_STARTED, noop),
        "remove_listener": lambda: scheduler.remove_listener(Event.JOB_STARTED, noop),
    }
    for name, call in calls.items():
        try:
            await call()
        except SchedulerClosedError:
            continue
        pytest.fail(f"{name} did not raise SchedulerClosedError after shutdown")
    with pytest.raises(SchedulerClosedError):
        await scheduler.__aenter__()


# -- while jobs run ---------------------------------------------------------------------


async def test_async_core_shutdown_while_jobs_run() -> None:
    log = EventLog()
    async with AsyncQuiv(pool_size=3, shutdown_timeout=DEADLINE) as scheduler:
        await log.attach_async(scheduler)
        running = [
            await scheduler.add_task("sync", cooperative_sync, interval=60),
            await scheduler.add_task("async", cooperative_async, interval=60),
            await scheduler.add_task("sync-2", cooperative_sync, interval=60),
        ]
        queued = await scheduler.add_task("queued", noop, interval=60)
        await eventually(lambda: log.count(Event.JOB_STARTED) == 3)
        assert [j.status for j in await scheduler.get_all_jobs("scheduled")] == ["scheduled"]
        began = time.monotonic()
    took = time.monotonic() - began
    assert took < 1.0, f"cooperative jobs took {took:.2f}s to stop"
    for tid in running:
        (job,) = log.finals(tid)
        assert (job.status, job.error_message) == (JobStatus.CANCELLED, None)
    (never_started,) = log.finals(queued)
    assert never_started.status is JobStatus.CANCELLED
    assert never_started.error_message
    assert log.count(Event.JOB_STARTED, queued) == 0
    log.assert_lifecycles_consistent()
    await _assert_async_core_closed(scheduler)


def test_sync_facade_shutdown_while_jobs_run() -> None:
    log = EventLog()
    scheduler = Quiv(pool_size=3, shutdown_timeout=DEADLINE)
    with scheduler:
        log.attach_sync(scheduler)
        running = [
            scheduler.add_task("sync", cooperative_sync, interval=60),
            scheduler.add_task("async", cooperative_async, interval=60),
            scheduler.add_task("sync-2", cooperative_sync, interval=60),
        ]
        queued = scheduler.add_task("queued", noop, interval=60)
        wait_until(lambda: log.count(Event.JOB_STARTED) == 3)
        began = time.monotonic()
    took = time.monotonic() - began
    assert took < 1.0, f"cooperative jobs took {took:.2f}s to stop"
    for tid in running:
        (job,) = log.finals(tid)
        assert (job.status, job.error_message) == (JobStatus.CANCELLED, None)
    (never_started,) = log.finals(queued)
    assert never_started.status is JobStatus.CANCELLED
    log.assert_lifecycles_consistent()
    _assert_sync_facade_closed(scheduler)


# -- twice, and after ------------------------------------------------------------------


async def test_async_core_exit_twice_then_reenter() -> None:
    scheduler = AsyncQuiv(shutdown_timeout=1)
    async with scheduler:
        await scheduler.add_task("t", noop, interval=0.01)
    assert await scheduler.__aexit__(None, None, None) is None
    await _assert_async_core_closed(scheduler)


def test_sync_facade_shutdown_twice_then_start() -> None:
    scheduler = Quiv(shutdown_timeout=1)
    scheduler.start()
    scheduler.start()  # a second start does nothing
    scheduler.add_task("t", noop, interval=0.01)
    scheduler.shutdown()
    scheduler.shutdown()
    scheduler.stop()
    _assert_sync_facade_closed(scheduler)


def test_sync_facade_shutdown_before_start() -> None:
    scheduler = Quiv()
    tid = scheduler.add_task("never-runs", noop, interval=1)  # allowed before start
    assert [t.id for t in scheduler.get_all_tasks()] == [tid]
    scheduler.shutdown()
    _assert_sync_facade_closed(scheduler)


async def test_async_core_closed_before_entering() -> None:
    """A Quiv facade that is shut down unopened closes its core; the core refuses entry."""
    facade = Quiv()
    facade.shutdown()
    with pytest.raises(SchedulerClosedError):
        await facade._core.__aenter__()


# -- from other threads --------------------------------------------------------------------


def _baseline_threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.mark.parametrize("starter", ["main", "thread"])
def test_sync_facade_shutdown_from_another_thread(starter: str) -> None:
    baseline = _baseline_threads()
    log = EventLog()
    scheduler = Quiv(pool_size=2, shutdown_timeout=DEADLINE)
    errors: list[BaseException] = []

    def guarded(action: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                action()
            except BaseException as exc:
                errors.append(exc)

        return run

    def start() -> None:
        scheduler.start()
        log.attach_sync(scheduler)
        scheduler.add_task("coop", cooperative_sync, interval=60)
        scheduler.add_task("fast", noop, interval=0.01)

    if starter == "main":
        start()
    else:
        starting = threading.Thread(target=guarded(start))
        starting.start()
        starting.join(DEADLINE)
        assert not starting.is_alive()
    wait_until(lambda: log.count(Event.JOB_COMPLETED) >= 3 and log.count(Event.JOB_STARTED) >= 4)
    if starter == "main":
        stopping = threading.Thread(target=guarded(scheduler.shutdown))
        stopping.start()
        stopping.join(DEADLINE)
        assert not stopping.is_alive(), "shutdown from another thread hung"
    else:
        scheduler.shutdown()
    assert errors == []
    _assert_sync_facade_closed(scheduler)
    log.assert_lifecycles_consistent()
    wait_until(
        lambda: _baseline_threads() <= baseline,
        what=f"threads to end: {_baseline_threads() - baseline}",
    )


# -- cancellation of the host, exceptions in the body ----------------------------------------


async def test_async_core_host_cancellation_shuts_down_gracefully() -> None:
    log = EventLog()
    scheduler = AsyncQuiv(shutdown_timeout=DEADLINE)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            await group.start(scheduler.serve)
            await log.attach_async(scheduler)
            tid = await scheduler.add_task("coop", cooperative_async, interval=60)
            await eventually(lambda: log.count(Event.JOB_STARTED, tid) == 1)
            group.cancel_scope.cancel()
    (job,) = log.finals(tid)
    assert job.status is JobStatus.CANCELLED
    await _assert_async_core_closed(scheduler)


async def test_async_core_exception_in_body_propagates_unchanged() -> None:
    """``except ValueError`` around ``async with AsyncQuiv()`` must still catch a ValueError."""
    scheduler = AsyncQuiv(shutdown_timeout=1)
    caught: BaseException | None = None
    try:
        async with scheduler:
            await scheduler.add_task("t", cooperative_async, interval=0.01)
            raise ValueError("from the body")
    except BaseException as exc:
        caught = exc
    assert type(caught) is ValueError, f"the body's ValueError came out as {caught!r}"
    await _assert_async_core_closed(scheduler)


def test_sync_facade_exception_in_body_propagates_unchanged() -> None:
    scheduler = Quiv(shutdown_timeout=1)
    caught: BaseException | None = None
    try:
        with scheduler:
            scheduler.add_task("t", cooperative_sync, interval=0.01)
            raise ValueError("from the body")
    except BaseException as exc:
        caught = exc
    assert type(caught) is ValueError, f"the body's ValueError came out as {caught!r}"
    _assert_sync_facade_closed(scheduler)


# -- misuse around the lifecycle -------------------------------------------------------------


async def test_async_core_refuses_nested_entry() -> None:
    from quiv import SchedulerStateError

    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        tid = await scheduler.add_task("t", noop, interval=3600, delay=3600)
        with pytest.raises(SchedulerStateError):
            await scheduler.__aenter__()
        assert [t.id for t in await scheduler.get_all_tasks()] == [tid]  # still running fine


@pytest.mark.parametrize("facade", ["AsyncQuiv", "Quiv"])
async def test_progress_hook_used_after_shutdown_is_harmless(facade: str) -> None:
    """A handler that kept its ``_progress_hook`` and calls it after shutdown: no error."""
    hooks: list[Callable[..., None]] = []
    received: list[int] = []

    def handler(_progress_hook: Callable[..., None]) -> None:
        hooks.append(_progress_hook)

    def on_progress(step: int) -> None:
        received.append(step)

    if facade == "AsyncQuiv":
        async with AsyncQuiv(shutdown_timeout=1) as core:
            await core.add_task("t", handler, 3600, run_once=True, progress_callback=on_progress)
            await eventually(lambda: bool(hooks))
    else:
        with Quiv(shutdown_timeout=1) as sync:
            sync.add_task("t", handler, 3600, run_once=True, progress_callback=on_progress)
            await eventually(lambda: bool(hooks))
    errors: list[BaseException] = []

    def late() -> None:
        try:
            hooks[0](step=2)
        except BaseException as exc:
            errors.append(exc)

    hooks[0](step=1)  # on this (event loop) thread
    thread = threading.Thread(target=late)
    thread.start()
    thread.join(DEADLINE)
    await anyio.lowlevel.checkpoint()
    assert errors == []
    assert received == []  # the scheduler is gone: nothing is delivered any more
