"""AsyncQuiv: the core's behaviour, event by event."""

from __future__ import annotations

import contextvars
import logging
import os
import stat
import threading
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from _support import AsyncRecorder, noop
from quiv import (
    AsyncQuiv,
    ConfigurationError,
    Event,
    HandlerNotRegisteredError,
    JobNotFoundError,
    JobStatus,
    QuivConfig,
    SchedulerClosedError,
    SchedulerStateError,
    TaskNotFoundError,
    TaskNotScheduledError,
    VirtualClock,
)
from quiv import (
    TaskStatus as QuivTaskStatus,
)

DONE = Event.JOB_COMPLETED


async def test_run_once_sync_job_event_sequence_and_read_your_writes() -> None:
    seen: list[Any] = []

    def handler(n: int, _progress_hook: Any = None) -> None:
        for i in range(n):
            _progress_hook(step=i)

    async def on_progress(**payload: Any) -> None:
        seen.append(payload["step"])

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)

        async def check_read(event: Event, task: Any, job: Any) -> None:
            seen.append((await scheduler.get_job(job.id)).status.value)

        await scheduler.add_listener(DONE, check_read)
        await scheduler.add_listener(Event.JOB_STARTED, lambda e, t, j: seen.append("started"))
        await scheduler.add_task(
            "count", handler, interval=1, run_once=True, args=(100,), progress_callback=on_progress
        )
        await recorder.wait_for(Event.TASK_REMOVED)

    assert recorder.records == [
        ("task_added", "count", None),
        ("job_started", "count", "running"),
        ("job_completed", "count", "completed"),
        ("task_removed", "count", None),
    ]
    assert seen == ["started", *range(100), "completed"]


async def test_async_handlers_run_on_the_loop_and_sync_ones_in_threads() -> None:
    where: dict[str, int] = {}

    async def async_handler() -> None:
        where["async"] = threading.get_ident()

    def sync_handler() -> None:
        where["sync"] = threading.get_ident()

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("a", async_handler, interval=1, run_once=True)
        await scheduler.add_task("s", sync_handler, interval=1, run_once=True)
        await recorder.wait_for(DONE, 2)
    assert where["async"] == threading.get_ident()
    assert where["sync"] != threading.get_ident()


async def test_injection_only_for_declared_names() -> None:
    received: dict[str, Any] = {}

    def nothing(a: int, b: int = 0) -> None:
        received["nothing"] = (a, b)

    def only_id(_job_id: str) -> None:
        received["only_id"] = _job_id

    async def everything(**kwargs: Any) -> None:
        received["everything"] = sorted(kwargs)

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("n", nothing, 1, run_once=True, args=(1,), kwargs={"b": 2})
        await scheduler.add_task("i", only_id, 1, run_once=True)
        await scheduler.add_task("e", everything, 1, run_once=True, kwargs={"x": 1})
        await recorder.wait_for(DONE, 3)
        jobs = {job.task_name: job for job in recorder.jobs if job.status is JobStatus.COMPLETED}
    assert received["nothing"] == (1, 2)
    assert received["only_id"] == jobs["i"].id
    assert received["everything"] == ["_job_id", "_progress_hook", "_stop_event", "x"]


async def test_each_run_gets_a_fresh_copy_of_its_arguments() -> None:
    clock = VirtualClock()
    lengths: list[int] = []

    async def mutate(bucket: list[int]) -> None:
        bucket.append(1)
        lengths.append(len(bucket))

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("m", mutate, interval=1, args=([],))
        await recorder.wait_for(DONE, 1)
        clock.advance(1)
        await recorder.wait_for(DONE, 2)
    assert lengths == [1, 1]


async def test_tasks_added_before_entering_run_once_entered() -> None:
    scheduler = AsyncQuiv()
    recorder = AsyncRecorder()
    await recorder.attach(scheduler)
    task_id = await scheduler.add_task("early", noop, interval=1, run_once=True)
    assert [t.id for t in await scheduler.get_all_tasks(include_run_once=True)] == [task_id]
    async with scheduler:
        await recorder.wait_for(Event.TASK_REMOVED)
    assert [r[0] for r in recorder.records] == [
        "task_added",
        "job_started",
        "job_completed",
        "task_removed",
    ]


