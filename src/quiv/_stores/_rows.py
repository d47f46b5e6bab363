"""What every durable backend writes and decides the same way: task rows, claim verdicts."""

from __future__ import annotations

from typing import Any

from ._requests import Claim, Outcome, TaskState

__all__ = ["SPENT_ONE_SHOTS", "saved_task_row", "task_row", "unchanged", "verdict"]

#: Deletes the rows of run-once tasks whose one run is older than the history
#: (placeholders ``{before}``, a due time in µs, then ``{ended}``, an end time).
#: The row kept a restart that adds the task again from running it twice; it goes
#: with the run's history, so that one-off tasks do not pile up in the store.
SPENT_ONE_SHOTS = (
    "DELETE FROM quiv_tasks WHERE repeats = 0 AND next_due IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM quiv_claims c "
    "WHERE c.task_id = quiv_tasks.id AND c.due >= {before}) "
    "AND NOT EXISTS (SELECT 1 FROM quiv_jobs j WHERE j.task_id = quiv_tasks.id "
    "AND (j.ended_at IS NULL OR j.ended_at >= {ended}))"
)

#: Task fields kept elsewhere (arguments) or that are run state, not definition.
_NOT_DEFINITION = {"args", "kwargs", "status", "next_run_at"}


def task_row(task: Any) -> tuple[Any, ...]:
    """A task's stored definition, in ``TASK_STORED`` order (rendered on the loop)."""
    carried = task.portable
    return (
        task.id,
        task.name,
        carried.handler,
        carried.serializer,
        carried.args,
        carried.kwargs,
        task.to_model().model_dump_json(exclude=_NOT_DEFINITION),
        int(task.trigger.repeats and not task.run_once),
        task.policy.max_instances,
        task.job_policy.max_retries,
    )


def saved_task_row(task: Any) -> tuple[Any, ...]:
    """A task's definition, then its id (an update's parameters).

    Never its paused flag: that is run state, written only when this process
    pauses or resumes the task (a ``Replan``), so a stale flag here can never
    undo another process's pause or resume.
    """
    row = task_row(task)
    return (*row[1:], row[0])


def verdict(request: Claim, live: int, now_us: int) -> Outcome:
    """What a claim that holds its occurrence does with it, given the task's live jobs.

    ``max_instances`` jobs holding a live lease: skipped (as a process would skip
    a due time while at ``max_instances``); too late for ``misfire_grace``: held
    and recorded missed; otherwise run.
    """
    grace = request.misfire_grace
    if live >= request.max_instances:
        return Outcome.SKIPPED
    if grace is not None and now_us - request.due > grace * 1_000_000:
        return Outcome.MISSED
    return Outcome.RUN


def unchanged(state: TaskState | None, request: Claim) -> Outcome | None:
    """Why a claim cannot hold (gone, paused, moved on), or None if it may."""
    if state is None:
        return Outcome.GONE
    if state.paused:
        return Outcome.PAUSED
    if state.next_due != request.due:
        return Outcome.LOST
    return None
