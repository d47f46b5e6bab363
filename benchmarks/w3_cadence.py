"""W3 cadence: 100 tasks at interval 0.1 s for 10 s; how late does each run start?

All tasks are added at once with no delay (so their slots coincide: every
0.1 s, 100 jobs fall due together), ``fixed_interval=True``, and a pool of
100 so the pool never queues a run (W2 measures the pool). Each handler notes
the wall clock at entry. Per task, the anchor is its first run's start as quiv
records it (``Job.started_at``, the instant quiv itself anchors the cadence
on); a run at ``t`` belongs to slot ``k = round((t - anchor) / interval)`` and
its lateness is ``t - (anchor + k * interval)``, so the first run's lateness
is its dispatch delay. A slot that lies more than half
an interval before the end of the observation window and has no run is
*missed*; two runs in one slot are *doubled*.

Ceiling: the same 100 loops written by hand, ``await anyio.sleep_until(anchor
+ k * interval)`` then the handler (directly, or through ``to_thread.run_sync``
under a limiter of the same size), the anchor being the loop's first wake-up.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio

from quiv import AsyncQuiv, Job, Quiv

from ._harness import Metric, Sizes, distribution, quiet_logger

TITLE = "cadence (100 tasks every 0.1 s for 10 s; lateness vs ideal slot)"
ISOLATE = False

_TARGET_P99_MS = 1.0

_VARIANTS = (("AsyncQuiv", "async"), ("AsyncQuiv", "sync"), ("Quiv", "sync"), ("Quiv", "async"))


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return {kind: anyio.run(_async_core, kind, sizes) for kind in ("async", "sync")}
    if unit == "Quiv":
        return {kind: _sync_facade(kind, sizes) for kind in ("sync", "async")}
    if unit == "ceiling":
        return {kind: anyio.run(_ceiling, kind, sizes) for kind in ("async", "sync")}
    raise ValueError(unit)


# Handlers append to their task's list in this module-level registry: quiv pickles
# ``args``, so a list passed directly would be a copy. Times are wall-clock seconds
# (``time.time()``), the clock of ``Job.started_at``.
_ENTRIES: dict[int, list[float]] = {}


def tick_sync(index: int) -> None:
    _ENTRIES[index].append(time.time())


async def tick_async(index: int) -> None:
    _ENTRIES[index].append(time.time())


def _reset(n: int) -> list[list[float]]:
    _ENTRIES.clear()
    for i in range(n):
        _ENTRIES[i] = []
    return [_ENTRIES[i] for i in range(n)]


def _anchors(jobs: list[Job], n: int) -> list[float | None]:
    """Per task index, the recorded start of its first run: the anchor of its cadence."""
    anchors: list[float | None] = [None] * n
    for job in jobs:
        index = int(job.task_name.rsplit("-", 1)[1])
        start = job.started_at.timestamp()
        current = anchors[index]
        if current is None or start < current:
            anchors[index] = start
    return anchors


async def _async_core(kind: str, sizes: Sizes) -> dict[str, Any]:
    entries = _reset(sizes.w3_tasks)
    handler = tick_async if kind == "async" else tick_sync
    logger, counted = quiet_logger("w3")
    async with AsyncQuiv(pool_size=sizes.w3_tasks, logger=logger) as scheduler:
        for i in range(sizes.w3_tasks):
            await scheduler.add_task(f"w3-{i}", handler, interval=sizes.w3_interval, args=(i,))
        await anyio.sleep(sizes.w3_seconds)
        stop = time.time()
        anchors = _anchors(await scheduler.get_all_jobs(), sizes.w3_tasks)
    return {
        "entries": [list(e) for e in entries],
        "anchors": anchors,
        "stop": stop,
        "log_counts": counted.counts,
    }


def _sync_facade(kind: str, sizes: Sizes) -> dict[str, Any]:
    entries = _reset(sizes.w3_tasks)
    handler = tick_async if kind == "async" else tick_sync
    logger, counted = quiet_logger("w3")
    with Quiv(pool_size=sizes.w3_tasks, logger=logger) as scheduler:
        for i in range(sizes.w3_tasks):
            scheduler.add_task(f"w3-{i}", handler, interval=sizes.w3_interval, args=(i,))
        time.sleep(sizes.w3_seconds)
        stop = time.time()
        anchors = _anchors(scheduler.get_all_jobs(), sizes.w3_tasks)
    return {
        "entries": [list(e) for e in entries],
        "anchors": anchors,
        "stop": stop,
        "log_counts": counted.counts,
    }


async def _ceiling(kind: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w3_tasks
    entries = _reset(n)
    anchors: list[float | None] = [None] * n
    limiter = anyio.CapacityLimiter(n)
    interval = sizes.w3_interval

    async def loop(index: int) -> None:
        anchor: float | None = None
        k = 0
        while True:
            if anchor is None:  # like quiv: the anchor is the first run's start
                anchor = anyio.current_time()
                anchors[index] = time.time()
            if kind == "async":
                await tick_async(index)
            else:
                await anyio.to_thread.run_sync(tick_sync, index, limiter=limiter)
            k += 1
            await anyio.sleep_until(anchor + k * interval)

    async with anyio.create_task_group() as task_group:
        for i in range(n):
            task_group.start_soon(loop, i)
        await anyio.sleep(sizes.w3_seconds)
        stop = time.time()
        task_group.cancel_scope.cancel()
    return {"entries": [list(e) for e in entries], "anchors": anchors, "stop": stop}


# -- analysis ----------------------------------------------------------------------


def analyse(
    entries: list[list[float]], anchors: list[float | None], stop: float, interval: float
) -> dict[str, Any]:
    lateness: list[float] = []
    steady: list[float] = []  # every run but each task's first
    missed_slots: list[tuple[int, int]] = []
    missed = doubled = runs = 0
    never_ran = 0
    for index, (task_entries, recorded) in enumerate(zip(entries, anchors, strict=True)):
        if not task_entries:
            never_ran += 1
            continue
        anchor = recorded if recorded is not None else task_entries[0]
        last_expected = math.floor((stop - interval / 2 - anchor) / interval)
        slots: dict[int, int] = {}
        for t in task_entries:
            k = round((t - anchor) / interval)
            late = t - (anchor + k * interval)
            lateness.append(late)
            if k > 0:
                steady.append(late)
            slots[k] = slots.get(k, 0) + 1
            runs += 1
        gaps = [k for k in range(last_expected + 1) if k not in slots]
        missed += len(gaps)
        missed_slots.extend((index, k) for k in gaps)
        doubled += sum(count - 1 for count in slots.values() if count > 1)
    return {
        "runs": runs,
        "missed": missed,
        "doubled": doubled,
        "tasks_that_never_ran": never_ran,
        "lateness": distribution(lateness),
        "lateness_after_first_run": distribution(steady),
        "missed_slots_first_20": missed_slots[:20],
        "late_over_1ms": sum(1 for x in lateness if x > 0.001),
        "late_over_2ms": sum(1 for x in lateness if x > 0.002),
    }


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    ceiling = data.get("ceiling", {})
    raw: dict[str, dict[str, Any]] = {}
    for kind in ("async", "sync"):
        if kind in ceiling:
            run = ceiling[kind]
            raw[kind] = analyse(run["entries"], run["anchors"], run["stop"], sizes.w3_interval)
    for facade, kind in _VARIANTS:
        measured = data.get(facade, {}).get(kind)
        if measured is None:
            continue
        ours = analyse(
            measured["entries"], measured["anchors"], measured["stop"], sizes.w3_interval
        )
        ours["log_counts"] = measured.get("log_counts")
        base = raw.get(kind)
        variant = f"{facade} / {kind} handler"
        for pct, target in ((50, None), (99, _TARGET_P99_MS)):
            key = f"p{pct}_ms"
            metrics.append(
                Metric(
                    "W3",
                    variant,
                    f"lateness p{pct}",
                    float(ours["lateness"].get(key, math.nan)),
                    "ms",
                    "lower",
                    ceiling=float(base["lateness"][key]) if base else None,
                    target=target,
                    details={"quiv": ours, "ceiling": base} if pct == 99 else {},
                )
            )
        metrics.append(
            Metric(
                "W3",
                variant,
                "lateness p99, first runs excluded",
                float(ours["lateness_after_first_run"].get("p99_ms", math.nan)),
                "ms",
                "lower",
                ceiling=float(base["lateness_after_first_run"]["p99_ms"]) if base else None,
                note="information: without start-up (threads, SQLite file)",
            )
        )
        metrics.append(
            Metric(
                "W3",
                variant,
                "lateness max",
                float(ours["lateness"].get("max_ms", math.nan)),
                "ms",
                "lower",
                ceiling=float(base["lateness"]["max_ms"]) if base else None,
            )
        )
        metrics.append(
            Metric(
                "W3",
                variant,
                "missed runs",
                float(ours["missed"] + ours["tasks_that_never_ran"]),
                "runs",
                "lower",
                ceiling=float(base["missed"]) if base else None,
                target=0.0,
                note=f"{ours['runs']} runs, {ours['doubled']} doubled",
                details={"missed_slots_first_20": ours["missed_slots_first_20"]},
            )
        )
    return metrics
