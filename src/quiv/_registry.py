"""The live schedule: tasks, jobs and every state transition, in memory.

Everything here is synchronous and reads no clock: callers pass ``now`` in.
That keeps each transition atomic on the event loop (no await can interleave)
and lets the sync facade serve calls made on the loop thread itself.

Due tasks sit in a heap keyed by monotonic due time. Rescheduling bumps a
task's ``version``; heap entries with an older version are skipped when they
surface, which is cheaper than deleting from the middle of a heap.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ._exceptions import JobNotFoundError, TaskNotFoundError
from ._models import Job, JobStatus, Task, TaskStatus, build_model
from ._schedule import next_fixed_slot, next_relative_run

__all__ = ["JOB_COLUMNS", "TASK_COLUMNS", "JobEntry", "Registry", "TaskEntry"]

TASK_COLUMNS = (
    "id",
    "task_name",
    "args",
    "kwargs",
    "interval_seconds",
    "fixed_interval",
    "run_once",
    "status",
    "next_run_at",
)
JOB_COLUMNS = (
    "id",
    "task_id",
    "task_name",
    "status",
    "started_at",
    "ended_at",
    "duration_seconds",
    "error_message",
    "error_type",
)


def _sql_time(value: datetime) -> str:
    # UTC, in the text form SQLAlchemy's SQLite DATETIME type reads back.
    return value.isoformat(" ")


@dataclass(eq=False, slots=True)
class TaskEntry:
    """One task's definition and scheduling state."""

    id: str
    name: str
    func: Callable[..., Any]
    is_async: bool
    injected: frozenset[str]
    args_blob: bytes  # what runs get, unpickled afresh each time
    kwargs_blob: bytes
    args_copy: tuple[Any, ...]  # one unpickled copy, shown in snapshots
    kwargs_copy: dict[str, Any]
    interval: float
    fixed: bool
    run_once: bool
    progress_callback: Callable[..., Any] | None
    next_run_at: datetime
    due: float | None = None  # monotonic; None while unscheduled (paused or busy)
    due_is_slot: bool = True  # False for run-now and resume, which sit off the cadence
    anchor: float | None = None  # start of the first run on the fixed cadence
    last_slot: float | None = None
    paused: bool = False
    removed: bool = False
    consumed: bool = False  # a run-once task whose run has been created
    job: JobEntry | None = None  # its scheduled or running job, at most one
    rerun: bool = False  # run-now arrived while a job was running
    resume_at: float | None = None  # resume arrived while a job was running
    version: int = 0
    snapshot: Task | None = None

    @property
    def status(self) -> TaskStatus:
        if self.paused:
            return TaskStatus.PAUSED
        if self.job is not None and self.job.status is JobStatus.RUNNING:
            return TaskStatus.RUNNING
        return TaskStatus.ACTIVE

    def to_model(self) -> Task:
        if self.snapshot is None:
            self.snapshot = build_model(
                Task,
                {
                    "id": self.id,
                    "task_name": self.name,
                    "args": self.args_copy,
                    "kwargs": self.kwargs_copy,
                    "interval_seconds": self.interval,
                    "fixed_interval": self.fixed,
                    "run_once": self.run_once,
                    "status": self.status,
                    "next_run_at": self.next_run_at,
                },
            )
        return self.snapshot

    def to_row(self) -> tuple[Any, ...]:
        """The task as a database row, in ``TASK_COLUMNS`` order."""
        return (
            self.id,
            self.name,
            self.args_blob,
            self.kwargs_blob,
            self.interval,
            self.fixed,
            self.run_once,
            self.status.value,
            _sql_time(self.next_run_at),
        )


@dataclass(eq=False, slots=True)
class JobEntry:
    """One execution of a task."""

    id: str
    task: TaskEntry
    number: int  # creation order, 1-based
    due: float
    on_cadence: bool
    started_at: datetime
    status: JobStatus = JobStatus.SCHEDULED
    started_mono: float = 0.0
    ended_at: datetime | None = None
    ended_mono: float | None = None
    duration: float | None = None
    error: str | None = None
    error_type: str | None = None
    stop_requested: bool = False
    # Only handlers that declare ``_stop_event`` get one; an Event is not free.
    stop_event: threading.Event | None = None

    def request_stop(self) -> None:
        self.stop_requested = True
        if self.stop_event is not None:
            self.stop_event.set()

    def to_model(self) -> Job:
        return build_model(
            Job,
            {
                "id": self.id,
                "task_id": self.task.id,
                "task_name": self.task.name,
                "status": self.status,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "duration_seconds": self.duration,
                "error_message": self.error,
                "error_type": self.error_type,
            },
        )

    def to_row(self) -> tuple[Any, ...]:
        """The job as a database row, in ``JOB_COLUMNS`` order."""
        ended = self.ended_at
        return (
            self.id,
            self.task.id,
            self.task.name,
            self.status.value,
            _sql_time(self.started_at),
            None if ended is None else _sql_time(ended),
            self.duration,
            self.error,
            self.error_type,
        )


