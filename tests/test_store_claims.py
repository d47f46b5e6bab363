"""One round's claims, decided by each durable backend straight from a ``Batch``.

The engine never sends some of these mixes on purpose (two occurrences of one
task, a stale due time beside a fresh one), but a round may hold any of them,
and both backends must answer each claim as if it had been decided alone, in
order. PostgreSQL decides a whole round with a few set-based statements, so
this pins that it agrees with SQLite claim for claim.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from _stores_support import query
from quiv import AsyncQuiv
from quiv._registry import JOB_COLUMNS
from quiv._stores import open_store, store_options
from quiv._stores._durable import Batch, DurableStore
from quiv._stores._requests import Claim, ClaimResult, Outcome, TaskState, Watched

pytestmark = pytest.mark.anyio

SECOND = 1_000_000
WORKER = "test-host/1"


def _task(url: str, task_id: str, next_due: int | None, paused: int = 0, most: int = 1) -> None:
    query(
        url,
        "INSERT INTO quiv_tasks (id, task_name, handler, serializer, args, kwargs, definition, "
        "repeats, max_instances, max_retries, next_due, paused) "
        "VALUES (?, ?, 'mod:fn', 'json', ?, ?, '{}', 1, ?, 0, ?, ?)",
        task_id,
        task_id,
        b"[]",
        b"{}",
        most,
        next_due,
        paused,
    )


def _claim(
    task_id: str, due: int, job_id: str, *, most: int = 1, grace: float | None = None
) -> Claim:
    row: dict[str, Any] = dict.fromkeys(JOB_COLUMNS)
    row.update(id=job_id, task_id=task_id, task_name=task_id, status="scheduled", attempt=1)
    row["started_at"] = "2026-12-02 00:00:00+00:00"
    return Claim(
        task_id=task_id,
        due=due,
        job_id=job_id,
        job_row=tuple(row[name] for name in JOB_COLUMNS),
        max_instances=most,
        misfire_grace=grace,
        next_due=lambda due, now: due + 10 * SECOND,
        done=lambda result: None,
    )


async def _decide(store: DurableStore, claims: list[Claim], now_us: int) -> list[ClaimResult]:
    batch = Batch(
        adoptions=[],
        claims=claims,
        replans=[],
        cancels=[],
        task_rows=[],
        deleted=[],
        job_rows=[],
        purge=None,
        known=None,
        watched=Watched(),
        worker=WORKER,
        now_us=now_us,
        lease_us=now_us + 30 * SECOND,
    )
    _, results, _ = await store._commit(batch)
    return results


@asynccontextmanager
async def _opened(store: str) -> AsyncIterator[DurableStore]:
    """The durable store at ``store``, open (as a scheduler's would be) until the end."""
    backend = open_store(store_options(store, "json", 30, 10), logging.getLogger("test"))
    assert isinstance(backend, DurableStore)
    await backend.open()
    try:
        yield backend
    finally:
        await backend._dispose()


async def test_a_round_of_mixed_claims_is_decided_claim_by_claim(store: str) -> None:
    async with _opened(store) as backend:
        now = int(time.time()) * SECOND
        due = now - SECOND
        _task(store, "a", due)  # claimed twice in one round: now, then its next due time
        _task(store, "b", due + 5 * SECOND)  # moved on by another process already
        _task(store, "c", due, paused=1)
        _task(store, "d", due)  # one job of it is live, and it allows one
        _task(store, "e", due - 120 * SECOND)  # too late for its misfire grace
        _task(store, "f", due, most=2)  # two allowed: a live job leaves room
        query(
            store,
            "INSERT INTO quiv_claims (task_id, due, outcome, worker) VALUES "
            "('f', ?, 'run', 'other/2')",
            due,
        )  # held already, next_due not moved: lost
        for job_id, task_id in (("live-d", "d"), ("live-f", "f")):
            query(
                store,
                "INSERT INTO quiv_jobs (id, task_id, task_name, status, started_at, attempt, "
                "worker, lease_until) VALUES (?, ?, ?, 'running', '2026-12-02', 1, 'other/2', ?)",
                job_id,
                task_id,
                task_id,
                now + 60 * SECOND,
            )
        claims = [
            _claim("a", due, "a1"),
            _claim("b", due, "b1"),
            _claim("c", due, "c1"),
            _claim("d", due, "d1"),
            _claim("e", due - 120 * SECOND, "e1", grace=1.0),
            _claim("gone", due, "g1"),
            _claim("a", due + 10 * SECOND, "a2"),  # a1 is live now, and one is allowed
            _claim("f", due, "f1", most=2),
            _claim("a", due + 10 * SECOND, "a3", most=2),  # the same occurrence again
        ]
        results = await _decide(backend, claims, now)

    following = due + 10 * SECOND
    assert [(result.outcome, result.state) for result in results] == [
        (Outcome.RUN, TaskState(following, False)),
        (Outcome.LOST, TaskState(due + 5 * SECOND, False)),
        (Outcome.PAUSED, TaskState(due, True)),
        (Outcome.SKIPPED, TaskState(following, False)),
        (Outcome.MISSED, TaskState(due - 110 * SECOND, False)),
        (Outcome.GONE, TaskState(None, False)),
        (Outcome.SKIPPED, TaskState(following + 10 * SECOND, False)),
        (Outcome.LOST, TaskState(following, False)),
        (Outcome.LOST, TaskState(following + 10 * SECOND, False)),
    ]
    stored = dict(query(store, "SELECT id, next_due FROM quiv_tasks"))
    assert stored == {
        "a": following + 10 * SECOND,
        "b": due + 5 * SECOND,
        "c": due,
        "d": following,
        "e": due - 110 * SECOND,
        "f": following,
    }
    claimed = sorted(query(store, "SELECT task_id, due, job_id, outcome, worker FROM quiv_claims"))
    assert claimed == [
        ("a", due, "a1", "run", WORKER),
        ("a", following, "a2", "skipped", WORKER),
        ("d", due, "d1", "skipped", WORKER),
        ("e", due - 120 * SECOND, "e1", "missed", WORKER),
        ("f", due, None, "run", "other/2"),
    ]
    jobs = sorted(query(store, "SELECT id, task_id, worker FROM quiv_jobs"))
    assert jobs == [
        ("a1", "a", WORKER),
        ("live-d", "d", "other/2"),
        ("live-f", "f", "other/2"),
    ]


async def test_misfire_grace_is_counted_in_microseconds_from_the_due_time(store: str) -> None:
    async with _opened(store) as backend:
        now = int(time.time()) * SECOND
        lateness = {"on-time": 0, "half": SECOND // 2, "edge": SECOND, "past": SECOND + 1}
        for task_id, late in lateness.items():
            _task(store, task_id, now - late)
        claims = [
            _claim(task_id, now - late, f"{task_id}-1", grace=1.0)
            for task_id, late in lateness.items()
        ]
        results = await _decide(backend, claims, now)
    outcomes = {
        claim.task_id: result.outcome for claim, result in zip(claims, results, strict=True)
    }
    assert outcomes == {
        "on-time": Outcome.RUN,
        "half": Outcome.RUN,
        "edge": Outcome.RUN,  # exactly misfire_grace late is still in time
        "past": Outcome.MISSED,
    }


def idle() -> None:
    """A module-level handler: importable by its name."""


async def test_a_changed_definition_is_stored_under_the_tasks_id(store: str) -> None:
    async with AsyncQuiv(store=store) as scheduler:
        await scheduler.add_task("nightly", idle, interval=3600, delay=3600, task_id="n1")
        await scheduler.add_task("later", idle, interval=60, delay=3600, run_once=True)
        await scheduler._store.flush()  # stored: what follows is a change of the row
        await scheduler.update_task("n1", max_instances=3)
        await scheduler._store.flush()
    rows = query(store, "SELECT task_name, repeats, max_instances FROM quiv_tasks")
    assert sorted(rows) == [("later", 0, 1), ("nightly", 1, 3)]
