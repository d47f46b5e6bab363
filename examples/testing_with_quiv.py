"""Recipes for testing an application that schedules work with quiv.

Each ``test_*`` function here is a complete test, ready to copy into a pytest
suite that runs async tests with anyio's plugin (``anyio_mode = "auto"`` or
``@pytest.mark.anyio``) on the asyncio backend. quiv's own test suite runs
them, so they are known to pass.

The rules they follow:

* time is a :class:`quiv.VirtualClock` that the test moves, so an hourly task
  takes no hour and no test depends on the machine's speed;
* the test waits for what it expects (a listener sets an ``anyio.Event``)
  under ``anyio.fail_after``, instead of sleeping and hoping;
* it then compares whole sequences, not "at least one".
"""

from __future__ import annotations

import threading

import anyio

from quiv import AsyncQuiv, Event, Job, JobStatus, Quiv, Task, VirtualClock


# --8<-- [start:eventlog]
class EventLog:
    """A listener that records ``(event, task name)`` and lets a test wait for more."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.jobs: list[Job] = []
        self._more = anyio.Event()

    async def __call__(self, event: Event, task: Task, job: Job | None = None) -> None:
        self.seen.append((event.value, task.task_name))
        if job is not None:
            self.jobs.append(job)
        self._more.set()
        self._more = anyio.Event()

    async def wait_for(self, count: int, seconds: float = 5) -> None:
        """Return once ``count`` events were seen; fail after ``seconds`` real seconds."""
        with anyio.fail_after(seconds):
            while len(self.seen) < count:
                await self._more.wait()

    async def attach(self, scheduler: AsyncQuiv) -> None:
        for event in Event:
            await scheduler.add_listener(event, self)


# --8<-- [end:eventlog]


# --8<-- [start:virtual_clock]
async def test_hourly_task_runs_on_the_hour() -> None:
    clock = VirtualClock()
    runs: list[float] = []

    async def send_digest() -> None:
        runs.append(clock.monotonic())

    log = EventLog()
    async with AsyncQuiv(clock=clock) as scheduler:
        await log.attach(scheduler)
        await scheduler.add_task("digest", send_digest, interval=3600)
        await log.wait_for(3)  # task_added, job_started, job_completed

        clock.advance(3599)
        await anyio.wait_all_tasks_blocked()  # let the scheduler react, if it would
        assert runs == [0.0]

        clock.advance(1)
        await log.wait_for(5)
        assert runs == [0.0, 3600.0]
    assert log.seen == [
        ("task_added", "digest"),
        ("job_started", "digest"),
        ("job_completed", "digest"),
        ("job_started", "digest"),
        ("job_completed", "digest"),
    ]


# --8<-- [end:virtual_clock]


# --8<-- [start:cancel]
async def test_cancelled_job_ends_cancelled() -> None:
    def download(_stop_event: threading.Event) -> None:
        _stop_event.wait(timeout=30)  # a real handler would check between chunks

    log = EventLog()
    async with AsyncQuiv() as scheduler:
        await log.attach(scheduler)
        await scheduler.add_task("download", download, interval=1, run_once=True)
        await log.wait_for(2)  # task_added, job_started
        job_id = log.jobs[0].id
        assert await scheduler.cancel_job(job_id) is True
        await log.wait_for(4)  # job_cancelled, task_removed
        assert (await scheduler.get_job(job_id)).status is JobStatus.CANCELLED
    assert log.seen == [
        ("task_added", "download"),
        ("job_started", "download"),
        ("job_cancelled", "download"),
        ("task_removed", "download"),
    ]


# --8<-- [end:cancel]


# --8<-- [start:failure]
async def test_failure_is_recorded_not_raised() -> None:
    async def flaky() -> None:
        raise ValueError("upstream returned 502")

    log = EventLog()
    async with AsyncQuiv() as scheduler:
        await log.attach(scheduler)
        await scheduler.add_task("flaky", flaky, interval=60)
        await log.wait_for(3)
        failed = await scheduler.get_all_jobs("failed")
    assert log.seen[1:] == [("job_started", "flaky"), ("job_failed", "flaky")]
    assert [(job.error_type, job.error_message) for job in failed] == [
        ("ValueError", "upstream returned 502")
    ]


# --8<-- [end:failure]


# --8<-- [start:sync_facade]
def test_sync_facade_with_threading_events() -> None:
    """Plain ``def`` test: ``Quiv`` runs its own loop, so wait with threading tools."""
    finished = threading.Event()
    outcomes: list[str] = []
    ran_in: list[str] = []

    def tidy_up() -> None:
        ran_in.append(threading.current_thread().name)

    def on_done(event: Event, task: Task, job: Job) -> None:
        outcomes.append(job.status.value)
        finished.set()

    with Quiv() as scheduler:
        scheduler.add_listener(Event.JOB_COMPLETED, on_done)
        scheduler.add_task("tidy-up", tidy_up, interval=1, run_once=True)
        assert finished.wait(timeout=5)
    assert outcomes == ["completed"]
    assert ran_in != ["MainThread"]  # sync handlers run in a worker thread


# --8<-- [end:sync_facade]
