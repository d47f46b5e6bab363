"""The live schedule: tasks, jobs and every state transition, in memory.

Everything here is synchronous and reads no clock: callers pass ``now`` in.
That keeps each transition atomic on the event loop (no await can interleave)
and lets the sync facade serve calls made on the loop thread itself.

Due tasks sit in a heap keyed by monotonic start time (the due time plus any
jitter); a wall-clock due time is converted when it is planned, and converted
again if the wall clock jumps. Rescheduling bumps a
task's ``version``; heap entries with an older version are skipped when they
surface, which is cheaper than deleting from the middle of a heap.
"""

from __future__ import annotations

import enum
import heapq
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from ._exceptions import JobNotFoundError, TaskNotFoundError
from ._jobpolicy import DEFAULT_JOB_POLICY, JobPolicy
from ._models import Job, JobStatus, Task, TaskStatus, build_model
from ._triggers import Moment, RunPolicy, Timeline, Trigger, zone_name

__all__ = ["JOB_COLUMNS", "TASK_COLUMNS", "JobEntry", "Registry", "TaskEntry", "job_from_row"]

#: The stored task row's columns: the public model's fields, one list for both.
TASK_COLUMNS = tuple(Task.model_fields)
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
    "attempt",
    "retry_of",
)


_JOB_STATUS = {status.value: status for status in JobStatus}  # faster than JobStatus(value)


def job_from_row(row: tuple[Any, ...]) -> Job:
    """The ``Job`` snapshot of a stored row (``JOB_COLUMNS`` order, as ``to_row`` made it)."""
    job_id, task_id, task_name, status, started, ended, duration, error, error_type = row[:9]
    return build_model(
        Job,
        {
            "id": job_id,
            "task_id": task_id,
            "task_name": task_name,
            "status": _JOB_STATUS[status],
            "started_at": datetime.fromisoformat(started),
            "ended_at": None if ended is None else datetime.fromisoformat(ended),
            "duration_seconds": duration,
            "error_message": error,
            "error_type": error_type,
            "attempt": row[9],
            "retry_of": row[10],
            "worker": row[11] if len(row) > 11 else None,
            "progress": json.loads(row[12]) if len(row) > 12 and row[12] is not None else None,
        },
    )


def _sql_time(value: datetime) -> str:
    # UTC, in the text form SQLAlchemy's SQLite DATETIME type reads back.
    return value.isoformat(" ")


_AS_IS = frozenset({str, int, float, bool, bytes, type(None)})


