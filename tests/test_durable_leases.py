"""Leases on running jobs in a durable store, and APScheduler 4's failure modes as tests.

* a job that outlives its lease length (renewed meanwhile) is not run twice;
* a job row left live by a crashed worker never blocks its task: how many jobs
  run is counted from unexpired leases, not kept as a number;
* a holder whose lease was taken over cannot overwrite the record (fencing).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import anyio

from _stores_support import query
from quiv import AsyncQuiv, JobStatus

DEADLINE = 15.0
LONG = 3600

spans: list[tuple[str, float, float]] = []
release = threading.Event()


def slow(label: str, seconds: float) -> None:
    started = time.monotonic()
    time.sleep(seconds)
    spans.append((label, started, time.monotonic()))


def held(label: str) -> None:
    started = time.monotonic()
    release.wait(DEADLINE)
    spans.append((label, started, time.monotonic()))


async def _until(condition: Callable[[], object], what: str) -> None:
    """Wait for ``condition`` (``what`` says which, in a failure) under the deadline."""
    with anyio.fail_after(DEADLINE):
        while not condition():  # noqa: ASYNC110 - the database, written by another scheduler
            await anyio.sleep(0.02)


async def test_a_job_that_outlives_its_lease_length_is_renewed_and_runs_once(store: str) -> None:
    spans.clear()
    options = {"store": store, "lease_seconds": 0.6, "lease_renewal": 0.2}
    async with AsyncQuiv(**options) as one, AsyncQuiv(**options) as other:  # type: ignore[arg-type]
        for scheduler in (one, other):
            await scheduler.add_task(
                "slow", slow, interval=LONG, args=("slow", 2.0), task_id="slow", max_retries=3
            )
        await _until(lambda: spans, "the run to end")
        await one._store.flush()
        await other._store.flush()
        jobs = await one.get_all_jobs()
    assert [(job.status, job.attempt) for job in jobs] == [(JobStatus.COMPLETED, 1)]
    assert len(spans) == 1


async def test_max_instances_holds_across_schedulers(store: str) -> None:
    spans.clear()
    async with AsyncQuiv(store=store) as one, AsyncQuiv(store=store) as other:
        for scheduler in (one, other):
            await scheduler.add_task(
                "busy", slow, interval=0.1, args=("busy", 0.35), task_id="busy", max_instances=1
            )
        await _until(lambda: len(spans) >= 4, "four runs")
    ordered = sorted(spans[:4], key=lambda span: span[1])
    for (_, _, ended), (_, started, _) in itertools.pairwise(ordered):
        assert started >= ended - 0.05  # one at a time (clocks of one process)


async def test_a_dead_workers_live_row_does_not_block_its_task(store: str) -> None:
    spans.clear()
    async with AsyncQuiv(store=store) as scheduler:
        await scheduler.add_task(
            "t", slow, interval=LONG, delay=LONG, args=("t", 0), task_id="t", max_instances=1
        )
        await scheduler._store.flush()
        query(  # a crashed worker's row: live, its lease long gone
            store,
            "INSERT INTO quiv_jobs (id, task_id, task_name, status, started_at, attempt, "
            "worker, lease_until) VALUES ('ghost', 't', 't', 'running', "
            "'2026-01-01 00:00:00+00:00', 1, 'gone/1', 1)",
        )
        await scheduler.run_task_immediately("t")
        await _until(lambda: spans, "the run")
        await _until(
            lambda: (
                query(store, "SELECT status FROM quiv_jobs WHERE id = 'ghost'") == [("failed",)]
            ),
            "the ghost to be recorded abandoned",
        )
        [(message,)] = query(store, "SELECT error_message FROM quiv_jobs WHERE id = 'ghost'")
    assert message == "abandoned: worker gone/1 stopped"


async def test_a_holder_that_lost_its_lease_cannot_overwrite_the_record(store: str) -> None:
    spans.clear()
    release.clear()
    async with AsyncQuiv(store=store) as scheduler:
        await scheduler.add_task("h", held, interval=LONG, args=("h",), task_id="h")
        await _until(lambda: _running(store), "the job to be stored running")
        [job_id] = _running(store)
        # As if this process froze past its lease:
        query(store, "UPDATE quiv_jobs SET lease_until = 0 WHERE id = ?", job_id)
        await _until(lambda: not _running(store), "the lease to be taken over")
        release.set()
        await _until(lambda: spans, "the job to end here")
        await scheduler._store.flush()
        [(status, message)] = query(
            store, "SELECT status, error_message FROM quiv_jobs WHERE id = ?", job_id
        )
    assert status == "failed"
    assert isinstance(message, str) and message.startswith("abandoned: worker ")


def _running(store: str) -> list[object]:
    rows = query(store, "SELECT id FROM quiv_jobs WHERE status = 'running' AND task_id = 'h'")
    return [job_id for (job_id,) in rows]