async def test_pool_size_bounds_sync_and_async_jobs_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="Quiv")
    gate_async = anyio.Event()
    gate_sync = threading.Event()
    lock = threading.Lock()
    running = 0
    peak = 0

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    async def async_job() -> None:
        enter()
        await gate_async.wait()
        leave()

    def sync_job() -> None:
        enter()
        gate_sync.wait(5)
        leave()

    async with AsyncQuiv(pool_size=2) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        for i in range(3):
            await scheduler.add_task(f"a{i}", async_job, 1, run_once=True)
            await scheduler.add_task(f"s{i}", sync_job, 1, run_once=True)
        await recorder.wait_for(Event.JOB_STARTED, 2)
        await wait_all_tasks_blocked()
        assert len(await scheduler.get_all_jobs("running")) == 2
        assert len(await scheduler.get_all_jobs("scheduled")) == 4
        assert recorder.count(Event.JOB_STARTED) == 2
        gate_async.set()
        gate_sync.set()
        await recorder.wait_for(DONE, 6)
    assert peak == 2
    assert any("pool was busy" in message for message in caplog.messages)


async def test_cancel_job_is_cooperative_and_reports() -> None:
    started = anyio.Event()

    def poll(_stop_event: threading.Event) -> None:
        anyio.from_thread.run_sync(started.set)
        while not _stop_event.wait(0.001):
            pass

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("poll", poll, 60, run_once=True)
        with anyio.fail_after(5):
            await started.wait()
        (job,) = await scheduler.get_all_jobs("running")
        assert await scheduler.cancel_job(job.id) is True
        await recorder.wait_for(Event.JOB_CANCELLED)
        assert (await scheduler.get_job(job.id)).status is JobStatus.CANCELLED
        assert await scheduler.cancel_job(job.id) is False
        assert await scheduler.cancel_job("no-such-job") is False


async def test_remove_task_signals_its_running_job() -> None:
    started = anyio.Event()

    async def poll(_stop_event: threading.Event) -> None:
        started.set()
        while not _stop_event.is_set():  # noqa: ASYNC110 - polling is the point
            await anyio.sleep(0.001)

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("poll", poll, 60)
        with anyio.fail_after(5):
            await started.wait()
        await scheduler.remove_task(task_id)
        await recorder.wait_for(Event.JOB_CANCELLED)
        with pytest.raises(TaskNotFoundError):
            await scheduler.get_task(task_id)
    assert [r[0] for r in recorder.records] == [
        "task_added",
        "job_started",
        "task_removed",
        "job_cancelled",
    ]


async def test_failed_handler_is_recorded_with_its_error() -> None:
    def broken() -> None:
        raise ValueError("boom")

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("broken", broken, 1, run_once=True)
        await recorder.wait_for(Event.JOB_FAILED)
        (job,) = await scheduler.get_all_jobs("failed")
    assert (job.error_type, job.error_message) == ("ValueError", "boom")
    assert job.ended_at is not None
    assert job.duration_seconds is not None


async def test_fixed_interval_cadence_does_not_drift() -> None:
    clock = VirtualClock()
    starts: list[float] = []

    async def tick() -> None:
        starts.append(clock.monotonic())

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("tick", tick, interval=10)
        await recorder.wait_for(DONE, 1)
        clock.advance(10.004)  # dispatched late
        await recorder.wait_for(DONE, 2)
        clock.advance(9.99)  # t = 19.994: the next slot is 20, not 20.004
        await wait_all_tasks_blocked()
        assert recorder.count(DONE) == 2
        clock.advance(0.006)
        await recorder.wait_for(DONE, 3)
    assert starts == [0.0, 10.004, pytest.approx(20.0)]