class Registry:
    """Tasks by id, jobs by id, the due heap, the ready queue and the history order."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskEntry] = {}
        self.jobs: dict[str, JobEntry] = {}
        self.ready: deque[JobEntry] = deque()  # due, waiting for a pool slot, FIFO
        self.running: dict[str, JobEntry] = {}
        self.finished: deque[JobEntry] = deque()  # in end order, for retention
        self._heap: list[tuple[float, int, int, TaskEntry]] = []
        self.jobs_created = 0
        self._seq = 0

    # -- lookups -------------------------------------------------------------

    def task(self, task_id: str) -> TaskEntry:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id) from None

    def job(self, job_id: str) -> JobEntry:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None

    # -- the heap ------------------------------------------------------------

    def schedule(self, task: TaskEntry, due: float, wall: datetime, *, on_cadence: bool) -> None:
        """Make ``task`` due at monotonic ``due`` (``wall`` is the same instant in UTC)."""
        task.version += 1
        task.due = due
        task.due_is_slot = on_cadence
        task.next_run_at = wall
        task.snapshot = None
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, task.version, task))

    def unschedule(self, task: TaskEntry) -> None:
        task.version += 1
        task.due = None
        task.snapshot = None

    def next_due(self) -> float | None:
        heap = self._heap
        while heap:
            due, _, version, task = heap[0]
            if version == task.version and task.due is not None and not task.removed:
                return due
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> Iterator[tuple[float, TaskEntry]]:
        """Yield ``(due, task)``, in due order, for every task due by ``now``; unschedule each."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, version, task = heapq.heappop(heap)
            if version == task.version and task.due is not None and not task.removed:
                task.due = None
                task.version += 1
                yield due, task

    # -- jobs ----------------------------------------------------------------

    def create_job(self, task: TaskEntry, job_id: str, due: float, wall: datetime) -> JobEntry:
        """A due task becomes a ``scheduled`` job, queued for a pool slot."""
        self.jobs_created += 1
        job = JobEntry(
            id=job_id,
            task=task,
            number=self.jobs_created,
            due=due,
            on_cadence=task.due_is_slot,
            started_at=wall,
        )
        if "_stop_event" in task.injected:
            job.stop_event = threading.Event()
        task.job = job
        task.rerun = False
        task.snapshot = None
        if task.run_once:
            task.consumed = True
        self.jobs[job_id] = job
        self.ready.append(job)
        return job

    def start_job(self, job: JobEntry, now: float, wall: datetime) -> None:
        task = job.task
        job.status = JobStatus.RUNNING
        job.started_mono = now
        job.started_at = wall
        self.running[job.id] = job
        task.snapshot = None
        if task.fixed and job.on_cadence:
            if task.anchor is None:
                task.anchor = now
                task.last_slot = now
            else:
                task.last_slot = job.due
        if task.fixed and task.anchor is not None and task.last_slot is not None:
            # Shown as next_run_at while running; settled again when the run ends.
            planned = next_fixed_slot(task.anchor, task.interval, task.last_slot, now)
            task.next_run_at = wall + timedelta(seconds=planned - now)
        elif not task.fixed:
            task.next_run_at = wall + timedelta(seconds=task.interval)

    def finish_job(
        self,
        job: JobEntry,
        status: JobStatus,
        error: str | None,
        now: float,
        wall: datetime,
        error_type: str | None = None,
    ) -> tuple[float, bool] | None:
        """Record the outcome of ``job``; return its task's next ``(due, on_cadence)``, if any.

        A job that never started (cancelled while queued) ends here too.
        """
        task = job.task
        job.status = status
        job.error = error
        job.error_type = error_type
        job.ended_at = wall
        job.ended_mono = now
        if job.id in self.running:
            del self.running[job.id]
            job.duration = max(0.0, now - job.started_mono)
        else:
            job.started_at = wall
            job.duration = 0.0
        self.finished.append(job)
        if task.job is job:
            task.job = None
        task.snapshot = None
        if task.removed or task.run_once:
            return None
        if task.rerun:  # run-now during the run: go again at once, off the cadence
            task.rerun = False
            task.resume_at = None
            return now, False
        if task.paused:
            return None
        if task.resume_at is not None:  # resumed during the run: re-anchor there
            due = max(task.resume_at, now)
            task.resume_at = None
            task.anchor = None
            return due, True
        if task.fixed and task.anchor is not None and task.last_slot is not None:
            return next_fixed_slot(task.anchor, task.interval, task.last_slot, now), True
        return next_relative_run(now, task.interval), True

    def discard_queued(self, job: JobEntry) -> None:
        """Take a ``scheduled`` job off the ready queue (it will be finished as cancelled)."""
        try:
            self.ready.remove(job)
        except ValueError:
            pass

    def remove_task(self, task: TaskEntry) -> None:
        task.removed = True
        self.unschedule(task)
        del self.tasks[task.id]

    def purge_finished(self, cutoff: float) -> int:
        """Forget finished jobs that ended at or before monotonic ``cutoff``."""
        finished = self.finished
        purged = 0
        while finished:
            job = finished[0]
            if job.ended_mono is None or job.ended_mono > cutoff:
                break
            finished.popleft()
            self.jobs.pop(job.id, None)
            purged += 1
        return purged

    def oldest_finished_end(self) -> float | None:
        return self.finished[0].ended_mono if self.finished else None
