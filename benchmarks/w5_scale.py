"""W5 scale: 100,000 tasks with interval 3600 s.

The tasks are added with ``delay=3600`` too, so none runs during the
measurement: this is the cost of *holding* a large schedule. Figures:

* add rate: 100,000 ``add_task`` calls, back to back;
* RSS growth: resident memory after the adds (and after the store writer has
  committed them, i.e. once the process is quiet) minus before the scheduler
  was created; each variant runs in a fresh interpreter;
* idle CPU: process CPU time (every thread) over 10 s of wall time, once quiet;
* ``get_all_tasks()`` of 10,000 tasks (a separate scheduler): the first call,
  which builds every snapshot, and the median of five more.

Ceilings:

* AsyncQuiv: the naive scheduler, one asyncio task per scheduled task
  sleeping its interval (``task_group.start_soon``): spawn rate, RSS growth,
  idle CPU; and for the listing, building 10,000 ``Task`` snapshots from
  plain values with ``Task.model_construct``;
* Quiv: the add rate of the same spawns, each made by one blocking
  ``portal.call`` from the main thread (the facade's round trip per add),
  measured over 20,000 calls.
"""

from __future__ import annotations

import functools
import gc
import statistics
from datetime import datetime, timezone
from time import perf_counter, sleep
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.from_thread import start_blocking_portal

from quiv import AsyncQuiv, Quiv, Task, TaskStatus

from ._harness import (
    Metric,
    Sizes,
    asettle_cpu,
    cpu_seconds,
    peak_rss_mb,
    portal_task_group,
    quiet_logger,
    rss_mb,
    settle_cpu,
    thread_count,
)

TITLE = "scale (100,000 tasks, interval 3600 s)"
ISOLATE = True

_INTERVAL = 3600.0
_WARM_LISTINGS = 5
_PORTAL_CALLS = 20_000
_TARGET_ADD_RATE = 30_000.0
_TARGET_IDLE_CPU = 1.0
_TARGET_RSS_MB = 150.0
_TARGET_LISTING_MS = 10.0


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv", "ceiling-loop", "ceiling-portal"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return anyio.run(_async_core, sizes)
    if unit == "Quiv":
        return _sync_facade(sizes)
    if unit == "ceiling-loop":
        return anyio.run(_ceiling_on_loop, sizes)
    if unit == "ceiling-portal":
        return _ceiling_through_portal(sizes)
    raise ValueError(unit)


def idle_handler() -> None:
    pass


# -- quiv ------------------------------------------------------------------------


async def _async_core(sizes: Sizes) -> dict[str, Any]:
    n = sizes.w5_tasks
    logger, counted = quiet_logger("w5")
    out: dict[str, Any] = {"tasks": n}
    out["rss_before_mb"] = rss_mb()
    async with AsyncQuiv(logger=logger) as scheduler:
        start = perf_counter()
        for i in range(n):
            await scheduler.add_task(f"w5-{i}", idle_handler, interval=_INTERVAL, delay=_INTERVAL)
        out["add_seconds"] = perf_counter() - start
        out["settle_seconds"] = await asettle_cpu()
        out["rss_after_mb"] = rss_mb()
        out["threads"] = thread_count()
        cpu, wall = cpu_seconds(), perf_counter()
        await anyio.sleep(sizes.w5_idle_seconds)
        out["idle_cpu_seconds"] = cpu_seconds() - cpu
        out["idle_wall_seconds"] = perf_counter() - wall
        start = perf_counter()
        listed = await scheduler.get_all_tasks()
        out["list_all_seconds"] = perf_counter() - start
        out["list_all_count"] = len(listed)
        del listed
    out["peak_rss_mb"] = peak_rss_mb()

    async with AsyncQuiv(logger=logger) as scheduler:
        for i in range(sizes.w5_listing):
            await scheduler.add_task(
                f"w5-list-{i}", idle_handler, interval=_INTERVAL, delay=_INTERVAL
            )
        await asettle_cpu()
        timings = []
        for _ in range(1 + _WARM_LISTINGS):
            gc.collect()  # no collection of earlier garbage inside the timing
            start = perf_counter()
            listed = await scheduler.get_all_tasks()
            timings.append(perf_counter() - start)
            assert len(listed) == sizes.w5_listing
    out["listing_seconds"] = timings
    out["log_counts"] = counted.counts
    return out


