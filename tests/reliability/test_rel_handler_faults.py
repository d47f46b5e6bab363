"""Handlers that misbehave: the scheduler records the job and keeps running.

Each fault is tried with a sync and an async handler on both facades. The
faulty task runs on a short interval next to a healthy one; the test waits for
several runs of each, so it proves both that the fault is recorded with a clear
status and message and that scheduling goes on (the faulty task included).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import pytest
from rel_support import DEADLINE, EventLog, eventually, noop, wait_until

from quiv import (
    AsyncQuiv,
    ConfigurationError,
    Event,
    Job,
    JobStatus,
    Quiv,
    TaskStatus,
)

INTERVAL = 0.02
RUNS = 3

#: The fault, and the ``(error_type, error_message)`` its job must record.
FAULTS: dict[str, tuple[Callable[[], BaseException], tuple[str, str]]] = {
    "Exception": (lambda: ValueError("bad value"), ("ValueError", "bad value")),
    "KeyboardInterrupt": (lambda: KeyboardInterrupt("ctrl-c"), ("KeyboardInterrupt", "ctrl-c")),
    "SystemExit": (lambda: SystemExit(3), ("SystemExit", "3")),
    "CancelledError": (
        lambda: asyncio.CancelledError("raised by user code"),
        ("CancelledError", "raised by user code"),
    ),
}


def raise_sync(kind: str) -> None:
    raise FAULTS[kind][0]()


async def raise_async(kind: str) -> None:
    await anyio.lowlevel.checkpoint()
    raise FAULTS[kind][0]()


async def _coroutine_body() -> None:  # pragma: no cover - must never run
    raise AssertionError("quiv awaited a coroutine returned by a sync handler")


def returns_coroutine() -> object:
    return _coroutine_body()


async def async_generator_handler() -> AsyncIterator[None]:  # pragma: no cover - body never runs
    yield None


HANDLER_MODES = [pytest.param(False, id="sync-handler"), pytest.param(True, id="async-handler")]


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Collect after the test, so resources a crashed scheduler left unclosed are
    reported against this test and not against whichever test happens to run next."""
    yield
    gc.collect()


# -- raising handlers -------------------------------------------------------------


