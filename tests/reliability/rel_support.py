"""Helpers for the reliability suite: event logs and waits that always have a deadline.

Nothing here sleeps and hopes: every wait polls a condition under a deadline and
fails loudly (with what it saw) when the deadline passes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from quiv import AsyncQuiv, Event, Job, JobStatus, Quiv, Task

#: How long any "this should happen promptly" wait may take before the test fails.
DEADLINE = 5.0

FINAL_EVENTS = (Event.JOB_COMPLETED, Event.JOB_CANCELLED, Event.JOB_FAILED)


@dataclass(frozen=True)
class Entry:
    """One listener call."""

    event: Event
    task: Task
    job: Job | None
    thread: str


class EventLog:
    """Records every event a scheduler emits; thread-safe, usable from sync and async tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []

    # -- attaching ----------------------------------------------------------

    def listener(self, event: Event, task: Task, job: Job | None = None) -> None:
        entry = Entry(event, task, job, threading.current_thread().name)
        with self._lock:
            self._entries.append(entry)

    async def attach_async(self, scheduler: AsyncQuiv) -> None:
        for event in Event:
            await scheduler.add_listener(event, self.listener)

    def attach_sync(self, scheduler: Quiv) -> None:
        for event in Event:
            scheduler.add_listener(event, self.listener)

    # -- reading ------------------------------------------------------------

    @property
    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def jobs(self, *events: Event, task_id: str | None = None) -> list[Job]:
        """Job snapshots of the given events (all job events if none given), in order."""
        wanted = events or tuple(e for e in Event if e.is_job_event)
        return [
            e.job
            for e in self.entries
            if e.event in wanted and e.job is not None and (task_id is None or e.task.id == task_id)
        ]

    def count(self, event: Event, task_id: str | None = None) -> int:
        return sum(
            1
            for e in self.entries
            if e.event is event and (task_id is None or e.task.id == task_id)
        )

    def finals(self, task_id: str | None = None) -> list[Job]:
        return self.jobs(*FINAL_EVENTS, task_id=task_id)

    def final_by_job(self) -> dict[str, list[Job]]:
        result: dict[str, list[Job]] = {}
        for job in self.finals():
            result.setdefault(job.id, []).append(job)
        return result

    def started_ids(self) -> list[str]:
        return [job.id for job in self.jobs(Event.JOB_STARTED)]

    def assert_lifecycles_consistent(self) -> None:
        """Every started job ended exactly once; jobs ending unstarted were cancelled."""
        started = self.started_ids()
        assert len(started) == len(set(started)), "a job was started twice"
        finals = self.final_by_job()
        twice = {job_id: jobs for job_id, jobs in finals.items() if len(jobs) > 1}
        assert not twice, f"jobs ended more than once: {twice}"
        unfinished = [job_id for job_id in started if job_id not in finals]
        assert not unfinished, f"started jobs that never ended: {unfinished}"
        for job_id, (job,) in finals.items():
            assert job.status.is_final, job
            if job_id not in started:
                assert job.status is JobStatus.CANCELLED, f"unstarted job ended {job.status}"


# -- deadline-bound waits -------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE, what: str = "") -> None:
    """Block until ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.002)


async def eventually(condition: Callable[[], bool], within: float = DEADLINE) -> None:
    """Await until ``condition()`` is true; fail the test after ``within`` seconds.

    The conditions are mostly set from other threads (handlers, the dispatcher),
    which cannot set an ``anyio.Event``; a short poll under a deadline is the
    portable way to wait for them.
    """
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - see docstring
            await anyio.sleep(0.002)


async def eventually_async(check: Callable[[], Awaitable[bool]], within: float = DEADLINE) -> None:
    """Like :func:`eventually` for a condition that has to be awaited."""
    with anyio.fail_after(within):
        while not await check():  # noqa: ASYNC110 - see eventually()
            await anyio.sleep(0.005)


async def stop_requested(stop_event: threading.Event, within: float | None = None) -> bool:
    """What an async handler does to honour its ``_stop_event``: poll it, cooperatively.

    Returns whether it was set (False if ``within`` seconds passed first).
    """
    with anyio.move_on_after(within if within is not None else math.inf):
        while not stop_event.is_set():  # noqa: ASYNC110 - a threading.Event cannot be awaited
            await anyio.sleep(0.002)
    return stop_event.is_set()


def noop(*_args: Any, **_kwargs: Any) -> None:
    """A handler that does nothing."""


# -- reaching the store (internal, as the brief for this suite allows) -------------------


def store_of(scheduler: AsyncQuiv | Quiv) -> Any:
    """The scheduler's write-behind store: ``path``, ``flush()``, ``failed_batches``."""
    core = scheduler._core if isinstance(scheduler, Quiv) else scheduler
    return core._store


async def exercise_pool(scheduler: AsyncQuiv, log: EventLog, jobs: int = 5) -> None:
    """Run ``jobs`` one-off jobs and wait for all: with ``pool_size=1`` a leaked slot hangs."""
    ids = [
        await scheduler.add_task(f"probe-{i}", noop, interval=3600, run_once=True)
        for i in range(jobs)
    ]
    await eventually(lambda: all(log.count(Event.JOB_COMPLETED, tid) == 1 for tid in ids))


def exercise_pool_sync(scheduler: Quiv, log: EventLog, jobs: int = 5) -> None:
    ids = [
        scheduler.add_task(f"probe-{i}", noop, interval=3600, run_once=True) for i in range(jobs)
    ]
    wait_until(
        lambda: all(log.count(Event.JOB_COMPLETED, tid) == 1 for tid in ids),
        what="every probe job to complete",
    )


async def assert_nothing_running(scheduler: AsyncQuiv) -> None:
    """Once the only tasks left are idle, no job and no task may still show ``running``."""

    async def settled() -> bool:
        running = await scheduler.get_all_jobs("running")
        tasks = await scheduler.get_all_tasks(include_run_once=True)
        return not running and all(t.status != "running" for t in tasks)

    await eventually_async(settled)
