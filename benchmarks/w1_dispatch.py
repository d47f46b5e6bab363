"""W1 dispatch latency: from the call to the handler's first line, on an idle scheduler.

Two calls are timed, each 200 times in sequence: ``add_task(run_once=True)``
and ``run_task_immediately`` on an existing task whose next run is an hour
away. The clock starts just before the call and stops at the handler's entry;
the next sample waits for the job's ``JOB_COMPLETED`` listener and then
``gap`` seconds of idleness (the store writer commits in between, as it would
in normal use).

Ceilings, per variant:

* AsyncQuiv, async handler: ``task_group.start_soon(handler)``;
* AsyncQuiv, sync handler: ``to_thread.run_sync(handler)`` under a
  ``CapacityLimiter`` of the pool's size, started from the loop;
* Quiv, async handler: ``portal.start_task_soon(handler)`` from the main thread;
* Quiv, sync handler: ``portal.start_task_soon(to_thread.run_sync, handler)``.
"""

from __future__ import annotations

import functools
import threading
from time import perf_counter, sleep
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal

from quiv import AsyncQuiv, Event, Job, Quiv, Task

from ._harness import Box, Metric, Sizes, distribution, quiet_logger

TITLE = "dispatch latency (call -> handler entry)"
ISOLATE = False

_POOL = 10
_TIMEOUT = 10.0

_VARIANTS = (
    ("AsyncQuiv", "async"),
    ("AsyncQuiv", "sync"),
    ("Quiv", "async"),
    ("Quiv", "sync"),
)


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return anyio.run(_measure_async_core, sizes)
    if unit == "Quiv":
        return _measure_sync_facade(sizes)
    if unit == "ceiling":
        data = anyio.run(_ceiling_on_loop, sizes)
        data.update(_ceiling_through_portal(sizes))
        return data
    raise ValueError(unit)


# -- quiv ------------------------------------------------------------------------


async def _measure_async_core(sizes: Sizes) -> dict[str, Any]:
    entry = Box(0.0)

    async def async_handler() -> None:
        entry.value = perf_counter()

    def sync_handler() -> None:
        entry.value = perf_counter()

    logger, counted = quiet_logger("w1")
    done = Box(anyio.Event())

    def on_completed(event: Event, task: Task, job: Job) -> None:
        done.value.set()

    data: dict[str, Any] = {}
    async with AsyncQuiv(pool_size=_POOL, logger=logger) as scheduler:
        await scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        for kind, handler in (("async", async_handler), ("sync", sync_handler)):
            samples: list[float] = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                done.value = anyio.Event()
                start = perf_counter()
                await scheduler.add_task("w1-add", handler, interval=60, run_once=True)
                with anyio.fail_after(_TIMEOUT):
                    await done.value.wait()
                if i >= sizes.w1_warmup:
                    samples.append(entry.value - start)
                await anyio.sleep(sizes.w1_gap)
            data[f"add/{kind}"] = samples

            task_id = await scheduler.add_task("w1-now", handler, interval=3600, delay=3600)
            samples = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                done.value = anyio.Event()
                start = perf_counter()
                await scheduler.run_task_immediately(task_id)
                with anyio.fail_after(_TIMEOUT):
                    await done.value.wait()
                if i >= sizes.w1_warmup:
                    samples.append(entry.value - start)
                await anyio.sleep(sizes.w1_gap)
            data[f"run_now/{kind}"] = samples
            await scheduler.remove_task(task_id)
    data["log_counts"] = counted.counts
    return data


def _measure_sync_facade(sizes: Sizes) -> dict[str, Any]:
    entry = Box(0.0)

    async def async_handler() -> None:
        entry.value = perf_counter()

    def sync_handler() -> None:
        entry.value = perf_counter()

    logger, counted = quiet_logger("w1")
    done = threading.Event()

    def on_completed(event: Event, task: Task, job: Job) -> None:
        done.set()

    data: dict[str, Any] = {}
    with Quiv(pool_size=_POOL, logger=logger) as scheduler:
        scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        for kind, handler in (("async", async_handler), ("sync", sync_handler)):
            samples: list[float] = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                done.clear()
                start = perf_counter()
                scheduler.add_task("w1-add", handler, interval=60, run_once=True)
                if not done.wait(_TIMEOUT):
                    raise TimeoutError("W1: a job did not complete")
                if i >= sizes.w1_warmup:
                    samples.append(entry.value - start)
                sleep(sizes.w1_gap)
            data[f"add/{kind}"] = samples

            task_id = scheduler.add_task("w1-now", handler, interval=3600, delay=3600)
            samples = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                done.clear()
                start = perf_counter()
                scheduler.run_task_immediately(task_id)
                if not done.wait(_TIMEOUT):
                    raise TimeoutError("W1: a job did not complete")
                if i >= sizes.w1_warmup:
                    samples.append(entry.value - start)
                sleep(sizes.w1_gap)
            data[f"run_now/{kind}"] = samples
            scheduler.remove_task(task_id)
    data["log_counts"] = counted.counts
    return data