async def test_fixed_interval_skips_slots_missed_during_a_long_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    clock = VirtualClock()
    release = anyio.Event()
    entered = anyio.Event()
    starts: list[float] = []

    async def slow() -> None:
        starts.append(clock.monotonic())
        entered.set()
        if len(starts) == 1:
            await release.wait()

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("slow", slow, interval=10)
        with anyio.fail_after(5):
            await entered.wait()  # the handler itself has begun, not just its job
        clock.advance(25)  # slots 10 and 20 pass while the first run is busy
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 1
        assert (await scheduler.get_task(task_id)).status is QuivTaskStatus.RUNNING
        release.set()
        await recorder.wait_for(DONE, 1)
        clock.advance(4.9)
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 1
        clock.advance(0.1)
        await recorder.wait_for(DONE, 2)
    assert starts == [0.0, 30.0]
    assert [m for m in caplog.messages if "skipped" in m] == [
        f"quiv task 'slow' ({task_id}) overran its interval: 2 slot(s) skipped"
    ]


async def test_relative_interval_is_measured_from_completion() -> None:
    clock = VirtualClock()
    release = anyio.Event()
    entered = anyio.Event()
    starts: list[float] = []

    async def slow() -> None:
        starts.append(clock.monotonic())
        entered.set()
        if len(starts) == 1:
            await release.wait()

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("slow", slow, interval=10, fixed_interval=False)
        with anyio.fail_after(5):
            await entered.wait()  # the handler itself has begun, not just its job
        clock.advance(4)
        release.set()
        await recorder.wait_for(DONE, 1)
        clock.advance(9.9)
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 1
        clock.advance(0.1)
        await recorder.wait_for(DONE, 2)
    assert starts == [0.0, 14.0]


async def test_delay_postpones_the_first_run() -> None:
    clock = VirtualClock()
    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("later", noop, interval=60, delay=5)
        task = await scheduler.get_task(task_id)
        assert (task.next_run_at - clock.now()).total_seconds() == 5
        clock.advance(4.5)
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 0
        clock.advance(0.5)
        await recorder.wait_for(DONE)


async def test_pause_blocks_runs_and_resume_fires_immediately() -> None:
    clock = VirtualClock()
    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("p", noop, interval=10)
        await recorder.wait_for(DONE)
        await scheduler.pause_task(task_id)
        assert (await scheduler.get_task(task_id)).status is QuivTaskStatus.PAUSED
        clock.advance(100)
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 1
        await scheduler.resume_task(task_id)
        await recorder.wait_for(DONE, 2)
        await scheduler.resume_task(task_id, delay=3)
        clock.advance(2.9)
        await wait_all_tasks_blocked()
        assert recorder.count(DONE) == 2
        clock.advance(0.1)
        await recorder.wait_for(DONE, 3)
    assert [r[0] for r in recorder.records] == [
        "task_added",
        "job_started",
        "job_completed",
        "task_paused",
        "task_resumed",
        "job_started",
        "job_completed",
        "task_resumed",
        "job_started",
        "job_completed",
    ]


async def test_a_pause_made_during_a_run_survives_its_end() -> None:
    clock = VirtualClock()
    release = anyio.Event()

    async def slow() -> None:
        await release.wait()

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("slow", slow, interval=10)
        await recorder.wait_for(Event.JOB_STARTED)
        await scheduler.pause_task(task_id)
        release.set()
        await recorder.wait_for(DONE)
        clock.advance(100)
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 1
        assert (await scheduler.get_task(task_id)).status is QuivTaskStatus.PAUSED


async def test_run_now_during_a_run_queues_exactly_one_more_never_concurrently() -> None:
    release = anyio.Event()
    active = 0
    peak = 0

    async def slow() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("slow", slow, interval=3600)
        await recorder.wait_for(Event.JOB_STARTED)
        assert await scheduler.run_task_immediately(task_id) == 1
        assert await scheduler.run_task_immediately(task_id) == 1
        await scheduler.resume_task(task_id)
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 1
        release.set()
        await recorder.wait_for(DONE, 2)
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 2
    assert peak == 1


