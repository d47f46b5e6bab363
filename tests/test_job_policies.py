"""Job policies (issue 11): retries, timeouts, force cancel, waiting, stats, shutdown(timeout).

Time-driven behaviour runs on a VirtualClock, so backoff waits and timeouts
are exact: nothing is due until the test advances the clock past it.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from _support import FACADES, AsyncRecorder, SyncRecorder, driven
from quiv import (
    AsyncQuiv,
    ConfigurationError,
    Event,
    JobNotFoundError,
    JobStatus,
    Quiv,
    SchedulerClosedError,
    SchedulerStateError,
    TaskNotFoundError,
    TaskStatus,
    VirtualClock,
)
from quiv._jobpolicy import backoff_cap, retry_delay

HOUR = 3600
WITHIN = 5.0


class Flaky:
    """Raises on its first ``failures`` calls, then returns."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ValueError(f"boom {self.calls}")


async def _quiet() -> None:
    """Let the scheduler's loop run whatever it can without time moving."""
    for _ in range(20):
        await anyio.sleep(0.005)


# -- the pure backoff -------------------------------------------------------------


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_cap(n, 1.5, 10.0) for n in (1, 2, 3, 4, 5)] == [1.5, 3.0, 6.0, 10.0, 10.0]
    assert backoff_cap(5000, 1.0, 300.0) == 300.0  # no overflow
    assert backoff_cap(3, 0.0, 300.0) == 0.0
    rng = random.Random(1)
    delays = [retry_delay(3, 2.0, 300.0, rng) for _ in range(500)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert max(delays) > 7.0 and min(delays) < 1.0  # full jitter spreads over the window


# -- retries ----------------------------------------------------------------------


@pytest.mark.parametrize("facade", FACADES)
async def test_fails_twice_then_succeeds_three_records_and_exact_backoff(facade: str) -> None:
    flaky = Flaky(2)
    async with driven(facade, clock=VirtualClock()) as scheduler:
        scheduler.engine._rng = random.Random(7)
        twin = random.Random(7)
        waits = [retry_delay(1, 10.0, 300.0, twin), retry_delay(2, 10.0, 300.0, twin)]
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task(
            "flaky", flaky, interval=HOUR, max_retries=2, retry_backoff=10
        )
        elapsed = 0.0
        for attempt, wait in enumerate(waits, start=1):
            await recorder.wait_for(Event.JOB_RETRYING, attempt)
            failed, retry = (await scheduler.get_all_jobs(task_id=tid))[-2:]
            assert (retry.status, retry.attempt) == (JobStatus.SCHEDULED, attempt + 1)
            assert failed.ended_at is not None
            assert retry.started_at == failed.ended_at + timedelta(seconds=wait)
            assert (await scheduler.stats()).retries_waiting == 1
            await scheduler.advance(wait - 1e-6)  # just short of the backoff: nothing starts
            await _quiet()
            assert recorder.count(Event.JOB_STARTED) == attempt
            await scheduler.advance(1e-6)
            elapsed += wait
            await recorder.wait_for(Event.JOB_STARTED, attempt + 1)
        await recorder.wait_for(Event.JOB_COMPLETED)
        jobs = await scheduler.get_all_jobs(task_id=tid)
    assert recorder.records == [
        ("task_added", "flaky", None),
        ("job_started", "flaky", "running"),
        ("job_failed", "flaky", "failed"),
        ("job_retrying", "flaky", "failed"),
        ("job_started", "flaky", "running"),
        ("job_failed", "flaky", "failed"),
        ("job_retrying", "flaky", "failed"),
        ("job_started", "flaky", "running"),
        ("job_completed", "flaky", "completed"),
    ]
    first = jobs[0]
    assert [(j.attempt, j.retry_of, j.status, j.error_message) for j in jobs] == [
        (1, None, JobStatus.FAILED, "boom 1"),
        (2, first.id, JobStatus.FAILED, "boom 2"),
        (3, first.id, JobStatus.COMPLETED, None),
    ]
    assert jobs[2].started_at - jobs[0].started_at == timedelta(seconds=elapsed)
    retrying = [job for job in recorder.jobs if job.status is JobStatus.FAILED]
    assert [job.id for job in retrying] == [jobs[0].id, jobs[0].id, jobs[1].id, jobs[1].id]


@pytest.mark.parametrize("facade", FACADES)
async def test_retries_exhausted(facade: str) -> None:
    async with driven(facade, clock=VirtualClock()) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task(
            "always", Flaky(99), interval=HOUR, max_retries=1, retry_backoff=0
        )
        await recorder.wait_for(Event.JOB_FAILED, 2)
        stats = await scheduler.stats()
        jobs = await scheduler.get_all_jobs(task_id=tid)
    assert [r[0] for r in recorder.records] == [
        "task_added",
        "job_started",
        "job_failed",
        "job_retrying",
        "job_started",
        "job_failed",
    ]
    assert [(j.attempt, j.status) for j in jobs] == [(1, "failed"), (2, "failed")]
    assert stats.retries_waiting == 0 and stats.jobs_ended[JobStatus.FAILED] == 2


@pytest.mark.parametrize("facade", FACADES)
@pytest.mark.parametrize("raises", [False, True], ids=["returns", "raises-after-stop"])
async def test_a_cancelled_run_is_not_retried(raises: bool, facade: str) -> None:
    started = threading.Event()

    async def stops(_stop_event: threading.Event) -> None:
        started.set()
        await anyio.to_thread.run_sync(_stop_event.wait, WITHIN)
        if raises:
            raise RuntimeError("stopping")

    async with driven(facade) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task("c", stops, interval=HOUR, max_retries=3, retry_backoff=0)
        await anyio.to_thread.run_sync(started.wait, WITHIN)
        (job,) = await scheduler.get_all_jobs(task_id=tid)
        assert await scheduler.cancel_job(job.id)
        ended = await scheduler.wait_for_job(job.id, timeout=WITHIN)
        await _quiet()
        assert len(await scheduler.get_all_jobs(task_id=tid)) == 1
    assert ended.status is (JobStatus.FAILED if raises else JobStatus.CANCELLED)
    assert recorder.count(Event.JOB_RETRYING) == 0


@pytest.mark.parametrize("facade", FACADES)
async def test_a_retry_waits_with_its_paused_task_and_runs_on_resume(facade: str) -> None:
    clock = VirtualClock()
    async with driven(facade, clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task("p", Flaky(1), interval=HOUR, max_retries=1, retry_backoff=4)
        await recorder.wait_for(Event.JOB_RETRYING)
        await scheduler.pause_task(tid)
        await scheduler.advance(10)  # past any backoff: the retry still waits with its task
        await _quiet()
        assert recorder.count(Event.JOB_STARTED) == 1
        assert (await scheduler.stats()).retries_waiting == 1
        await scheduler.resume_task(tid, 1800)  # the next normal run is far off
        await recorder.wait_for(Event.JOB_COMPLETED)
        jobs = await scheduler.get_all_jobs(task_id=tid)
    assert [(j.attempt, j.status) for j in jobs] == [(1, "failed"), (2, "completed")]
    assert jobs[1].started_at == clock.now() - timedelta(seconds=0)


@pytest.mark.parametrize("facade", FACADES)
async def test_resume_now_runs_a_normal_run_and_the_waiting_retry_still_runs(facade: str) -> None:
    async with driven(facade, clock=VirtualClock()) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task(
            "r", Flaky(1), interval=HOUR, max_retries=1, retry_backoff=100
        )
        await recorder.wait_for(Event.JOB_RETRYING)
        (_, retry) = await scheduler.get_all_jobs(task_id=tid)
        await scheduler.pause_task(tid)
        await scheduler.resume_task(tid, 0)  # a normal run at once; the retry keeps its due time
        await recorder.wait_for(Event.JOB_COMPLETED)
        normal = (await scheduler.get_all_jobs(task_id=tid))[-1]
        assert (normal.attempt, normal.status) == (1, JobStatus.COMPLETED)
        assert (await scheduler.get_job(retry.id)).status is JobStatus.SCHEDULED
        await scheduler.advance(100)
        done = await scheduler.wait_for_job(retry.id, timeout=WITHIN)
    assert (done.attempt, done.status) == (2, JobStatus.COMPLETED)


@pytest.mark.parametrize("facade", FACADES)
async def test_remove_task_drops_a_waiting_retry(facade: str) -> None:
    async with driven(facade, clock=VirtualClock()) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task("x", Flaky(5), interval=HOUR, max_retries=1, retry_backoff=5)
        await recorder.wait_for(Event.JOB_RETRYING)
        (_, retry) = await scheduler.get_all_jobs(task_id=tid)
        await scheduler.remove_task(tid)
        await scheduler.advance(60)
        await recorder.wait_for(Event.JOB_CANCELLED)
        await _quiet()
        ended = await scheduler.get_job(retry.id)
        stats = await scheduler.stats()
    assert ended.status is JobStatus.CANCELLED
    assert ended.error_message == "its task was removed before it started"
    assert recorder.count(Event.JOB_STARTED) == 1 and stats.retries_waiting == 0


@pytest.mark.parametrize("facade", FACADES)
async def test_update_task_sets_retries_and_timeout(facade: str) -> None:
    async with driven(facade, clock=VirtualClock()) as scheduler:
        tid = await scheduler.add_task("u", Flaky(0), interval=HOUR, delay=HOUR)
        task = await scheduler.update_task(tid, max_retries=3, retry_backoff=0.5, timeout=9)
        assert (task.max_retries, task.retry_backoff, task.retry_backoff_max, task.timeout) == (
            3,
            0.5,
            300.0,
            9.0,
        )
        task = await scheduler.update_task(tid, timeout=None)
        assert task.timeout is None and task.max_retries == 3


# -- timeouts ---------------------------------------------------------------------


@pytest.mark.parametrize("facade", FACADES)
async def test_timeout_cancels_an_async_handler_that_ignores_its_stop_event(facade: str) -> None:
    started = threading.Event()

    async def stubborn() -> None:
        started.set()
        await anyio.sleep_forever()

    async with driven(facade, clock=VirtualClock(), pool_size=1, cancel_grace=2) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("s", stubborn, interval=HOUR, timeout=5, max_retries=2)
        assert await anyio.to_thread.run_sync(started.wait, WITHIN)
        await scheduler.advance(5)  # the timeout: the stop event is set, the handler ignores it
        await _quiet()
        overrun = await scheduler.stats()
        await scheduler.advance(2)  # cancel_grace later: cancelled for real
        await recorder.wait_for(Event.JOB_FAILED)
        after = await scheduler.stats()
        (job,) = await scheduler.get_all_jobs()
    assert (overrun.jobs_overrunning, overrun.pool_in_use) == (1, 1)
    assert (after.jobs_overrunning, after.pool_in_use, after.jobs_running) == (0, 0, 0)
    assert job.error_type == "TimeoutError" and "timed out" in (job.error_message or "")
    assert job.duration_seconds == 7.0
    assert recorder.count(Event.JOB_RETRYING) == 0  # a timed-out run is not retried


@pytest.mark.parametrize("facade", FACADES)
async def test_timeout_on_a_sync_handler_that_honours_its_stop_event(facade: str) -> None:
    started = threading.Event()

    def polite(_stop_event: threading.Event) -> None:
        started.set()
        _stop_event.wait(30)

    async with driven(facade, clock=VirtualClock()) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("p", polite, interval=HOUR, timeout=3)
        await anyio.to_thread.run_sync(started.wait, WITHIN)
        await scheduler.advance(3)
        await recorder.wait_for(Event.JOB_FAILED)
        (job,) = await scheduler.get_all_jobs()
    assert (job.status, job.error_type, job.duration_seconds) == ("failed", "TimeoutError", 3.0)


@pytest.mark.parametrize("facade", FACADES)
async def test_timeout_on_a_sync_handler_that_ignores_it_counts_as_overrunning(
    facade: str,
) -> None:
    started, release = threading.Event(), threading.Event()

    def deaf() -> None:
        started.set()
        release.wait(30)

    async with driven(facade, clock=VirtualClock(), cancel_grace=0) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("d", deaf, interval=HOUR, timeout=3)
        await anyio.to_thread.run_sync(started.wait, WITHIN)
        await scheduler.advance(10)
        await _quiet()
        stats = await scheduler.stats()
        (running,) = await scheduler.get_all_jobs()
        release.set()
        await recorder.wait_for(Event.JOB_FAILED)
        (job,) = await scheduler.get_all_jobs()
        after = await scheduler.stats()
    assert (stats.jobs_overrunning, stats.pool_in_use, running.status) == (1, 1, "running")
    assert (job.error_type, job.duration_seconds) == ("TimeoutError", 10.0)
    assert after.jobs_overrunning == 0


# -- force ------------------------------------------------------------------------


@pytest.mark.parametrize("facade", FACADES)
async def test_force_cancels_an_async_handler_that_never_checks(facade: str) -> None:
    started = threading.Event()
    cleaned_up: list[bool] = []

    async def oblivious() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.append(True)

    async with driven(facade) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("o", oblivious, interval=HOUR)
        assert await anyio.to_thread.run_sync(started.wait, WITHIN)
        (job,) = await scheduler.get_all_jobs()
        assert await scheduler.cancel_job(job.id, force=True)
        ended = await scheduler.wait_for_job(job.id, timeout=WITHIN)
        assert not await scheduler.cancel_job(job.id, force=True)
        stats = await scheduler.stats()
    assert ended.status is JobStatus.CANCELLED and cleaned_up == [True]
    assert ended.error_message == "cancelled at once by cancel_job(force=True)"
    assert stats.pool_in_use == 0
    assert [r[0] for r in recorder.records] == ["task_added", "job_started", "job_cancelled"]


def test_force_on_a_sync_handler_is_a_plain_cancel() -> None:
    started = threading.Event()

    def polite(_stop_event: threading.Event) -> None:
        started.set()
        _stop_event.wait(30)

    with Quiv() as scheduler:
        scheduler.add_task("p", polite, interval=HOUR)
        assert started.wait(WITHIN)
        (job,) = scheduler.get_all_jobs()
        assert scheduler.cancel_job(job.id, force=True)
        ended = scheduler.wait_for_job(job.id, timeout=WITHIN)
    assert (ended.status, ended.error_message) == (JobStatus.CANCELLED, None)


# -- waiting ----------------------------------------------------------------------


async def test_wait_for_job_finished_running_unknown_and_timeout() -> None:
    release = anyio.Event()

    async def held() -> None:
        await release.wait()

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("h", held, interval=HOUR)
        await recorder.wait_for(Event.JOB_STARTED)
        (job,) = await scheduler.get_all_jobs()
        with pytest.raises(TimeoutError):
            await scheduler.wait_for_job(job.id, timeout=0.05)
        assert not scheduler._engine.job_waiters  # the waiter that gave up is forgotten
        with pytest.raises(JobNotFoundError):
            await scheduler.wait_for_job("no-such-job", timeout=1)
        async with anyio.create_task_group() as group:

            async def release_soon() -> None:
                await anyio.sleep(0.02)
                release.set()

            group.start_soon(release_soon)
            ended = await scheduler.wait_for_job(job.id, timeout=WITHIN)  # while it runs
        assert ended.status is JobStatus.COMPLETED
        again = await scheduler.wait_for_job(job.id, timeout=0)  # finished: at once
    assert again == ended


@pytest.mark.parametrize("facade", FACADES)
async def test_wait_for_task_returns_the_next_job_and_unknown_raises(facade: str) -> None:
    async with driven(facade, clock=VirtualClock()) as scheduler:
        tid = await scheduler.add_task("n", Flaky(0), interval=HOUR, delay=10)
        with pytest.raises(TaskNotFoundError):
            await scheduler.wait_for_task("no-such-task")
        async with anyio.create_task_group() as group:

            async def advance() -> None:
                await anyio.sleep(0.02)
                await scheduler.advance(10)

            group.start_soon(advance)
            job = await scheduler.wait_for_task(tid, timeout=WITHIN)
        with pytest.raises(TimeoutError):
            await scheduler.wait_for_task(tid, timeout=0.05)
        async with anyio.create_task_group() as group:

            async def remove() -> None:
                await anyio.sleep(0.02)
                await scheduler.remove_task(tid)

            group.start_soon(remove)
            with pytest.raises(TaskNotFoundError):
                await scheduler.wait_for_task(tid, timeout=WITHIN)
    assert (job.task_id, job.status) == (tid, JobStatus.COMPLETED)


def test_sync_wait_blocks_the_calling_thread_and_refuses_the_loop_thread() -> None:
    release = threading.Event()
    refused: list[BaseException] = []

    def held() -> None:
        release.wait(30)

    with Quiv() as scheduler:
        recorder = SyncRecorder()
        recorder.attach(scheduler)

        async def on_loop() -> None:  # an async handler runs on the scheduler's loop thread
            try:
                scheduler.wait_for_task(tid, timeout=1)
            except BaseException as exc:
                refused.append(exc)

        tid = scheduler.add_task("h", held, interval=HOUR)
        recorder.wait_for(Event.JOB_STARTED)
        (job,) = scheduler.get_all_jobs()
        with pytest.raises(TimeoutError):
            scheduler.wait_for_job(job.id, timeout=0.05)
        results: list[Any] = []
        waiter = threading.Thread(target=lambda: results.append(scheduler.wait_for_job(job.id)))
        waiter.start()
        time.sleep(0.05)
        assert waiter.is_alive()  # blocked in its own thread, not in the loop
        release.set()
        waiter.join(WITHIN)
        assert [r.status for r in results] == [JobStatus.COMPLETED]
        assert scheduler.wait_for_job(job.id).id == job.id  # finished: at once
        with pytest.raises(JobNotFoundError):
            scheduler.wait_for_job("no-such-job")
        scheduler.add_task("loop", on_loop, interval=HOUR)
        recorder.wait_for(Event.JOB_COMPLETED, 2)
    assert len(refused) == 1 and isinstance(refused[0], SchedulerStateError)
    assert "own loop thread" in str(refused[0])


def test_sync_wait_is_released_by_shutdown() -> None:
    scheduler = Quiv()
    scheduler.start()
    tid = scheduler.add_task("later", Flaky(0), interval=HOUR, delay=HOUR)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            scheduler.wait_for_task(tid, timeout=WITHIN)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    scheduler.shutdown()
    waiter.join(WITHIN)
    assert len(errors) == 1 and isinstance(errors[0], SchedulerClosedError)


# -- stats ------------------------------------------------------------------------


@pytest.mark.parametrize("facade", FACADES)
async def test_stats_under_a_known_load(facade: str) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def held() -> None:
        entered.release()
        release.wait(30)

    async with driven(facade, clock=VirtualClock(), pool_size=2) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        before = await scheduler.stats()
        for name in ("a", "b", "c"):
            await scheduler.add_task(name, held, interval=HOUR)
        paused = await scheduler.add_task("z", held, interval=HOUR, delay=HOUR)
        await scheduler.pause_task(paused)
        for _ in range(2):
            await anyio.to_thread.run_sync(entered.acquire, True, WITHIN)
        await scheduler.advance(3)
        busy = await scheduler.stats()
        release.set()
        await recorder.wait_for(Event.JOB_COMPLETED, 3)
        after = await scheduler.stats()
    assert before.model_dump() == {
        "pool_size": 2,
        "pool_in_use": 0,
        "jobs_running": 0,
        "jobs_queued": 0,
        "jobs_overrunning": 0,
        "retries_waiting": 0,
        "tasks_by_status": {TaskStatus.ACTIVE: 0, TaskStatus.RUNNING: 0, TaskStatus.PAUSED: 0},
        "jobs_ended": dict.fromkeys(("completed", "cancelled", "failed", "missed"), 0),
        "start_lag_p50": None,
        "start_lag_p99": None,
        "lag_window": 1000,
        "oldest_queued_wait": None,
        "store_backlog": 0,
    }
    assert (busy.pool_in_use, busy.jobs_running, busy.jobs_queued) == (2, 2, 1)
    assert busy.tasks_by_status == {"active": 1, "running": 2, "paused": 1}
    assert busy.oldest_queued_wait == 3.0
    assert (busy.start_lag_p50, busy.start_lag_p99) == (0.0, 0.0)
    assert after.jobs_ended[JobStatus.COMPLETED] == 3
    assert (after.start_lag_p50, after.start_lag_p99) == (0.0, 3.0)  # the third started 3 s late
    assert after.model_dump_json()  # a FastAPI endpoint can return it
    with pytest.raises(ValidationError, match="frozen"):
        after.pool_size = 5


@pytest.mark.parametrize("facade", FACADES)
async def test_oldest_queued_wait_is_the_longest_wait_whatever_the_queue_order(
    facade: str,
) -> None:
    # A retry and a run falling due in the same tick join the queue retry first
    # (timers fire before the due heap is read), though the run was due earlier.
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(30)

    async with driven(facade, clock=VirtualClock(), pool_size=1) as scheduler:
        scheduler.engine._rng = random.Random(0)
        backoff = retry_delay(1, 10.0, 300.0, random.Random(0))
        assert backoff > 2  # the retry falls due well after the run below
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("f", Flaky(1), interval=HOUR, max_retries=1, retry_backoff=10)
        await recorder.wait_for(Event.JOB_RETRYING)
        await scheduler.add_task("h", hold, interval=HOUR)
        assert await anyio.to_thread.run_sync(held.wait, WITHIN)  # the one slot is taken
        await scheduler.add_task("n", Flaky(0), interval=HOUR, delay=1)
        await scheduler.advance(10)
        await _quiet()
        stats = await scheduler.stats()
        release.set()
        await recorder.wait_for(Event.JOB_COMPLETED, 3)
    assert stats.jobs_queued == 2
    assert stats.oldest_queued_wait == 9.0  # "n", due at 1; the retry has waited 10 - backoff


# -- shutdown(timeout) ------------------------------------------------------------


@pytest.mark.parametrize("facade", ["AsyncQuiv", "Quiv"])
async def test_shutdown_timeout_overrides_the_option(facade: str) -> None:
    started, release = threading.Event(), threading.Event()

    def stubborn() -> None:
        started.set()
        release.wait(30)

    try:
        if facade == "Quiv":
            sync = Quiv(shutdown_timeout=30)
            sync.start()
            sync.add_task("s", stubborn, interval=HOUR)
            assert started.wait(WITHIN)
            with pytest.raises(ConfigurationError):
                sync.shutdown(timeout=-1)
            began = time.monotonic()
            await anyio.to_thread.run_sync(lambda: sync.shutdown(timeout=0.2))
        else:
            async with AsyncQuiv(shutdown_timeout=30) as scheduler:
                await scheduler.add_task("s", stubborn, interval=HOUR)
                await anyio.to_thread.run_sync(started.wait, WITHIN)
                with pytest.raises(ConfigurationError):
                    await scheduler.shutdown(timeout=float("nan"))
                began = time.monotonic()
                await scheduler.shutdown(timeout=0.2)
                with pytest.raises(SchedulerClosedError):
                    await scheduler.get_all_jobs()
        elapsed = time.monotonic() - began
    finally:
        release.set()
    assert 0.15 <= elapsed < 2.0


def test_a_sync_handler_cannot_wait_for_the_next_end_of_its_own_task() -> None:
    """With max_instances=1 the next end of its own task is its own: refused, not a hang."""
    refused: list[str] = []
    done = threading.Event()

    with Quiv() as scheduler:

        def handler(_job_id: str) -> None:
            task_id = scheduler.get_job(_job_id).task_id
            try:
                scheduler.wait_for_task(task_id, timeout=5)
            except SchedulerStateError as exc:
                refused.append(str(exc))
            finally:
                done.set()

        scheduler.add_task("self-waiter", handler, interval=3600)
        assert done.wait(10)
    assert refused == [
        "a job cannot wait for the next run of its own task to end: "
        "with max_instances=1 that run is itself"
    ]


async def test_an_async_handler_cannot_wait_for_its_own_end() -> None:
    """Its own job, or the next end of its own one-at-a-time task: refused, not a hang."""
    refused: list[str] = []
    done = anyio.Event()

    async with AsyncQuiv() as scheduler:

        async def handler(_job_id: str) -> None:
            task_id = (await scheduler.get_job(_job_id)).task_id
            for wait in (scheduler.wait_for_job(_job_id, 5), scheduler.wait_for_task(task_id, 5)):
                try:
                    await wait
                except SchedulerStateError as exc:
                    refused.append(str(exc))
            done.set()

        await scheduler.add_task("self-waiter", handler, interval=3600)
        with anyio.fail_after(15):
            await done.wait()
    assert refused == [
        "a job cannot wait for itself to end",
        "a job cannot wait for the next run of its own task to end: "
        "with max_instances=1 that run is itself",
    ]