@pytest.mark.parametrize("is_async", HANDLER_MODES)
@pytest.mark.parametrize("kind", list(FAULTS))
async def test_async_core_survives_raising_handler(kind: str, is_async: bool) -> None:
    log = EventLog()
    async with AsyncQuiv(pool_size=2, shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        bad = await scheduler.add_task(
            "bad", raise_async if is_async else raise_sync, interval=INTERVAL, args=(kind,)
        )
        good = await scheduler.add_task("good", noop, interval=INTERVAL)
        await eventually(
            lambda: len(log.finals(bad)) >= RUNS and log.count(Event.JOB_COMPLETED, good) >= RUNS
        )
        expected = FAULTS[kind][1]
        for job in log.finals(bad):
            assert job.status is JobStatus.FAILED
            assert (job.error_type, job.error_message) == expected
        stored = [job for job in await scheduler.get_all_jobs() if job.task_id == bad]
        assert all(j.status in (JobStatus.FAILED, JobStatus.RUNNING) for j in stored)
        assert (await scheduler.get_task(bad)).status in (TaskStatus.ACTIVE, TaskStatus.RUNNING)
        job = await scheduler.get_job(log.finals(bad)[0].id)
        assert (job.error_type, job.error_message) == expected
    log.assert_lifecycles_consistent()


@pytest.mark.parametrize("is_async", HANDLER_MODES)
@pytest.mark.parametrize("kind", list(FAULTS))
def test_sync_facade_survives_raising_handler(kind: str, is_async: bool) -> None:
    log = EventLog()
    with Quiv(pool_size=2, shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        bad = scheduler.add_task(
            "bad", raise_async if is_async else raise_sync, interval=INTERVAL, args=(kind,)
        )
        good = scheduler.add_task("good", noop, interval=INTERVAL)
        wait_until(
            lambda: len(log.finals(bad)) >= RUNS and log.count(Event.JOB_COMPLETED, good) >= RUNS,
            what="faulty and healthy tasks to run repeatedly",
        )
        expected = FAULTS[kind][1]
        for job in log.finals(bad):
            assert job.status is JobStatus.FAILED
            assert (job.error_type, job.error_message) == expected
        assert scheduler.get_task(bad).status in (TaskStatus.ACTIVE, TaskStatus.RUNNING)
        job = scheduler.get_job(log.finals(bad)[0].id)
        assert (job.error_type, job.error_message) == expected
    log.assert_lifecycles_consistent()


# -- a sync function returning a coroutine ------------------------------------------

AWAITABLE_MESSAGE = (
    "the sync handler returned an awaitable; declare it 'async def' "
    "so quiv awaits it on the event loop"
)


async def test_async_core_sync_handler_returning_coroutine_fails_cleanly() -> None:
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        tid = await scheduler.add_task("coro", returns_coroutine, interval=INTERVAL)
        await eventually(lambda: len(log.finals(tid)) >= RUNS)
        assert {(j.status, j.error_type, j.error_message) for j in log.finals(tid)} == {
            (JobStatus.FAILED, "TypeError", AWAITABLE_MESSAGE)
        }
    # The coroutine was closed, not leaked: no "never awaited" RuntimeWarning (an error here).
    gc.collect()


def test_sync_facade_sync_handler_returning_coroutine_fails_cleanly() -> None:
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        tid = scheduler.add_task("coro", returns_coroutine, interval=INTERVAL)
        wait_until(lambda: len(log.finals(tid)) >= RUNS)
        assert {(j.status, j.error_type, j.error_message) for j in log.finals(tid)} == {
            (JobStatus.FAILED, "TypeError", AWAITABLE_MESSAGE)
        }
    gc.collect()


async def test_async_generator_handler_is_not_silently_completed() -> None:
    """An ``async def`` with ``yield`` returns an async generator: its body never runs.

    quiv must either refuse it up front or record the job as failed; marking a
    job whose code never ran as ``completed`` hides the mistake.
    """
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        try:
            tid = await scheduler.add_task("agen", async_generator_handler, interval=60)
        except ConfigurationError:
            return
        await eventually(lambda: len(log.finals(tid)) >= 1)
    job = log.finals(tid)[0]
    assert job.status is JobStatus.FAILED, (
        f"job ended {job.status} although the handler body never ran"
    )


# -- handlers that ignore their stop event at shutdown ----------------------------

GRACE = 0.3
#: What shutdown may take beyond the grace period. A cancellable async handler
#: unwinds within milliseconds of being cut off, and a thread cannot be stopped at
#: all, so nothing is gained by waiting longer: half a second is generous.
OVERRUN = 0.5


#: What the log and the job record say about a job still running when the grace
#: period ended: it did not "ignore" anything (an async handler awaiting a long
#: sleep never looks at its stop event), it was simply still running.
GRACE_ENDED = f"still running when the {GRACE:g}s shutdown grace period ended"


def _assert_abandoned_job(job: Job, is_async: bool) -> None:
    assert job.status is JobStatus.CANCELLED
    expected = (
        f"cancelled by shutdown: {GRACE_ENDED}"
        if is_async
        else f"abandoned by shutdown: {GRACE_ENDED}; its thread was left running"
    )
    assert job.error_message == expected, job


def _assert_abandon_logged(
    caplog: pytest.LogCaptureFixture, task_name: str, job_id: str, is_async: bool
) -> None:
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    fate = "async: cancelled" if is_async else "sync: left running in its thread"
    assert messages == [
        f"quiv shutdown: 1 job(s) {GRACE_ENDED}: {task_name!r} (job {job_id}, {fate})"
    ], messages


@pytest.mark.parametrize("is_async", HANDLER_MODES)
async def test_async_core_shutdown_abandons_handler_ignoring_stop_event(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    started = threading.Event()
    release = threading.Event()

    def stubborn_sync() -> None:
        started.set()
        release.wait(30)

    async def stubborn_async() -> None:
        started.set()
        await anyio.sleep_forever()  # never looks at its stop event

    log = EventLog()
    try:
        async with AsyncQuiv(shutdown_timeout=GRACE) as scheduler:
            await log.attach_async(scheduler)
            tid = await scheduler.add_task(
                "stubborn", stubborn_async if is_async else stubborn_sync, interval=60
            )
            await eventually(started.is_set)
            (job_id,) = log.started_ids()
            began = time.monotonic()
        elapsed = time.monotonic() - began
    finally:
        release.set()
    assert GRACE - 0.05 <= elapsed < GRACE + OVERRUN, f"shutdown took {elapsed:.3f}s"
    _assert_abandon_logged(caplog, "stubborn", job_id, is_async)
    (final,) = log.finals(tid)
    assert final.id == job_id
    _assert_abandoned_job(final, is_async)


@pytest.mark.parametrize("is_async", HANDLER_MODES)
def test_sync_facade_shutdown_abandons_handler_ignoring_stop_event(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    started = threading.Event()
    release = threading.Event()

    def stubborn_sync() -> None:
        started.set()
        release.wait(30)

    async def stubborn_async() -> None:
        started.set()
        await anyio.sleep_forever()

    log = EventLog()
    scheduler = Quiv(shutdown_timeout=GRACE)
    try:
        scheduler.start()
        log.attach_sync(scheduler)
        tid = scheduler.add_task(
            "stubborn", stubborn_async if is_async else stubborn_sync, interval=60
        )
        assert started.wait(DEADLINE)
        wait_until(lambda: len(log.started_ids()) == 1)
        (job_id,) = log.started_ids()
        began = time.monotonic()
        scheduler.shutdown()
        elapsed = time.monotonic() - began
    finally:
        release.set()
        scheduler.shutdown()
    assert GRACE - 0.05 <= elapsed < GRACE + OVERRUN, f"shutdown took {elapsed:.3f}s"
    _assert_abandon_logged(caplog, "stubborn", job_id, is_async)
    (final,) = log.finals(tid)
    _assert_abandoned_job(final, is_async)


# -- an exception that cannot even be described --------------------------------------------


class UnprintableError(Exception):
    """Its ``__str__`` raises: describing the failure must not become a second failure."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


def raise_unprintable() -> None:
    raise UnprintableError()


async def raise_unprintable_async() -> None:
    await anyio.lowlevel.checkpoint()
    raise UnprintableError()


def _assert_unprintable_recorded(jobs: list[Job]) -> None:
    assert jobs
    for job in jobs:
        assert job.status is JobStatus.FAILED
        assert job.error_type == "UnprintableError"
        assert job.error_message == "<str() of the exception failed>"


@pytest.mark.usefixtures("collect_garbage")
@pytest.mark.parametrize("is_async", HANDLER_MODES)
async def test_async_core_survives_exception_with_broken_str(is_async: bool) -> None:
    log = EventLog()
    async with AsyncQuiv(pool_size=1, shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        bad = await scheduler.add_task(
            "unprintable",
            raise_unprintable_async if is_async else raise_unprintable,
            interval=INTERVAL,
        )
        good = await scheduler.add_task("good", noop, interval=INTERVAL)
        await eventually(
            lambda: len(log.finals(bad)) >= RUNS and log.count(Event.JOB_COMPLETED, good) >= RUNS
        )
        finals = log.finals(bad)
    _assert_unprintable_recorded(finals)


@pytest.mark.usefixtures("collect_garbage")
@pytest.mark.parametrize("is_async", HANDLER_MODES)
def test_sync_facade_survives_exception_with_broken_str(is_async: bool) -> None:
    log = EventLog()
    with Quiv(pool_size=1, shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        bad = scheduler.add_task(
            "unprintable",
            raise_unprintable_async if is_async else raise_unprintable,
            interval=INTERVAL,
        )
        good = scheduler.add_task("good", noop, interval=INTERVAL)
        wait_until(
            lambda: len(log.finals(bad)) >= RUNS and log.count(Event.JOB_COMPLETED, good) >= RUNS,
            what="the unprintable failure to be recorded and scheduling to go on",
        )
        finals = log.finals(bad)
    _assert_unprintable_recorded(finals)
