"""W2 throughput: 10,000 run-once trivial jobs added at once, pool_size 10.

The clock runs from the first ``add_task`` until every job is recorded
completed: the ``JOB_COMPLETED`` listener has fired 10,000 times *and*
``get_all_jobs("completed")`` returns 10,000 jobs. With ``Quiv`` the adds are
10,000 blocking calls from the main thread, so the figure includes them (the
add phase is reported on its own as well).

Ceiling: a bare pool-bounded runner (``_RawPool``): a FIFO, one pump task
taking a ``CapacityLimiter(pool_size)`` token per job and spawning it with
``task_group.start_soon``; async handlers are awaited, sync ones go through
``to_thread.run_sync`` under a limiter of the same size. For AsyncQuiv the
10,000 jobs are submitted on the loop; for Quiv each is submitted with one
blocking ``portal.call`` from the main thread (the facade's round trip per add).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.from_thread import start_blocking_portal

from quiv import AsyncQuiv, Event, Job, Quiv, Task

from ._harness import Box, Metric, Sizes, portal_task_group, quiet_logger

TITLE = "throughput (10,000 run-once jobs added at once, pool 10)"
ISOLATE = False

_TIMEOUT = 120.0
_TARGETS = {"sync": 12_000.0, "async": 20_000.0}


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for kind in ("async", "sync"):
        if unit == "AsyncQuiv":
            data[kind] = anyio.run(_async_core, kind, sizes)
        elif unit == "Quiv":
            data[kind] = _sync_facade(kind, sizes)
        elif unit == "ceiling":
            data[f"AsyncQuiv/{kind}"] = anyio.run(_ceiling_on_loop, kind, sizes)
            data[f"Quiv/{kind}"] = _ceiling_through_portal(kind, sizes)
        else:
            raise ValueError(unit)
    return data


def trivial_sync() -> None:
    pass


async def trivial_async() -> None:
    pass


def _handler(kind: str) -> Callable[[], Any]:
    return trivial_async if kind == "async" else trivial_sync


# -- quiv ------------------------------------------------------------------------


async def _async_core(kind: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w2_jobs
    handler = _handler(kind)
    logger, counted = quiet_logger("w2")
    counter = Box(0)
    all_done = anyio.Event()

    def on_completed(event: Event, task: Task, job: Job) -> None:
        counter.value += 1
        if counter.value == n:
            all_done.set()

    async with AsyncQuiv(pool_size=sizes.w2_pool, logger=logger) as scheduler:
        await scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        start = perf_counter()
        for i in range(n):
            await scheduler.add_task(f"w2-{i}", handler, interval=60, run_once=True)
        added = perf_counter()
        with anyio.move_on_after(_TIMEOUT):
            await all_done.wait()
        listened = perf_counter()
        completed = len(await scheduler.get_all_jobs("completed"))
        while completed < n and perf_counter() - start < _TIMEOUT:
            await anyio.sleep(0.001)
            completed = len(await scheduler.get_all_jobs("completed"))
        end = perf_counter()
        history = await scheduler.get_all_jobs()
    return {
        "jobs": n,
        "seconds": end - start,
        "add_seconds": added - start,
        "listener_seconds": listened - start,
        "listener_count": counter.value,
        "completed": completed,
        "not_completed": sum(1 for job in history if job.status != "completed"),
        "log_counts": counted.counts,
    }


def _sync_facade(kind: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w2_jobs
    handler = _handler(kind)
    logger, counted = quiet_logger("w2")
    counter = Box(0)
    all_done = threading.Event()

    def on_completed(event: Event, task: Task, job: Job) -> None:
        counter.value += 1
        if counter.value == n:
            all_done.set()

    with Quiv(pool_size=sizes.w2_pool, logger=logger) as scheduler:
        scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        start = perf_counter()
        for i in range(n):
            scheduler.add_task(f"w2-{i}", handler, interval=60, run_once=True)
        added = perf_counter()
        all_done.wait(_TIMEOUT)
        listened = perf_counter()
        completed = len(scheduler.get_all_jobs("completed"))
        while completed < n and perf_counter() - start < _TIMEOUT:
            completed = len(scheduler.get_all_jobs("completed"))
        end = perf_counter()
        history = scheduler.get_all_jobs()
    return {
        "jobs": n,
        "seconds": end - start,
        "add_seconds": added - start,
        "listener_seconds": listened - start,
        "listener_count": counter.value,
        "completed": completed,
        "not_completed": sum(1 for job in history if job.status != "completed"),
        "log_counts": counted.counts,
    }


# -- ceilings ----------------------------------------------------------------------


class _RawPool:
    """The least a pool-bounded job runner does, and nothing else.

    A FIFO of submitted jobs, one pump task that takes a ``CapacityLimiter``
    token per job and spawns it in the task group, and the job itself run
    directly (async) or through ``to_thread.run_sync`` under a second limiter
    of the same size (as quiv does). No ids, records, events or persistence.
    """

    def __init__(
        self, task_group: TaskGroup, kind: str, size: int, finished: Callable[[], None]
    ) -> None:
        self._task_group = task_group
        self._kind = kind
        self._pool = anyio.CapacityLimiter(size)
        self._threads = anyio.CapacityLimiter(size)
        self._finished = finished
        self._queue: deque[Callable[[], Any]] = deque()
        self._wake = anyio.Event()
        self._closed = False

    def submit(self, job: Callable[[], Any]) -> None:  # on the loop
        self._queue.append(job)
        self._wake.set()

    def close(self) -> None:  # on the loop
        self._closed = True
        self._wake.set()

    async def pump(self) -> None:
        queue = self._queue
        while not self._closed:
            await self._wake.wait()
            self._wake = anyio.Event()
            while queue:
                token = object()
                await self._pool.acquire_on_behalf_of(token)
                self._task_group.start_soon(self._run, queue.popleft(), token)

    async def _run(self, job: Callable[[], Any], token: object) -> None:
        try:
            if self._kind == "async":
                await job()
            else:
                await anyio.to_thread.run_sync(job, limiter=self._threads)
        finally:
            self._pool.release_on_behalf_of(token)
            self._finished()


async def _ceiling_on_loop(kind: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w2_jobs
    counter = Box(0)
    all_done = anyio.Event()

    def finished() -> None:
        counter.value += 1
        if counter.value == n:
            all_done.set()

    handler = _handler(kind)
    async with anyio.create_task_group() as task_group:
        pool = _RawPool(task_group, kind, sizes.w2_pool, finished)
        task_group.start_soon(pool.pump)
        start = perf_counter()
        for _ in range(n):
            pool.submit(handler)
        added = perf_counter()
        await all_done.wait()
        end = perf_counter()
        pool.close()
    return {"jobs": n, "seconds": end - start, "add_seconds": added - start}


def _ceiling_through_portal(kind: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w2_jobs
    counter = Box(0)
    all_done = threading.Event()

    def finished() -> None:
        counter.value += 1
        if counter.value == n:
            all_done.set()

    handler = _handler(kind)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(portal_task_group()) as task_group,
    ):
        pool = portal.call(_RawPool, task_group, kind, sizes.w2_pool, finished)
        portal.call(_start, task_group, pool)
        start = perf_counter()
        for _ in range(n):
            portal.call(pool.submit, handler)
        added = perf_counter()
        all_done.wait(_TIMEOUT)
        end = perf_counter()
        portal.call(pool.close)
    return {"jobs": n, "seconds": end - start, "add_seconds": added - start}


def _start(task_group: TaskGroup, pool: _RawPool) -> None:
    # Not portal.call(task_group.start_soon, ...): the task handle it returns is
    # awaitable, and the portal would wait for the pump to end.
    task_group.start_soon(pool.pump)


# -- summary -----------------------------------------------------------------------


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    ceiling = data.get("ceiling", {})
    for facade in ("AsyncQuiv", "Quiv"):
        measured = data.get(facade)
        if measured is None or "error" in measured:
            continue
        for kind in ("async", "sync"):
            ours = measured[kind]
            raw = ceiling.get(f"{facade}/{kind}")
            variant = f"{facade} / {kind} handler"
            raw_rate = raw["jobs"] / raw["seconds"] if raw else None
            lost = ours["jobs"] - min(ours["completed"], ours["listener_count"])
            metrics.append(
                Metric(
                    "W2",
                    variant,
                    "jobs/s, add to all recorded",
                    ours["jobs"] / ours["seconds"],
                    "jobs/s",
                    "higher",
                    ceiling=raw_rate,
                    target=_TARGETS[kind],
                    note="" if lost == 0 else f"{lost} jobs not recorded completed",
                    details={"quiv": ours, "ceiling": raw},
                )
            )
            metrics.append(
                Metric(
                    "W2",
                    variant,
                    "add phase rate",
                    ours["jobs"] / ours["add_seconds"],
                    "tasks/s",
                    "higher",
                    ceiling=raw["jobs"] / raw["add_seconds"] if raw else None,
                )
            )
            metrics.append(
                Metric(
                    "W2",
                    variant,
                    "jobs not recorded completed",
                    float(lost),
                    "jobs",
                    "lower",
                    target=0.0,
                )
            )
    return metrics
