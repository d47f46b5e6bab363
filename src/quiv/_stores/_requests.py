"""What the engine asks a durable store to do in the background, and the answers.

Each request is decided inside one write transaction of the store and answered
on the loop once that transaction has committed, so an answer the engine acts
on is always one the database holds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Abandoned",
    "Adoption",
    "Cancel",
    "Claim",
    "ClaimResult",
    "Outcome",
    "Poll",
    "Replan",
    "TaskState",
    "Watched",
]


class Outcome(enum.Enum):
    """What became of one claim of a due occurrence."""

    RUN = "run"  # this process holds the occurrence: it runs it
    LOST = "lost"  # another process holds it (or moved the schedule on)
    SKIPPED = "skipped"  # max_instances jobs of the task are live across processes
    MISSED = "missed"  # held, but too late for misfire_grace: recorded missed here
    PAUSED = "paused"  # the task is paused in the store
    GONE = "gone"  # the task was removed from the store


@dataclass(frozen=True, slots=True)
class TaskState:
    """A task's run state as the store holds it (due times in µs since the epoch)."""

    next_due: int | None
    paused: bool


@dataclass(frozen=True, slots=True)
class ClaimResult:
    outcome: Outcome
    state: TaskState


@dataclass(slots=True)
class Adoption:
    """Insert a task (or keep the stored run state of one with this id) and read it back."""

    task: Any  # the registry's TaskEntry
    proposed: int | None  # the first due time computed here, for a task new to the store
    done: Callable[[TaskState], None]


@dataclass(slots=True)
class Claim:
    """Take the occurrence of ``task_id`` due at ``due``, if it is still unheld."""

    task_id: str
    due: int
    job_id: str
    job_row: tuple[Any, ...]  # the job's row should it be run here (JOB_COLUMNS order)
    max_instances: int
    misfire_grace: float | None
    #: The next due time once this one is held, from the due time and now (µs).
    next_due: Callable[[int, int], int | None]
    done: Callable[[ClaimResult], None]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Ask whichever process runs ``job_id`` to stop it (``force``: at once)."""

    job_id: str
    force: bool


@dataclass(frozen=True, slots=True)
class Watched:
    """What ``wait_for_job``/``wait_for_task`` wait for in other processes.

    ``jobs``: ids of jobs another process runs; ``tasks``: ids of tasks whose
    next end anywhere is awaited since ``since`` (the history's text form).
    """

    jobs: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    since: str = ""


@dataclass(frozen=True, slots=True)
class Poll:
    """What other processes changed, read every poll period.

    ``states``: every stored task's run state; ``foreign``: the rows (``id,
    task_name, handler, serializer, args, kwargs, definition``) of tasks this
    process does not know; ``cancels``: ``(job id, force)`` of this process's
    jobs that another process asked to stop; ``ended``: the rows (``SELECT_JOBS``)
    of the watched jobs that have ended, and of the watched tasks' jobs that
    ended since the watch began.
    """

    states: dict[str, TaskState]
    foreign: list[tuple[Any, ...]]
    cancels: list[tuple[str, bool]]
    ended: list[tuple[Any, ...]]


@dataclass(slots=True)
class Replan:
    """Set a task's next due time (and paused flag) in the store."""

    task_id: str
    next_due: int | None
    paused: bool | None = None  # None: leave it
    only_if_unplanned: bool = False  # only where no next due time is stored
    set_due: bool = True  # False: change ``paused`` only


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A job whose worker stopped: recorded failed, perhaps to be retried."""

    job_id: str
    task_id: str
    attempt: int
    retry_of: str | None
    worker: str | None