def _sync_facade(sizes: Sizes) -> dict[str, Any]:
    n = sizes.w5_tasks
    logger, counted = quiet_logger("w5")
    out: dict[str, Any] = {"tasks": n}
    out["rss_before_mb"] = rss_mb()
    with Quiv(logger=logger) as scheduler:
        start = perf_counter()
        for i in range(n):
            scheduler.add_task(f"w5-{i}", idle_handler, interval=_INTERVAL, delay=_INTERVAL)
        out["add_seconds"] = perf_counter() - start
        out["settle_seconds"] = settle_cpu()
        out["rss_after_mb"] = rss_mb()
        out["threads"] = thread_count()
        cpu, wall = cpu_seconds(), perf_counter()
        sleep(sizes.w5_idle_seconds)
        out["idle_cpu_seconds"] = cpu_seconds() - cpu
        out["idle_wall_seconds"] = perf_counter() - wall
        start = perf_counter()
        listed = scheduler.get_all_tasks()
        out["list_all_seconds"] = perf_counter() - start
        out["list_all_count"] = len(listed)
        del listed
    out["peak_rss_mb"] = peak_rss_mb()

    with Quiv(logger=logger) as scheduler:
        for i in range(sizes.w5_listing):
            scheduler.add_task(f"w5-list-{i}", idle_handler, interval=_INTERVAL, delay=_INTERVAL)
        settle_cpu()
        timings = []
        for _ in range(1 + _WARM_LISTINGS):
            gc.collect()
            start = perf_counter()
            listed = scheduler.get_all_tasks()
            timings.append(perf_counter() - start)
            assert len(listed) == sizes.w5_listing
    out["listing_seconds"] = timings
    out["log_counts"] = counted.counts
    return out


# -- ceilings ----------------------------------------------------------------------


async def _sleeper() -> None:
    while True:  # noqa: ASYNC110 - the naive scheduler: one task sleeping per scheduled task
        await anyio.sleep(_INTERVAL)


def _build_snapshots(n: int) -> float:
    """Seconds to build ``n`` ``Task`` snapshots from plain values: the least a listing costs."""
    when = datetime.now(timezone.utc)
    rows = [(f"id-{i}", f"w5-list-{i}") for i in range(n)]
    _ = Task.model_construct(id="warm-up")  # pydantic's one-time set-up is not the listing
    gc.collect()
    start = perf_counter()
    built = [
        Task.model_construct(
            id=task_id,
            task_name=name,
            args=(),
            kwargs={},
            interval_seconds=_INTERVAL,
            fixed_interval=True,
            run_once=False,
            status=TaskStatus.ACTIVE,
            next_run_at=when,
        )
        for task_id, name in rows
    ]
    elapsed = perf_counter() - start
    assert len(built) == n
    return elapsed


async def _ceiling_on_loop(sizes: Sizes) -> dict[str, Any]:
    n = sizes.w5_tasks
    out: dict[str, Any] = {"tasks": n}
    out["rss_before_mb"] = rss_mb()
    async with anyio.create_task_group() as task_group:
        start = perf_counter()
        for _ in range(n):
            task_group.start_soon(_sleeper)
        out["add_seconds"] = perf_counter() - start
        out["settle_seconds"] = await asettle_cpu()
        out["rss_after_mb"] = rss_mb()
        out["threads"] = thread_count()
        cpu, wall = cpu_seconds(), perf_counter()
        await anyio.sleep(sizes.w5_idle_seconds)
        out["idle_cpu_seconds"] = cpu_seconds() - cpu
        out["idle_wall_seconds"] = perf_counter() - wall
        task_group.cancel_scope.cancel()
    out["peak_rss_mb"] = peak_rss_mb()
    out["listing_seconds"] = [_build_snapshots(sizes.w5_listing) for _ in range(1 + _WARM_LISTINGS)]
    return out


async def _sleeper_until(stop: anyio.Event) -> None:
    with anyio.move_on_after(_INTERVAL):
        await stop.wait()


def _spawn(task_group: TaskGroup, stop: anyio.Event) -> None:
    task_group.start_soon(_sleeper_until, stop)