async def test_run_now_errors() -> None:
    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        with pytest.raises(HandlerNotRegisteredError):
            await scheduler.run_task_immediately("missing")
        release = anyio.Event()

        async def wait() -> None:
            await release.wait()

        once = await scheduler.add_task("once", wait, 1, run_once=True)
        await recorder.wait_for(Event.JOB_STARTED)
        with pytest.raises(TaskNotScheduledError):
            await scheduler.run_task_immediately(once)
        release.set()


async def test_history_is_purged_after_retention() -> None:
    clock = VirtualClock()
    async with AsyncQuiv(history_retention_seconds=10, clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("once", noop, 1, run_once=True)
        await recorder.wait_for(DONE)
        (job,) = await scheduler.get_all_jobs()
        assert len(await scheduler._store.read_rows("jobs")) == 1
        clock.advance(9.9)
        await wait_all_tasks_blocked()
        assert (await scheduler.get_job(job.id)).id == job.id
        clock.advance(0.2)
        await wait_all_tasks_blocked()
        with pytest.raises(JobNotFoundError):
            await scheduler.get_job(job.id)
        assert await scheduler._store.read_rows("jobs") == []


async def test_listing_and_lookups() -> None:
    async with AsyncQuiv(clock=VirtualClock()) as scheduler:
        recurring = await scheduler.add_task("r", noop, 60, delay=10)
        once = await scheduler.add_task("o", noop, 60, delay=10, run_once=True)
        assert [t.id for t in await scheduler.get_all_tasks()] == [recurring]
        everything = await scheduler.get_all_tasks(include_run_once=True)
        assert [t.id for t in everything] == [recurring, once]
        task = await scheduler.get_task(recurring)
        assert task.task_name == "r"
        assert task.interval_seconds == 60.0
        assert task.fixed_interval is True
        assert task.run_once is False
        assert task.status is QuivTaskStatus.ACTIVE
        assert task.next_run_at.utcoffset() is not None
        with pytest.raises(TaskNotFoundError):
            await scheduler.get_task("nope")
        with pytest.raises(JobNotFoundError):
            await scheduler.get_job("nope")
        with pytest.raises(ConfigurationError, match="status must be one of"):
            await scheduler.get_all_jobs("finished")
        assert await scheduler.get_all_jobs(JobStatus.RUNNING) == []


async def test_timezone_is_for_display_only() -> None:
    clock = VirtualClock()
    async with AsyncQuiv(timezone="Asia/Kolkata", clock=clock) as scheduler:
        task = await scheduler.get_task(await scheduler.add_task("t", noop, 60, delay=60))
    assert task.next_run_at.utcoffset() is not None
    assert task.next_run_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


async def test_default_and_custom_loggers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    custom = logging.getLogger("my.app.scheduler")
    async with AsyncQuiv() as default_scheduler:
        await default_scheduler.add_task("d", noop, 60, delay=60)
    async with AsyncQuiv(logger=custom) as custom_scheduler:
        await custom_scheduler.add_task("c", noop, 60, delay=60)
    names = {(r.name, r.getMessage().split("'")[1]) for r in caplog.records if "added" in r.msg}
    assert names == {("Quiv", "d"), ("my.app.scheduler", "c")}


async def test_store_is_private_and_deleted_on_exit() -> None:
    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("t", noop, 60)
        await recorder.wait_for(DONE)
        rows = await scheduler._store.read_rows("tasks")
        assert [row["id"] for row in rows] == [task_id]
        path = scheduler._store.path
        assert path is not None
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        jobs = await scheduler._store.read_rows("jobs")
        assert [(row["task_id"], row["status"]) for row in jobs] == [(task_id, "completed")]
    assert not path.parent.exists()


async def test_stored_task_row_follows_runs_pauses_and_updates() -> None:
    """The row is rendered from a cached definition plus the changing fields;
    each of them must reach the database."""

    async def stored() -> dict[str, Any]:
        await scheduler._store.flush()
        (row,) = await scheduler._store.read_rows("tasks")
        return row

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("t", noop, 60)
        await recorder.wait_for(DONE)
        task = await scheduler.get_task(task_id)
        row = await stored()
        assert (row["task_name"], row["interval_seconds"], row["status"]) == ("t", 60, "active")
        assert row["next_run_at"] == task.next_run_at
        await scheduler.pause_task(task_id)
        assert (await stored())["status"] == "paused"
        await scheduler.update_task(task_id, task_name="u", interval=30, max_retries=2)
        row, task = await stored(), await scheduler.get_task(task_id)
        assert (row["task_name"], row["interval_seconds"], row["max_retries"]) == ("u", 30, 2)
        assert (task.task_name, task.interval_seconds, task.max_retries) == ("u", 30, 2)
        assert row["status"] == "paused"


async def test_exit_stops_running_jobs_and_delivers_their_final_events() -> None:
    started = anyio.Event()

    def poll(_stop_event: threading.Event) -> None:
        anyio.from_thread.run_sync(started.set)
        while not _stop_event.wait(0.001):
            pass

    recorder = AsyncRecorder()
    async with AsyncQuiv() as scheduler:
        await recorder.attach(scheduler)
        await scheduler.add_task("poll", poll, 60)
        with anyio.fail_after(5):
            await started.wait()
    assert [r[:3] for r in recorder.records] == [
        ("task_added", "poll", None),
        ("job_started", "poll", "running"),
        ("job_cancelled", "poll", "cancelled"),
    ]


async def test_calls_after_exit_and_reentry_are_refused() -> None:
    scheduler = AsyncQuiv()
    async with scheduler:
        with pytest.raises(SchedulerStateError, match="already running"):
            await scheduler.__aenter__()
    with pytest.raises(SchedulerClosedError):
        await scheduler.add_task("late", noop, 1)
    with pytest.raises(SchedulerClosedError):
        await scheduler.get_all_tasks()
    with pytest.raises(SchedulerClosedError):
        async with scheduler:
            pass


async def test_serve_in_an_application_task_group() -> None:
    scheduler = AsyncQuiv()
    recorder = AsyncRecorder()
    await recorder.attach(scheduler)
    async with anyio.create_task_group() as group:
        await group.start(scheduler.serve)
        await scheduler.add_task("served", noop, 1, run_once=True)
        await recorder.wait_for(DONE)
        group.cancel_scope.cancel()
    with pytest.raises(SchedulerClosedError):
        await scheduler.get_all_tasks()


async def test_serve_reports_started_only_once_accepting(
    anyio_backend: Any,
) -> None:
    scheduler = AsyncQuiv()
    statuses: list[str] = []

    async def watcher(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as inner:
            await inner.start(scheduler.serve)
            statuses.append(scheduler._state.value)
            task_status.started()
            await checkpoint()
            inner.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        await group.start(watcher)
    assert statuses == ["open"]


def test_config_and_explicit_options_do_not_mix() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        AsyncQuiv(QuivConfig(pool_size=3), pool_size=4)
    assert AsyncQuiv(QuivConfig(pool_size=3)).config.pool_size == 3


TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="unset")


async def test_context_variables_do_not_leak_between_jobs() -> None:
    seen: list[tuple[str, int, str]] = []

    async def async_job(n: int) -> None:
        seen.append(("async", n, TRACE.get()))
        TRACE.set(f"async-{n}")

    def sync_job(n: int) -> None:
        seen.append(("sync", n, TRACE.get()))
        TRACE.set(f"sync-{n}")

    async with AsyncQuiv(pool_size=1) as scheduler:  # one worker of each kind, reused
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        for n in range(3):
            await scheduler.add_task("a", async_job, 60, run_once=True, args=(n,))
            await scheduler.add_task("s", sync_job, 60, run_once=True, args=(n,))
        await recorder.wait_for(DONE, 6)
    assert sorted(seen) == sorted(
        [(kind, n, "unset") for kind in ("async", "sync") for n in range(3)]
    )
