"""Public data: the ``Task`` and ``Job`` snapshots, their statuses and the events.

``Task`` and ``Job`` are frozen pydantic models, so a FastAPI endpoint can
return them as they are (datetimes are UTC-aware and serialise with ``Z``).
They are snapshots: a later change to the scheduler never mutates one you hold.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Event", "Job", "JobStatus", "Stats", "Task", "TaskStatus", "build_model"]


class Event(str, enum.Enum):
    """Lifecycle events a listener can subscribe to with ``add_listener``.

    ``TASK_*`` listeners are called as ``callback(event, task)``;
    ``JOB_*`` listeners as ``callback(event, task, job)``.
    """

    TASK_ADDED = "task_added"
    TASK_REMOVED = "task_removed"
    TASK_PAUSED = "task_paused"
    TASK_RESUMED = "task_resumed"
    JOB_STARTED = "job_started"
    JOB_COMPLETED = "job_completed"
    JOB_FAILED = "job_failed"
    JOB_CANCELLED = "job_cancelled"
    JOB_MISSED = "job_missed"
    JOB_RETRYING = "job_retrying"

    @property
    def is_job_event(self) -> bool:
        return self.value.startswith("job_")

    def __str__(self) -> str:
        return self.value


class TaskStatus(str, enum.Enum):
    """Where a task stands: eligible to run, running now, or paused."""

    ACTIVE = "active"
    RUNNING = "running"
    PAUSED = "paused"

    def __str__(self) -> str:
        return self.value


class JobStatus(str, enum.Enum):
    """Where one execution stands.

    ``scheduled`` means due but waiting for a free slot in the pool; the final
    states are ``completed``, ``cancelled``, ``failed`` and ``missed`` (a run
    that could not start within its task's ``misfire_grace`` and never ran).
    """

    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    MISSED = "missed"

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.MISSED})


class Task(BaseModel):
    """A snapshot of one scheduled task, as returned by ``get_task``/``get_all_tasks``.

    ``trigger`` describes when it runs (``every 60s (fixed)``,
    ``cron '0 3 * * 1-5' (Europe/Berlin)``, ``at 2030-03-01T09:00:00+01:00``);
    exactly one of ``interval_seconds``, ``cron`` and ``run_at`` is set.
    ``timezone`` is the zone its wall-clock rules are read in. These fields are
    also the stored task row's columns, in this order.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    task_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    interval_seconds: float | None
    fixed_interval: bool
    run_once: bool
    status: TaskStatus
    next_run_at: datetime
    trigger: str = ""
    cron: str | None = None
    run_at: datetime | None = None
    timezone: str = "UTC"
    jitter: float = 0.0
    misfire_grace: float | None = None
    coalesce: bool = True
    max_instances: int = 1
    max_retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    timeout: float | None = None


class Job(BaseModel):
    """A snapshot of one execution of a task, as returned by ``get_job``/``get_all_jobs``.

    ``started_at`` is when the job began running (for a ``scheduled`` job, when it
    became due); ``ended_at`` and ``duration_seconds`` are set once it ends. A
    failed job has the exception's message in ``error_message`` and its class
    name in ``error_type``; a job cancelled without running says why in
    ``error_message``; one that ran past its task's ``timeout`` is failed with
    ``error_type`` ``"TimeoutError"``. ``attempt`` counts the runs of one due
    time (1, then 2 for the first retry, ...); a retry's ``retry_of`` is the id
    of the first attempt. With a durable store, ``worker`` is the process that
    ran it (``host/pid``; ``None`` if it never started, and always ``None``
    with the private store, where every job runs in this process).
    ``progress`` is, with a durable store too, the latest payload its handler
    reported through ``_progress_hook`` (progress callbacks run in the process
    that runs the job; this lets any other process show it).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    task_id: str
    task_name: str
    status: JobStatus
    started_at: datetime
    ended_at: datetime | None = None
    duration_seconds: float | None = None
    error_message: str | None = None
    error_type: str | None = None
    attempt: int = 1
    retry_of: str | None = None
    worker: str | None = None
    progress: dict[str, Any] | None = None


class Stats(BaseModel):
    """A snapshot of what the scheduler is doing, as returned by ``stats()``.

    Lags are in seconds from a job's due time to its start (``JOB_STARTED``),
    over the last ``lag_window`` starts; ``None`` before the first one.
    """

    model_config = ConfigDict(frozen=True)

    pool_size: int
    pool_in_use: int
    jobs_running: int
    jobs_queued: int
    jobs_overrunning: int
    retries_waiting: int
    # Keyed by the statuses' string values: every pydantic 2 release serialises
    # plain str keys, and a TaskStatus/JobStatus member still finds its entry.
    tasks_by_status: dict[str, int]
    jobs_ended: dict[str, int]
    start_lag_p50: float | None
    start_lag_p99: float | None
    lag_window: int
    oldest_queued_wait: float | None
    store_backlog: int


M = TypeVar("M", bound=BaseModel)


#: One "fields set" per model class, shared by every snapshot that sets every
#: field (all of quiv's do). A set of two dozen names costs about as much memory
#: as the snapshot's own values; pydantic only ever copies it, or adds names that
#: are in it already, so sharing it is safe.
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def _assemble(cls: type[M], values: dict[str, Any]) -> M:
    # What validation would build, without validating: the values come from
    # quiv's own state and already have the declared types. About twice as fast
    # as validating, which matters on the per-job path. quiv always passes
    # every field, so a dict as long as the field list holds exactly its names.
    model = cls.__new__(cls)
    every = _ALL_FIELDS.get(cls)
    if every is None:
        every = _ALL_FIELDS[cls] = set(cls.model_fields)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", every if len(values) == len(every) else set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


_set = object.__setattr__


def _validated(cls: type[M], values: dict[str, Any]) -> M:
    return cls(**values)


def _pick_builder() -> Callable[[type[M], dict[str, Any]], M]:
    """Use the fast path only if, on this pydantic, it builds exactly what validation does."""
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    sample = {
        "id": "i",
        "task_id": "t",
        "task_name": "n",
        "status": JobStatus.COMPLETED,
        "started_at": now,
        "ended_at": now,
        "duration_seconds": 1.0,
        "error_message": None,
        "error_type": None,
        "attempt": 1,
        "retry_of": None,
        "worker": "host/1",
        "progress": None,
    }
    try:
        fast, slow = _assemble(Job, dict(sample)), _validated(Job, dict(sample))
        if fast == slow and fast.model_dump_json() == slow.model_dump_json():
            return _assemble
    except Exception:  # an internal layout we do not know: validate instead
        pass
    return _validated


build_model = _pick_builder()
