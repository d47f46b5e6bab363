"""The PostgreSQL store's transaction: the same decisions as SQLite's, in PostgreSQL.

The task rows a round touches are locked first, in id order, with one
``SELECT ... FOR UPDATE`` (so two processes' rounds never deadlock); a claim
then reads the task's stored next due time under that lock, and the claim row
goes in with ``ON CONFLICT DO NOTHING``: whoever inserts it holds the
occurrence. A round that changed what other processes must know (a task
added, paused, resumed, removed or replanned, a cancel request) ends with a
``NOTIFY``, delivered at commit, so they look at once instead of at their next
poll. Every value is a bound parameter.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from quiv._registry import JOB_COLUMNS

from ._durable import Answers, Batch
from ._requests import Cancel, Claim, ClaimResult, Outcome, Poll, Replan, TaskState
from ._rows import unchanged, verdict
from ._sqlite_schema import JOB_EXTRA, TASK_STORED

__all__ = ["CHANNEL", "transaction"]

#: The ``LISTEN``/``NOTIFY`` channel on which processes wake each other.
CHANNEL = "quiv_changes"
_LIVE = "status IN ('scheduled', 'running') AND lease_until > :now"

_ADOPT = text(
    f"INSERT INTO quiv_tasks ({', '.join(TASK_STORED)}, next_due, paused) "
    f"VALUES ({', '.join(f':{name}' for name in TASK_STORED)}, :proposed, 0) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in TASK_STORED if name != "id")
)
_UPDATE = text(
    "UPDATE quiv_tasks SET "
    + ", ".join(f"{name} = :{name}" for name in TASK_STORED if name != "id")
    + " WHERE id = :id"
)
_JOB_WRITTEN = (*JOB_COLUMNS, *JOB_EXTRA, "lease_until")
_JOB_UPSERT = text(
    f"INSERT INTO quiv_jobs ({', '.join(_JOB_WRITTEN)}) "
    f"VALUES ({', '.join(f':{name}' for name in _JOB_WRITTEN)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in (*JOB_COLUMNS, "progress") if name != "id")
    + ", worker = COALESCE(excluded.worker, quiv_jobs.worker)"
    + ", lease_until = CASE WHEN excluded.ended_at IS NULL THEN quiv_jobs.lease_until END"
    + " WHERE quiv_jobs.generation = 1"
)
_CLAIM_JOB = text(
    f"INSERT INTO quiv_jobs ({', '.join((*JOB_COLUMNS, 'worker', 'lease_until'))}) "
    f"VALUES ({', '.join(f':{name}' for name in (*JOB_COLUMNS, 'worker', 'lease_until'))})"
)


def _task_values(row: tuple[Any, ...]) -> dict[str, Any]:
    values = dict(zip(TASK_STORED, row, strict=True))
    for name in ("args", "kwargs"):  # JSON text is kept as its UTF-8 bytes
        if isinstance(values[name], str):
            values[name] = values[name].encode()
    return values


async def _state(connection: AsyncConnection, task_id: str) -> TaskState | None:
    found = (
        await connection.execute(
            text("SELECT next_due, paused FROM quiv_tasks WHERE id = :id"), {"id": task_id}
        )
    ).first()
    return None if found is None else TaskState(found[0], bool(found[1]))


async def _live(connection: AsyncConnection, task_id: str, now_us: int) -> int:
    found = await connection.execute(
        text(f"SELECT COUNT(*) FROM quiv_jobs WHERE task_id = :task AND {_LIVE}"),
        {"task": task_id, "now": now_us},
    )
    return int(found.scalar_one())


async def _adopt(
    connection: AsyncConnection, row: tuple[Any, ...], proposed: int | None
) -> TaskState:
    await connection.execute(_ADOPT, {**_task_values(row), "proposed": proposed})
    state = await _state(connection, row[0])
    assert state is not None
    repeats = bool(row[TASK_STORED.index("repeats")])
    if state.next_due is None and repeats and proposed is not None:
        import time

        if await _live(connection, row[0], int(time.time() * 1_000_000)) == 0:
            await connection.execute(
                text("UPDATE quiv_tasks SET next_due = :due WHERE id = :id"),
                {"due": proposed, "id": row[0]},
            )
            state = TaskState(proposed, state.paused)
    return state


async def _claim(connection: AsyncConnection, request: Claim, batch: Batch) -> ClaimResult:
    state = await _state(connection, request.task_id)
    refused = unchanged(state, request)
    if refused is not None:
        return ClaimResult(refused, state or TaskState(None, False))
    following = request.next_due(request.due, batch.now_us)
    await connection.execute(
        text("UPDATE quiv_tasks SET next_due = :due WHERE id = :id"),
        {"due": following, "id": request.task_id},
    )
    state = TaskState(following, False)
    outcome = verdict(request, await _live(connection, request.task_id, batch.now_us), batch.now_us)
    inserted = await connection.execute(
        text(
            "INSERT INTO quiv_claims (task_id, due, job_id, outcome, worker) "
            "VALUES (:task, :due, :job, :outcome, :worker) ON CONFLICT DO NOTHING"
        ),
        {
            "task": request.task_id,
            "due": request.due,
            "job": request.job_id,
            "outcome": outcome.value,
            "worker": batch.worker,
        },
    )
    if inserted.rowcount != 1:  # held already: never run it a second time
        return ClaimResult(Outcome.LOST, state)
    if outcome is Outcome.RUN:
        values = dict(zip(JOB_COLUMNS, request.job_row, strict=True))
        await connection.execute(
            _CLAIM_JOB, {**values, "worker": batch.worker, "lease_until": batch.lease_us}
        )
    return ClaimResult(outcome, state)


async def _replan(connection: AsyncConnection, request: Replan) -> None:
    if not request.set_due:
        sql = "UPDATE quiv_tasks SET paused = :paused WHERE id = :id"
        await connection.execute(
            text(sql), {"paused": int(bool(request.paused)), "id": request.task_id}
        )
        return
    if request.only_if_unplanned:
        sql = "UPDATE quiv_tasks SET next_due = :due WHERE id = :id AND next_due IS NULL"
        await connection.execute(text(sql), {"due": request.next_due, "id": request.task_id})
        return
    await connection.execute(
        text(
            "UPDATE quiv_tasks SET next_due = :due, paused = COALESCE(:paused, paused) "
            "WHERE id = :id"
        ),
        {
            "due": request.next_due,
            "paused": None if request.paused is None else int(request.paused),
            "id": request.task_id,
        },
    )


async def _cancel(connection: AsyncConnection, request: Cancel) -> None:
    await connection.execute(
        text(
            "UPDATE quiv_jobs SET cancel = GREATEST(cancel, :level) WHERE id = :id "
            "AND status IN ('scheduled', 'running')"
        ),
        {"level": 2 if request.force else 1, "id": request.job_id},
    )


async def _poll(connection: AsyncConnection, known: frozenset[str], worker: str) -> Poll:
    rows = await connection.execute(text("SELECT id, next_due, paused FROM quiv_tasks"))
    states = {task_id: TaskState(due, bool(paused)) for task_id, due, paused in rows}
    unknown = sorted(states.keys() - known)
    foreign: list[tuple[Any, ...]] = []
    if unknown:
        found = await connection.execute(
            text(
                "SELECT id, task_name, handler, serializer, args, kwargs, definition "
                "FROM quiv_tasks WHERE id = ANY(CAST(:ids AS TEXT[]))"
            ),
            {"ids": unknown},
        )
        foreign = [tuple(row) for row in found]
    cancels = await connection.execute(
        text(
            "SELECT id, cancel FROM quiv_jobs WHERE worker = :worker AND cancel > 0 "
            "AND status IN ('scheduled', 'running')"
        ),
        {"worker": worker},
    )
    return Poll(states, foreign, [(job_id, level == 2) for job_id, level in cancels])


async def transaction(connection: AsyncConnection, batch: Batch) -> Answers:
    """Everything ``batch`` asks, in the open transaction of ``connection``."""
    touched = {request.task.id for request, _ in batch.adoptions}
    touched.update(request.task_id for request in batch.claims)
    touched.update(request.task_id for request in batch.replans)
    touched.update(row[-1] for row in batch.task_rows)
    touched.update(batch.deleted)
    if touched:  # every row this round writes, locked in one order by every process
        await connection.execute(
            text(
                "SELECT id FROM quiv_tasks WHERE id = ANY(CAST(:ids AS TEXT[])) "
                "ORDER BY id FOR UPDATE"
            ),
            {"ids": sorted(touched)},
        )
    adopted = [await _adopt(connection, row, ask.proposed) for ask, row in batch.adoptions]
    if batch.job_rows:  # before claims: a finished job frees its slot for them
        await connection.execute(
            _JOB_UPSERT, [dict(zip(_JOB_WRITTEN, row, strict=True)) for row in batch.job_rows]
        )
    results = [await _claim(connection, ask, batch) for ask in batch.claims]
    for request in batch.replans:
        await _replan(connection, request)
    for wish in batch.cancels:
        await _cancel(connection, wish)
    if batch.deleted:
        ids = {"ids": batch.deleted}
        await connection.execute(
            text("DELETE FROM quiv_tasks WHERE id = ANY(CAST(:ids AS TEXT[]))"), ids
        )
        await connection.execute(
            text("DELETE FROM quiv_claims WHERE task_id = ANY(CAST(:ids AS TEXT[]))"), ids
        )
    if batch.task_rows:
        await connection.execute(
            _UPDATE,
            [_task_values((row[-1], *row[:-1])) for row in batch.task_rows],
        )
    if batch.purge is not None:
        await connection.execute(
            text("DELETE FROM quiv_jobs WHERE ended_at < :ended"),
            {"ended": batch.purge.isoformat(" ")},
        )
        # Claims that old guard nothing: next_due has long moved past them.
        await connection.execute(
            text("DELETE FROM quiv_claims WHERE due < :before"),
            {"before": int(batch.purge.timestamp() * 1_000_000)},
        )
    if batch.adoptions or batch.replans or batch.cancels or batch.deleted:
        await connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
    known = batch.known
    polled = None if known is None else await _poll(connection, known, batch.worker)
    return adopted, results, polled