def _sql_value(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return _sql_time(value)
    return value


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
    given: Trigger  # as the caller gave it (a zone may still be missing)
    zone: tzinfo | None  # the task's own ``timezone``, if given
    trigger: Trigger  # ``given`` with its zone resolved: what actually runs
    timeline: Timeline  # this task's position on ``trigger``
    display_zone: str
    fixed_interval: bool
    run_once: bool
    policy: RunPolicy
    progress_callback: Callable[..., Any] | None
    next_run_at: datetime
    due: float | None = None  # monotonic start time on the heap; None while off it
    slot: Moment | None = None  # the due time of that heap entry, without jitter
    slot_jitter: float = 0.0
    due_is_slot: bool = True  # False for run-now, which sits off the cadence
    paused: bool = False
    removed: bool = False
    consumed: bool = False  # a one-shot task whose run has been created
    queued: JobEntry | None = None  # its job waiting for a pool slot, at most one
    running: list[JobEntry] = field(default_factory=list)
    owed: list[Moment] = field(default_factory=list)  # overdue runs still to run (no coalesce)
    rerun: bool = False  # run-now arrived while the task was at max_instances
    resume_at: float | None = None  # resume arrived while a job was running
    version: int = 0
    snapshot: Task | None = None
    watched: bool = False  # read at least once: its snapshot is kept made (see _snapshots)
    job_policy: JobPolicy = DEFAULT_JOB_POLICY  # frozen, so one shared default is safe
    #: Retries not started yet: waiting out their backoff, or queued for the pool.
    retries: list[JobEntry] = field(default_factory=list)
    #: With a durable store: the handler's import path and the stored arguments.
    portable: Any = None

    @property
    def one_shot(self) -> bool:
        """Removed after its run: ``run_once``, or a trigger that fires once."""
        return self.run_once or not self.trigger.repeats

    @property
    def jobs(self) -> list[JobEntry]:
        """Its jobs that have not ended: the queued one first, then the running ones."""
        return ([self.queued] if self.queued is not None else []) + self.running

    @property
    def status(self) -> TaskStatus:
        if self.paused:
            return TaskStatus.PAUSED
        if self.running:
            return TaskStatus.RUNNING
        return TaskStatus.ACTIVE

    def values(self) -> dict[str, Any]:
        """The task's public fields, in ``TASK_COLUMNS`` order (a test holds it to that)."""
        policy, job_policy, rule = self.policy, self.job_policy, self.trigger.fields()
        return {
            "id": self.id,
            "task_name": self.name,
            "args": self.args_copy,
            "kwargs": self.kwargs_copy,
            "interval_seconds": rule["interval_seconds"],
            "fixed_interval": rule.get("fixed_interval", self.fixed_interval),
            "run_once": self.one_shot,
            "status": self.status,
            "next_run_at": self.next_run_at,
            "trigger": self.trigger.describe(),
            "cron": rule["cron"],
            "run_at": rule["run_at"],
            "timezone": self.display_zone,
            "jitter": policy.jitter,
            "misfire_grace": policy.misfire_grace,
            "coalesce": policy.coalesce,
            "max_instances": policy.max_instances,
            "max_retries": job_policy.max_retries,
            "retry_backoff": job_policy.retry_backoff,
            "retry_backoff_max": job_policy.retry_backoff_max,
            "timeout": job_policy.timeout,
        }

    def to_model(self) -> Task:
        if self.snapshot is None:
            self.snapshot = build_model(Task, self.values())
        return self.snapshot

    def to_row(self) -> tuple[Any, ...]:
        """The task as a database row, in ``TASK_COLUMNS`` order (arguments pickled)."""
        # From the snapshot if there is one: cheaper than gathering the values again.
        values = self.values() if self.snapshot is None else dict(self.snapshot.__dict__)
        values["args"], values["kwargs"] = self.args_blob, self.kwargs_blob
        # Both dicts are in column order; most values go into the row as they are.
        return tuple([v if type(v) in _AS_IS else _sql_value(v) for v in values.values()])


def resolved_zone_name(trigger: Trigger, zone: tzinfo | None, default: tzinfo) -> str:
    """The zone a task's times are read in, for ``Task.timezone``."""
    own = getattr(trigger, "timezone", None)
    chosen = own if isinstance(own, tzinfo) else zone if zone is not None else default
    return zone_name(chosen)


@dataclass(eq=False, slots=True)
class JobEntry:
    """One execution of a task (or, with status ``missed``, one run that never started)."""

    id: str
    task: TaskEntry
    number: int  # creation order, 1-based
    due: float  # monotonic start time it was queued for (the due time plus jitter)
    slot: Moment  # the due time it stands for, without jitter
    on_cadence: bool
    started_at: datetime
    jitter: float = 0.0
    status: JobStatus = JobStatus.SCHEDULED
    started_mono: float = 0.0
    ended_at: datetime | None = None
    ended_mono: float | None = None
    duration: float | None = None
    error: str | None = None
    error_type: str | None = None
    stop_requested: bool = False
    stored: bool = False  # final, and its final row is committed: memory may let it go
    # Only handlers that declare ``_stop_event`` get one; an Event is not free.
    stop_event: threading.Event | None = None
    attempt: int = 1
    retry_of: str | None = None
    #: While a retry waits out its backoff: the monotonic time it is due, and
    #: which of its timer entries is current (older ones are stale).
    retry_due: float | None = None
    retry_timer: int = 0
    timed_out: bool = False  # ran past its task's timeout (its stop event is set)
    #: Why the engine cut this async job off ("timeout", "force"); None if it did not.
    cut: str | None = None
    #: The asyncio task running this async job's handler, while it runs.
    handle: Any = None
    worker: str | None = None  # ``host/pid`` of the process that ran it
    progress: dict[str, Any] | None = None  # its latest progress payload

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
                "attempt": self.attempt,
                "retry_of": self.retry_of,
                "worker": self.worker,
                "progress": self.progress,
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
            self.attempt,
            self.retry_of,
        )


