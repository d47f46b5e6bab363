"""W12 cron: 10,000 cron tasks firing every second for 10 s.

Each task is ``add_task(cron="* * * * * *")`` (6 fields: every second), all in
one ``AsyncQuiv`` with a pool as large as the task count, so the pool never
queues a run (W2 measures the pool). Each async handler notes the wall clock
at entry. A run at ``t`` belongs to the whole second ``floor(t)`` it fired for,
and its lateness is ``t - floor(t)``. Per task, a whole second inside the
window (after its first run, before the last second) with no run is *missed*;
two runs for one second are *doubled*. Figures:

* add rate: 10,000 ``add_task(cron=...)`` calls back to back (each parses
  nothing new: the expression is cached, but each computes its first fire time);
* lateness p99 and missed runs over the window.

Ceiling: 10,000 asyncio tasks, each ``await anyio.sleep_until`` the next whole
wall-clock second converted to loop time, then the handler; add rate: spawning
those tasks.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio

from quiv import AsyncQuiv

from ._harness import Metric, Sizes, distribution, quiet_logger

TITLE = "cron (10,000 tasks every second for 10 s; lateness vs the whole second)"
ISOLATE = False

_TARGET_P99_MS = 2.0
_TARGET_ADD_RATE = 10_000.0


def _size(sizes: Sizes) -> tuple[int, float]:
    """Tasks and seconds: the shared ``Sizes`` has no W12 fields, so they live here."""
    if sizes.name == "smoke":
        return 100, 1.5
    return (1_000, 3.0) if sizes.quick else (10_000, 10.0)


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return anyio.run(_async_core, sizes)
    if unit == "ceiling":
        return anyio.run(_ceiling, sizes)
    raise ValueError(unit)


_ENTRIES: dict[int, list[float]] = {}


async def tick(index: int) -> None:
    _ENTRIES[index].append(time.time())


def _reset(n: int) -> list[list[float]]:
    _ENTRIES.clear()
    for i in range(n):
        _ENTRIES[i] = []
    return [_ENTRIES[i] for i in range(n)]


async def _async_core(sizes: Sizes) -> dict[str, Any]:
    n, seconds = _size(sizes)
    entries = _reset(n)
    logger, counted = quiet_logger("w9")
    async with AsyncQuiv(pool_size=n, logger=logger) as scheduler:
        started = time.perf_counter()
        for i in range(n):
            await scheduler.add_task(f"w9-{i}", tick, cron="* * * * * *", args=(i,))
        add_seconds = time.perf_counter() - started
        begin = time.time()
        await anyio.sleep(seconds)
        stop = time.time()
    return {
        "entries": [list(e) for e in entries],
        "begin": begin,
        "stop": stop,
        "add_seconds": add_seconds,
        "tasks": n,
        "log_counts": counted.counts,
    }


async def _ceiling(sizes: Sizes) -> dict[str, Any]:
    n, seconds = _size(sizes)
    entries = _reset(n)

    async def loop(index: int) -> None:
        while True:
            wall = time.time()
            await anyio.sleep_until(anyio.current_time() + (math.floor(wall) + 1 - wall))
            await tick(index)

    async with anyio.create_task_group() as task_group:
        started = time.perf_counter()
        for i in range(n):
            task_group.start_soon(loop, i)
        add_seconds = time.perf_counter() - started
        begin = time.time()
        await anyio.sleep(seconds)
        stop = time.time()
        task_group.cancel_scope.cancel()
    return {
        "entries": [list(e) for e in entries],
        "begin": begin,
        "stop": stop,
        "add_seconds": add_seconds,
        "tasks": n,
    }


def analyse(entries: list[list[float]], begin: float, stop: float) -> dict[str, Any]:
    lateness: list[float] = []
    missed = doubled = runs = 0
    first_second = math.floor(begin) + 1
    last_second = math.floor(stop) - 1  # the last whole second may still be firing
    for task_entries in entries:
        seconds: dict[int, int] = {}
        for t in task_entries:
            second = math.floor(t)
            lateness.append(t - second)
            seconds[second] = seconds.get(second, 0) + 1
            runs += 1
        missed += sum(1 for s in range(first_second, last_second + 1) if s not in seconds)
        doubled += sum(count - 1 for count in seconds.values() if count > 1)
    return {
        "runs": runs,
        "missed": missed,
        "doubled": doubled,
        "lateness": distribution(lateness),
    }


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    raw = data.get("ceiling", {})
    raw_stats = analyse(raw["entries"], raw["begin"], raw["stop"]) if "entries" in raw else None
    core = data.get("AsyncQuiv", {})
    if "entries" not in core:
        return metrics
    stats = analyse(core["entries"], core["begin"], core["stop"])
    p99 = stats["lateness"].get("p99_ms")
    metrics.append(
        Metric(
            "W12",
            "AsyncQuiv",
            "lateness p99",
            p99 if p99 is not None else math.inf,
            "ms",
            "lower",
            ceiling=raw_stats["lateness"].get("p99_ms") if raw_stats else None,
            target=_TARGET_P99_MS,
            details=stats,
        )
    )
    metrics.append(
        Metric(
            "W12",
            "AsyncQuiv",
            "missed + doubled runs",
            float(stats["missed"] + stats["doubled"]),
            "runs",
            "lower",
            ceiling=float(raw_stats["missed"] + raw_stats["doubled"]) if raw_stats else None,
            target=0.0,
        )
    )
    metrics.append(
        Metric(
            "W12",
            "AsyncQuiv",
            "add rate (cron)",
            core["tasks"] / core["add_seconds"],
            "tasks/s",
            "higher",
            ceiling=raw["tasks"] / raw["add_seconds"] if raw.get("add_seconds") else None,
            target=_TARGET_ADD_RATE,
        )
    )
    return metrics
