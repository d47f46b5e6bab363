"""The PostgreSQL store's transaction: the same decisions as SQLite's, in PostgreSQL.

The task rows a round touches are locked first, in id order, with one
``SELECT ... FOR UPDATE`` that also reads their run state (so two processes'
rounds never deadlock). The round's claims are then decided together, in a
few set-based statements whatever their number (``_claims``), because the
locks are held as long as the transaction lasts: whoever inserts an
occurrence's claim row (``ON CONFLICT DO NOTHING``) holds it. A round that
changed what other processes must know (a task added, paused, resumed,
removed or replanned, a cancel request) ends with a ``NOTIFY``, delivered at
commit, so they look at once instead of at their next poll. Every value is
a bound parameter.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from quiv._registry import JOB_COLUMNS

from ._durable import Answers, Batch
from ._requests import Cancel, Claim, ClaimResult, Outcome, Poll, Replan, TaskState, Watched
from ._rows import SPENT_ONE_SHOTS, unchanged, verdict
from ._sqlite_schema import JOB_EXTRA, SELECT_JOBS, TASK_STORED

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


def _waves(claims: list[Claim]) -> list[list[tuple[int, Claim]]]:
    """``claims`` (numbered) in waves holding at most one claim of each task, in order.

    A wave is decided with a few set-based statements; a second occurrence of
    a task waits for the next wave, so it sees what the first one did.
    """
    waves: list[list[tuple[int, Claim]]] = []
    depth: dict[str, int] = {}
    for index, request in enumerate(claims):
        level = depth.get(request.task_id, 0)
        depth[request.task_id] = level + 1
        if level == len(waves):
            waves.append([])
        waves[level].append((index, request))
    return waves


async def _live_counts(
    connection: AsyncConnection, task_ids: list[str], now_us: int
) -> dict[str, int]:
    found = await connection.execute(
        text(
            "SELECT task_id, COUNT(*) FROM quiv_jobs "
            f"WHERE task_id = ANY(CAST(:ids AS TEXT[])) AND {_LIVE} GROUP BY task_id"
        ),
        {"ids": task_ids, "now": now_us},
    )
    return {task_id: int(count) for task_id, count in found}


async def _claims(
    connection: AsyncConnection,
    claims: list[Claim],
    states: dict[str, TaskState],
    batch: Batch,
) -> list[ClaimResult]:
    """Decide every claim of the round with a few statements a wave, not five a claim.

    The task rows are locked and their states read already (``states``); each
    wave moves the next due times on, inserts its claim rows (those already
    held come back missing from ``RETURNING``: lost, never run twice) and the
    job rows of the claims that run here.
    """
    results: list[ClaimResult | None] = [None] * len(claims)
    claimed = sorted({request.task_id for request in claims})
    live = await _live_counts(connection, claimed, batch.now_us) if claims else {}
    for wave in _waves(claims):
        held: list[tuple[int, Claim, Outcome]] = []
        for index, request in wave:
            state = states.get(request.task_id)
            refused = unchanged(state, request)
            if refused is not None:
                results[index] = ClaimResult(refused, state or TaskState(None, False))
                continue
            following = request.next_due(request.due, batch.now_us)
            states[request.task_id] = TaskState(following, False)
            outcome = verdict(request, live.get(request.task_id, 0), batch.now_us)
            held.append((index, request, outcome))
        if not held:
            continue
        await connection.execute(
            text(
                "UPDATE quiv_tasks AS t SET next_due = v.due FROM unnest("
                "CAST(:ids AS TEXT[]), CAST(:dues AS BIGINT[])) AS v(id, due) WHERE t.id = v.id"
            ),
            {
                "ids": [request.task_id for _, request, _ in held],
                "dues": [states[request.task_id].next_due for _, request, _ in held],
            },
        )
        inserted = await connection.execute(
            text(
                "INSERT INTO quiv_claims (task_id, due, job_id, outcome, worker) "
                "SELECT v.task_id, v.due, v.job_id, v.outcome, :worker FROM unnest("
                "CAST(:tasks AS TEXT[]), CAST(:dues AS BIGINT[]), CAST(:jobs AS TEXT[]), "
                "CAST(:outcomes AS TEXT[])) AS v(task_id, due, job_id, outcome) "
                "ON CONFLICT DO NOTHING RETURNING task_id"
            ),
            {
                "tasks": [request.task_id for _, request, _ in held],
                "dues": [request.due for _, request, _ in held],
                "jobs": [request.job_id for _, request, _ in held],
                "outcomes": [outcome.value for _, _, outcome in held],
                "worker": batch.worker,
            },
        )
        won = {task_id for (task_id,) in inserted}
        jobs: list[dict[str, Any]] = []
        for index, request, outcome in held:
            state = states[request.task_id]
            if request.task_id not in won:  # held already: never run it a second time
                results[index] = ClaimResult(Outcome.LOST, state)
                continue
            results[index] = ClaimResult(outcome, state)
            if outcome is Outcome.RUN:
                live[request.task_id] = live.get(request.task_id, 0) + 1
                values = dict(zip(JOB_COLUMNS, request.job_row, strict=True))
                jobs.append({**values, "worker": batch.worker, "lease_until": batch.lease_us})
        if jobs:
            await connection.execute(_CLAIM_JOB, jobs)
    decided = [result for result in results if result is not None]
    assert len(decided) == len(claims), "every claim is decided"
    return decided


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


async def _ended(connection: AsyncConnection, watched: Watched) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    if watched.jobs:
        where = "id = ANY(CAST(:jobs AS TEXT[])) AND ended_at IS NOT NULL"
        found = await connection.execute(
            text(f"{SELECT_JOBS} WHERE {where}"), {"jobs": list(watched.jobs)}
        )
        rows += [tuple(row) for row in found]
    if watched.tasks:
        where = "task_id = ANY(CAST(:tasks AS TEXT[])) AND ended_at >= :since"
        found = await connection.execute(
            text(f"{SELECT_JOBS} WHERE {where}"),
            {"tasks": list(watched.tasks), "since": watched.since},
        )
        rows += [tuple(row) for row in found]
    return rows


async def _poll(
    connection: AsyncConnection, known: frozenset[str], worker: str, watched: Watched
) -> Poll:
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
    stops = [(job_id, level == 2) for job_id, level in cancels]
    return Poll(states, foreign, stops, await _ended(connection, watched))


async def transaction(connection: AsyncConnection, batch: Batch) -> Answers:
    """Everything ``batch`` asks, in the open transaction of ``connection``."""
    touched = {request.task.id for request, _ in batch.adoptions}
    touched.update(request.task_id for request in batch.claims)
    touched.update(request.task_id for request in batch.replans)
    touched.update(row[-1] for row in batch.task_rows)
    touched.update(batch.deleted)
    states: dict[str, TaskState] = {}
    if touched:  # every row this round writes, locked in one order by every process
        locked = await connection.execute(
            text(
                "SELECT id, next_due, paused FROM quiv_tasks WHERE id = ANY(CAST(:ids AS TEXT[])) "
                "ORDER BY id FOR UPDATE"
            ),
            {"ids": sorted(touched)},
        )
        states = {task_id: TaskState(due, bool(paused)) for task_id, due, paused in locked}
    adopted = [await _adopt(connection, row, ask.proposed) for ask, row in batch.adoptions]
    for (ask, _), state in zip(batch.adoptions, adopted, strict=True):
        states[ask.task.id] = state
    if batch.job_rows:  # before claims: a finished job frees its slot for them
        await connection.execute(
            _JOB_UPSERT, [dict(zip(_JOB_WRITTEN, row, strict=True)) for row in batch.job_rows]
        )
    results = await _claims(connection, batch.claims, states, batch)
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
        cutoff = {
            "ended": batch.purge.isoformat(" "),
            "before": int(batch.purge.timestamp() * 1_000_000),
        }
        spent = SPENT_ONE_SHOTS.format(before=":before", ended=":ended")
        await connection.execute(text(spent), cutoff)
        await connection.execute(text("DELETE FROM quiv_jobs WHERE ended_at < :ended"), cutoff)
        # Claims that old guard nothing: next_due has long moved past them.
        await connection.execute(text("DELETE FROM quiv_claims WHERE due < :before"), cutoff)
    if batch.adoptions or batch.replans or batch.cancels or batch.deleted:
        await connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
    known = batch.known
    polled = None if known is None else await _poll(connection, known, batch.worker, batch.watched)
    return adopted, results, polled