class Registry:
    """Tasks by id, jobs by id, the due heap, the ready queue and the history order.

    ``jobs`` holds the live jobs and the recently finished ones; older finished
    jobs are let go once the store holds their final row (:meth:`release_stored`)
    and only the span of their end times is kept, to time their purge.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, TaskEntry] = {}
        self.jobs: dict[str, JobEntry] = {}
        self.ready: deque[JobEntry] = deque()  # due, waiting for a pool slot, FIFO
        self.running: dict[str, JobEntry] = {}
        self.finished: deque[JobEntry] = deque()  # in memory, in end order, for retention
        #: End times (monotonic) of the jobs held only by the store, as ``[first, last]``
        #: spans in end order, each at most a purge granularity long.
        self.stored_ends: deque[list[float]] = deque()
        #: How many finished jobs memory has let go of (``release_stored``), ever.
        self.released = 0
        self._heap: list[tuple[float, int, int, TaskEntry]] = []
        self.jobs_created = 0
        self._seq = 0
        #: Tasks whose snapshot a read will want, to be made ahead (see ``_snapshots``).
        self.unsnapped: dict[str, TaskEntry] = {}
        self.on_unsnapped: Callable[[], None] | None = None

    # -- snapshots -----------------------------------------------------------

    def stale(self, task: TaskEntry) -> None:
        """``task`` changed: drop its snapshot, and have it made again if it is read."""
        task.snapshot = None
        if task.watched:
            self.want_snapshot(task)

    def want_snapshot(self, task: TaskEntry) -> None:
        if not self.unsnapped and self.on_unsnapped is not None:
            self.on_unsnapped()
        self.unsnapped[task.id] = task

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

    def schedule(
        self, task: TaskEntry, slot: Moment, *, jitter: float = 0.0, on_cadence: bool = True
    ) -> None:
        """Make ``task`` due at ``slot``; its job is queued ``jitter`` seconds later."""
        task.version += 1
        task.due = slot.mono + jitter
        task.slot = slot
        task.slot_jitter = jitter
        task.due_is_slot = on_cadence
        task.next_run_at = slot.wall
        self.stale(task)
        self._seq += 1
        heapq.heappush(self._heap, (task.due, self._seq, task.version, task))

    def unschedule(self, task: TaskEntry) -> None:
        task.version += 1
        task.due = None
        task.slot = None
        self.stale(task)

    def scheduled(self) -> Iterator[TaskEntry]:
        """Every task that is on the heap now."""
        return (task for task in self.tasks.values() if task.due is not None)

    def next_due(self) -> float | None:
        heap = self._heap
        while heap:
            due, _, version, task = heap[0]
            if version == task.version and task.due is not None and not task.removed:
                return due
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> Iterator[TaskEntry]:
        """Yield, in due order, every task due by ``now``, taken off the heap (``slot`` kept)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, version, task = heapq.heappop(heap)
            if version == task.version and task.due is not None and not task.removed:
                task.due = None
                task.version += 1
                yield task

    # -- jobs ----------------------------------------------------------------

    def _new_job(
        self, task: TaskEntry, job_id: str, slot: Moment, due: float, on_cadence: bool
    ) -> JobEntry:
        self.jobs_created += 1
        job = JobEntry(
            id=job_id,
            task=task,
            number=self.jobs_created,
            due=due,
            slot=slot,
            on_cadence=on_cadence,
            started_at=slot.wall,
        )
        self.jobs[job_id] = job
        self.stale(task)
        return job

    def create_job(self, task: TaskEntry, job_id: str, now: Moment) -> JobEntry:
        """The task just taken off the heap becomes a ``scheduled`` job, queued for the pool."""
        assert task.slot is not None
        slot = task.slot
        job = self._new_job(task, job_id, slot, slot.mono + task.slot_jitter, task.due_is_slot)
        job.jitter = task.slot_jitter
        job.started_at = now.wall
        task.slot = None
        if "_stop_event" in task.injected:
            job.stop_event = threading.Event()
        task.queued = job
        if task.due_is_slot:
            task.timeline.advance(slot)
        if task.one_shot:
            task.consumed = True
        self.ready.append(job)
        return job

    def create_retry(
        self, failed: JobEntry, job_id: str, due: Moment, *, waiting: bool
    ) -> JobEntry:
        """A ``scheduled`` retry of ``failed``, due at ``due``.

        It waits out its backoff (``waiting``, see ``retry_due``) or, if due
        already, is queued for the pool at once.
        """
        task = failed.task
        job = self._new_job(task, job_id, due, due.mono, False)
        job.attempt = failed.attempt + 1
        job.retry_of = failed.retry_of or failed.id
        if failed.stop_event is not None:
            job.stop_event = threading.Event()
        task.retries.append(job)
        if waiting:
            job.retry_due = due.mono
        else:
            self.ready.append(job)
        return job

    def record_missed(self, task: TaskEntry, job_id: str, slot: Moment, now: Moment) -> JobEntry:
        """A run due at ``slot`` that could not start within grace: a ``missed`` record."""
        job = self._new_job(task, job_id, slot, slot.mono, True)
        self._end(job, JobStatus.MISSED, missed_reason(task, slot, now), now)
        return job

    def start_job(self, job: JobEntry, now: Moment) -> None:
        task = job.task
        job.status = JobStatus.RUNNING
        job.started_mono = now.mono
        job.started_at = now.wall
        self.running[job.id] = job
        if task.queued is job:
            task.queued = None
        elif job.retry_of is not None:
            task.retries.remove(job)
        task.running.append(job)
        self.stale(task)
        if job.on_cadence:
            # A first run anchors a grid on its due time: its jitter is not the grid's.
            jitter = job.jitter
            anchor = now if not jitter else Moment(now.mono - jitter, now.wall)
            task.timeline.started(job.slot, anchor)

    def finish_job(
        self,
        job: JobEntry,
        status: JobStatus,
        error: str | None,
        now: Moment,
        error_type: str | None = None,
    ) -> None:
        """Record the outcome of ``job``; one that never started (cancelled, missed) ends here."""
        task = job.task
        ran = job.id in self.running
        if ran:
            del self.running[job.id]
            task.running.remove(job)
        if task.queued is job:
            task.queued = None
        elif not ran and job.retry_of is not None:
            task.retries.remove(job)
            job.retry_due = None
        self._end(job, status, error, now, ran, error_type)

    def _end(
        self,
        job: JobEntry,
        status: JobStatus,
        error: str | None,
        now: Moment,
        ran: bool = False,
        error_type: str | None = None,
    ) -> None:
        job.error = error
        job.error_type = error_type
        job.ended_at = now.wall
        job.ended_mono = now.mono
        if ran:
            job.duration = max(0.0, now.mono - job.started_mono)
        else:
            job.started_at = job.slot.wall if status is JobStatus.MISSED else now.wall
            job.duration = 0.0
        # Last: another thread that sees a final status may read the whole record
        # (see ``Engine.ended_job_model``), and a final record never changes again.
        job.status = status
        self.finished.append(job)
        self.stale(job.task)

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
        """Forget finished jobs that ended at or before monotonic ``cutoff``.

        Returns how many were in memory; those only in the store are deleted
        there by the caller, and only their spans are updated here.
        """
        finished = self.finished
        purged = 0
        while finished:
            job = finished[0]
            if job.ended_mono is None or job.ended_mono > cutoff:
                break
            finished.popleft()
            self.jobs.pop(job.id, None)
            purged += 1
        spans = self.stored_ends
        while spans and spans[0][1] <= cutoff:
            spans.popleft()
        if spans and spans[0][0] <= cutoff:
            spans[0][0] = spans[0][1]  # partly purged: the rest goes at its last end
        return purged

    def release_stored(self, keep: int, granularity: float) -> int:
        """Let go of the oldest finished jobs beyond ``keep`` whose final row is stored.

        They go in end order; a job whose row is not stored yet stops the release
        (the writer catches up, or memory keeps the job). Returns how many went.
        """
        finished, jobs, spans = self.finished, self.jobs, self.stored_ends
        released = 0
        while len(finished) > keep and finished[0].stored:
            job = finished.popleft()
            del jobs[job.id]
            released += 1
            self.released += 1
            end = job.ended_mono
            assert end is not None
            if spans and end - spans[-1][0] <= granularity:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([end, end])
        return released

    def oldest_finished_end(self) -> float | None:
        """The earliest end time in the history, in memory or only in the store."""
        memory = self.finished[0].ended_mono if self.finished else None
        if not self.stored_ends:
            return memory
        stored = self.stored_ends[0][0]
        return stored if memory is None else min(memory, stored)


def missed_reason(task: TaskEntry, slot: Moment, now: Moment) -> str:
    late = task.timeline.late_by(slot, now)
    return (
        f"missed: it could not start within misfire_grace={task.policy.misfire_grace:g}s "
        f"of its due time {slot.wall.isoformat()} (late by {late:.3f}s)"
    )