async def _new_event() -> anyio.Event:
    return anyio.Event()


def _ceiling_through_portal(sizes: Sizes) -> dict[str, Any]:
    # The round trip costs the same whatever the count: 20,000 calls give the rate.
    n = min(sizes.w5_tasks, _PORTAL_CALLS)
    out: dict[str, Any] = {"tasks": n}
    with start_blocking_portal() as portal:
        stop = portal.call(_new_event)
        with portal.wrap_async_context_manager(portal_task_group()) as task_group:
            spawn = functools.partial(_spawn, task_group, stop)
            start = perf_counter()
            for _ in range(n):
                portal.call(spawn)
            out["add_seconds"] = perf_counter() - start
            portal.call(stop.set)
    return out


# -- summary -----------------------------------------------------------------------


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    loop = data.get("ceiling-loop")
    portal = data.get("ceiling-portal")
    loop_ok = loop is not None and "error" not in loop
    portal_ok = portal is not None and "error" not in portal
    for facade in ("AsyncQuiv", "Quiv"):
        ours = data.get(facade)
        if ours is None or "error" in ours:
            continue
        variant = facade
        add_ceiling = loop if facade == "AsyncQuiv" else portal
        add_ceiling_ok = loop_ok if facade == "AsyncQuiv" else portal_ok
        n = ours["tasks"]
        metrics.append(
            Metric(
                "W5",
                variant,
                f"add rate ({n:,} tasks)",
                n / ours["add_seconds"],
                "tasks/s",
                "higher",
                ceiling=(
                    add_ceiling["tasks"] / add_ceiling["add_seconds"]
                    if add_ceiling is not None and add_ceiling_ok
                    else None
                ),
                target=_TARGET_ADD_RATE,
            )
        )
        metrics.append(
            Metric(
                "W5",
                variant,
                f"RSS growth, {n:,} tasks",
                ours["rss_after_mb"] - ours["rss_before_mb"],
                "MB",
                "lower",
                ceiling=(
                    loop["rss_after_mb"] - loop["rss_before_mb"]
                    if loop is not None and loop_ok
                    else None
                ),
                target=_TARGET_RSS_MB,
                note=f"peak RSS {ours['peak_rss_mb']:.0f} MB",
                details={
                    k: ours[k]
                    for k in ("rss_before_mb", "rss_after_mb", "peak_rss_mb", "settle_seconds")
                },
            )
        )
        idle = 100.0 * ours["idle_cpu_seconds"] / ours["idle_wall_seconds"]
        metrics.append(
            Metric(
                "W5",
                variant,
                f"idle CPU over {sizes.w5_idle_seconds:g}s",
                idle,
                "% core",
                "lower",
                ceiling=(
                    100.0 * loop["idle_cpu_seconds"] / loop["idle_wall_seconds"]
                    if loop is not None and loop_ok
                    else None
                ),
                target=_TARGET_IDLE_CPU,
            )
        )
        metrics.append(
            Metric(
                "W5",
                variant,
                "store settle after adds",
                ours["settle_seconds"],
                "s",
                "lower",
                note="time until the process went quiet (store commits)",
            )
        )
        timings = ours["listing_seconds"]
        raw = loop["listing_seconds"] if loop is not None and loop_ok else None
        metrics.append(
            Metric(
                "W5",
                variant,
                f"get_all_tasks() of {sizes.w5_listing:,}, first",
                timings[0] * 1e3,
                "ms",
                "lower",
                ceiling=raw[0] * 1e3 if raw else None,
                target=_TARGET_LISTING_MS,
            )
        )
        metrics.append(
            Metric(
                "W5",
                variant,
                f"get_all_tasks() of {sizes.w5_listing:,}, repeat",
                statistics.median(timings[1:]) * 1e3,
                "ms",
                "lower",
                ceiling=statistics.median(raw[1:]) * 1e3 if raw else None,
                target=_TARGET_LISTING_MS,
            )
        )
        metrics.append(
            Metric(
                "W5",
                variant,
                f"get_all_tasks() of {ours['list_all_count']:,}, first",
                ours["list_all_seconds"] * 1e3,
                "ms",
                "lower",
            )
        )
    return metrics