# -- ceilings ----------------------------------------------------------------------


async def _ceiling_on_loop(sizes: Sizes) -> dict[str, Any]:
    entry = Box(0.0)

    async def async_handler(done: anyio.Event) -> None:
        entry.value = perf_counter()
        done.set()

    def sync_handler() -> None:
        entry.value = perf_counter()

    async def thread_job(limiter: anyio.CapacityLimiter, done: anyio.Event) -> None:
        await anyio.to_thread.run_sync(sync_handler, limiter=limiter)
        done.set()

    limiter = anyio.CapacityLimiter(_POOL)
    data: dict[str, Any] = {}
    async with anyio.create_task_group() as task_group:
        for kind in ("async", "sync"):
            samples: list[float] = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                done = anyio.Event()
                start = perf_counter()
                if kind == "async":
                    task_group.start_soon(async_handler, done)
                else:
                    task_group.start_soon(thread_job, limiter, done)
                with anyio.fail_after(_TIMEOUT):
                    await done.wait()
                if i >= sizes.w1_warmup:
                    samples.append(entry.value - start)
                await anyio.sleep(sizes.w1_gap)
            data[f"AsyncQuiv/{kind}"] = samples
    return data


def _ceiling_through_portal(sizes: Sizes) -> dict[str, Any]:
    entry = Box(0.0)
    done = threading.Event()

    async def async_handler() -> None:
        entry.value = perf_counter()
        done.set()

    def sync_handler() -> None:
        entry.value = perf_counter()
        done.set()

    async def make_limiter() -> anyio.CapacityLimiter:
        return anyio.CapacityLimiter(_POOL)

    data: dict[str, Any] = {}
    with start_blocking_portal() as portal:
        limiter = portal.call(make_limiter)
        in_thread = functools.partial(anyio.to_thread.run_sync, sync_handler, limiter=limiter)
        for kind in ("async", "sync"):
            samples: list[float] = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                done.clear()
                start = perf_counter()
                if kind == "async":
                    portal.start_task_soon(async_handler)
                else:
                    portal.start_task_soon(in_thread)
                if not done.wait(_TIMEOUT):
                    raise TimeoutError("W1 ceiling: the handler did not run")
                if i >= sizes.w1_warmup:
                    samples.append(entry.value - start)
                sleep(sizes.w1_gap)
            data[f"Quiv/{kind}"] = samples
    return data


# -- summary -----------------------------------------------------------------------

#: (percentile, target in ms) per handler kind, for both calls on both facades (issue #9).
_TARGETS: dict[str, list[tuple[int, float | None]]] = {
    "sync": [(50, 0.15), (99, 0.7)],
    "async": [(50, 0.15), (99, 0.7)],
}


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    ceiling = data.get("ceiling", {})
    for facade, kind in _VARIANTS:
        measured = data.get(facade)
        if measured is None:
            continue
        raw = distribution(ceiling.get(f"{facade}/{kind}", []))
        for call, label in (("add", "add_task"), ("run_now", "run_task_immediately")):
            ours = distribution(measured[f"{call}/{kind}"])
            for pct, target in _TARGETS[kind]:
                key = f"p{pct}_ms"
                raw_value = raw.get(key)
                metrics.append(
                    Metric(
                        workload="W1",
                        variant=f"{facade} / {kind} handler",
                        name=f"{label} p{pct}",
                        value=float(ours[key] or 0.0),
                        unit="ms",
                        better="lower",
                        ceiling=float(raw_value) if raw_value is not None else None,
                        target=target,
                        details={"quiv": ours, "ceiling": raw},
                    )
                )
    return metrics
