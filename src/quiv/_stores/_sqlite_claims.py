"""The statements of the durable SQLite store that decide who runs what.

All of them run inside the store's ``BEGIN IMMEDIATE`` transaction, so each
check and the write it leads to happen under SQLite's write lock, and every
value is a bound parameter.

A claim is the heart of it: the occurrence of a task due at ``due`` is held by
whoever inserts the ``(task_id, due)`` row of ``quiv_claims``, in the very
transaction that moves the task's ``next_due`` past it. A process that comes
second finds ``next_due`` moved (or, failing that, the key taken) and runs
nothing; one that retries after an error decides afresh. How many jobs of a
task are live across processes is counted from the job rows holding an
unexpired lease, never kept as a number a crash could leave wrong.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from quiv._registry import JOB_COLUMNS

from ._requests import Cancel, Claim, ClaimResult, Outcome, Poll, Replan, TaskState, Watched
from ._rows import unchanged, verdict
from ._sqlite_schema import JOB_EXTRA, SELECT_JOBS, TASK_STORED

__all__ = [
    "FIRST_GENERATION",
    "adopt",
    "claim",
    "job_upsert_sql",
    "cancel",
    "read_poll",
    "replan",
    "task_update_sql",
]

#: The lease generation a job is given; taking a job over moves its row past it,
#: so a holder that lost its lease can no longer write the row (fencing).
FIRST_GENERATION = 1
_LIVE = "status IN ('scheduled', 'running') AND lease_until > ?"

_DEFINITION = ", ".join(f"{name} = excluded.{name}" for name in TASK_STORED if name != "id")
_ADOPT_SQL = (
    f"INSERT INTO quiv_tasks ({', '.join(TASK_STORED)}, next_due, paused) "
    f"VALUES ({', '.join('?' for _ in TASK_STORED)}, ?, 0) "
    f"ON CONFLICT (id) DO UPDATE SET {_DEFINITION}"
)
_UPDATE_SQL = (
    "UPDATE quiv_tasks SET "
    + ", ".join(f"{name} = ?" for name in TASK_STORED if name != "id")
    + " WHERE id = ?"
)
_JOB_WRITTEN = (*JOB_COLUMNS, *JOB_EXTRA, "lease_until")
_JOB_UPSERT_SQL = (
    f"INSERT INTO quiv_jobs ({', '.join(_JOB_WRITTEN)}) "
    f"VALUES ({', '.join('?' for _ in _JOB_WRITTEN)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in (*JOB_COLUMNS, "progress") if name != "id")
    + ", worker = COALESCE(excluded.worker, quiv_jobs.worker)"
    + ", lease_until = CASE WHEN excluded.ended_at IS NULL THEN quiv_jobs.lease_until END"
    + f" WHERE quiv_jobs.generation = {FIRST_GENERATION}"
)
_CLAIM_JOB_SQL = (
    f"INSERT INTO quiv_jobs ({', '.join((*JOB_COLUMNS, 'worker', 'lease_until', 'generation'))}) "
    f"VALUES ({', '.join('?' for _ in range(len(JOB_COLUMNS) + 3))})"
)


def task_update_sql() -> str:
    return _UPDATE_SQL


def job_upsert_sql() -> str:
    return _JOB_UPSERT_SQL


def _state(connection: sqlite3.Connection, task_id: str) -> TaskState | None:
    found = connection.execute(
        "SELECT next_due, paused FROM quiv_tasks WHERE id = ?", (task_id,)
    ).fetchone()
    return None if found is None else TaskState(found[0], bool(found[1]))


def _live_jobs(connection: sqlite3.Connection, task_id: str, now_us: int) -> int:
    found = connection.execute(
        f"SELECT COUNT(*) FROM quiv_jobs WHERE task_id = ? AND {_LIVE}", (task_id, now_us)
    ).fetchone()
    return int(found[0])


def adopt(connection: sqlite3.Connection, row: tuple[Any, ...], proposed: int | None) -> TaskState:
    """Insert the task, or keep the run state stored under its id; return that state.

    A repeating task with no next due time and no live job (a run that ended
    with its process) is planned from ``proposed`` again.
    """
    connection.execute(_ADOPT_SQL, (*row, proposed))
    task_id = row[0]
    state = _state(connection, task_id)
    assert state is not None
    repeats = bool(row[TASK_STORED.index("repeats")])
    if state.next_due is None and repeats and proposed is not None:
        import time

        if _live_jobs(connection, task_id, int(time.time() * 1_000_000)) == 0:
            connection.execute(
                "UPDATE quiv_tasks SET next_due = ? WHERE id = ?", (proposed, task_id)
            )
            state = TaskState(proposed, state.paused)
    return state


def claim(
    connection: sqlite3.Connection, request: Claim, worker: str, now_us: int, lease_us: int
) -> ClaimResult:
    """Hold the occurrence ``request`` names if nobody has, and say what to do with it."""
    state = _state(connection, request.task_id)
    refused = unchanged(state, request)
    if refused is not None:
        return ClaimResult(refused, state or TaskState(None, False))
    following = request.next_due(request.due, now_us)
    connection.execute(
        "UPDATE quiv_tasks SET next_due = ? WHERE id = ?", (following, request.task_id)
    )
    state = TaskState(following, False)
    outcome = verdict(request, _live_jobs(connection, request.task_id, now_us), now_us)
    inserted = connection.execute(
        "INSERT OR IGNORE INTO quiv_claims (task_id, due, job_id, outcome, worker) "
        "VALUES (?, ?, ?, ?, ?)",
        (request.task_id, request.due, request.job_id, outcome.value, worker),
    )
    if inserted.rowcount != 1:  # held already: never run it a second time
        return ClaimResult(Outcome.LOST, state)
    if outcome is Outcome.RUN:
        connection.execute(_CLAIM_JOB_SQL, (*request.job_row, worker, lease_us, FIRST_GENERATION))
    return ClaimResult(outcome, state)


def replan(connection: sqlite3.Connection, request: Replan) -> None:
    if not request.set_due:
        connection.execute(
            "UPDATE quiv_tasks SET paused = ? WHERE id = ?",
            (int(bool(request.paused)), request.task_id),
        )
    elif request.only_if_unplanned:
        connection.execute(
            "UPDATE quiv_tasks SET next_due = ? WHERE id = ? AND next_due IS NULL",
            (request.next_due, request.task_id),
        )
    else:
        connection.execute(
            "UPDATE quiv_tasks SET next_due = ?, paused = COALESCE(?, paused) WHERE id = ?",
            (
                request.next_due,
                None if request.paused is None else int(request.paused),
                request.task_id,
            ),
        )


def cancel(connection: sqlite3.Connection, request: Cancel) -> None:
    connection.execute(
        "UPDATE quiv_jobs SET cancel = MAX(cancel, ?) WHERE id = ? "
        "AND status IN ('scheduled', 'running')",
        (2 if request.force else 1, request.job_id),
    )


def _ended(connection: sqlite3.Connection, watched: Watched) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    if watched.jobs:
        marks = ", ".join("?" for _ in watched.jobs)
        where = f"id IN ({marks}) AND ended_at IS NOT NULL"
        rows += connection.execute(f"{SELECT_JOBS} WHERE {where}", watched.jobs).fetchall()
    if watched.tasks:
        marks = ", ".join("?" for _ in watched.tasks)
        where = f"task_id IN ({marks}) AND ended_at >= ?"
        parameters = (*watched.tasks, watched.since)
        rows += connection.execute(f"{SELECT_JOBS} WHERE {where}", parameters).fetchall()
    return rows


def read_poll(
    connection: sqlite3.Connection, known: frozenset[str], worker: str, watched: Watched
) -> Poll:
    """What other processes changed (see ``Poll``)."""
    states = {
        task_id: TaskState(next_due, bool(paused))
        for task_id, next_due, paused in connection.execute(
            "SELECT id, next_due, paused FROM quiv_tasks"
        )
    }
    foreign = [
        connection.execute(
            "SELECT id, task_name, handler, serializer, args, kwargs, definition "
            "FROM quiv_tasks WHERE id = ?",
            (task_id,),
        ).fetchone()
        for task_id in states.keys() - known
    ]
    cancels = [
        (job_id, level == 2)
        for job_id, level in connection.execute(
            "SELECT id, cancel FROM quiv_jobs WHERE worker = ? AND cancel > 0 "
            "AND status IN ('scheduled', 'running')",
            (worker,),
        )
    ]
    return Poll(states, foreign, cancels, _ended(connection, watched))
