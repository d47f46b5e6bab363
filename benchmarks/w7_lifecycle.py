"""W7 lifecycle: ``start()`` + ``shutdown()`` of an idle ``Quiv``, enter + exit of an idle
``AsyncQuiv``.

Construction is not timed. For information, the same is measured for a
scheduler that has run one job (its SQLite database then exists and has to
be closed and deleted).

Ceilings: ``start_blocking_portal()`` entered and exited (the private loop
thread alone) for Quiv; for AsyncQuiv, a task group entered with quiv's three
service tasks (sleeping) and exited by cancelling it.
"""

from __future__ import annotations

import statistics
import threading
from time import perf_counter, sleep
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal
from anyio.lowlevel import checkpoint

from quiv import AsyncQuiv, Event, Job, Quiv, Task

from ._harness import Metric, Sizes, distribution, quiet_logger

TITLE = "lifecycle (start + shutdown of an idle scheduler)"
ISOLATE = False

_WARMUP = 3
_AFTER_A_JOB_SAMPLES = 10
#: p50 target per facade (issue #9); p99 keeps the earlier 5 ms bound.
_TARGET_P50_MS = {"AsyncQuiv": 0.5, "Quiv": 1.0}
_TARGET_P99_MS = 5.0
_TIMEOUT = 10.0


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return anyio.run(_async_core, sizes)
    if unit == "Quiv":
        return _sync_facade(sizes)
    if unit == "ceiling":
        data = anyio.run(_ceiling_on_loop, sizes)
        data.update(_ceiling_portal(sizes))
        return data
    raise ValueError(unit)


def noop() -> None:
    pass


async def _async_core(sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w7")
    idle: list[float] = []
    for i in range(_WARMUP + sizes.w7_samples):
        scheduler = AsyncQuiv(logger=logger)
        start = perf_counter()
        async with scheduler:
            pass
        if i >= _WARMUP:
            idle.append(perf_counter() - start)

    after_job: list[float] = []
    for _ in range(min(_AFTER_A_JOB_SAMPLES, sizes.w7_samples)):
        done = anyio.Event()

        def on_completed(event: Event, task: Task, job: Job, done: anyio.Event = done) -> None:
            done.set()

        scheduler = AsyncQuiv(logger=logger)
        async with scheduler:
            await scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
            await scheduler.add_task("w7", noop, interval=60, run_once=True)
            with anyio.fail_after(_TIMEOUT):
                await done.wait()
            await anyio.sleep(0.05)  # let the store commit
            start = perf_counter()
        after_job.append(perf_counter() - start)
    return {"idle": idle, "exit_after_a_job": after_job, "log_counts": counted.counts}


def _sync_facade(sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w7")
    idle: list[float] = []
    starts: list[float] = []
    for i in range(_WARMUP + sizes.w7_samples):
        scheduler = Quiv(logger=logger)
        start = perf_counter()
        scheduler.start()
        started = perf_counter()
        scheduler.shutdown()
        if i >= _WARMUP:
            idle.append(perf_counter() - start)
            starts.append(started - start)

    after_job: list[float] = []
    for _ in range(min(_AFTER_A_JOB_SAMPLES, sizes.w7_samples)):
        done = threading.Event()

        def on_completed(event: Event, task: Task, job: Job, done: threading.Event = done) -> None:
            done.set()

        scheduler = Quiv(logger=logger)
        scheduler.start()
        scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        scheduler.add_task("w7", noop, interval=60, run_once=True)
        if not done.wait(_TIMEOUT):
            raise TimeoutError("W7: the job did not complete")
        sleep(0.05)  # let the store commit
        start = perf_counter()
        scheduler.shutdown()
        after_job.append(perf_counter() - start)
    return {
        "idle": idle,
        "start_only": starts,
        "exit_after_a_job": after_job,
        "log_counts": counted.counts,
    }


async def _ceiling_on_loop(sizes: Sizes) -> dict[str, Any]:
    samples: list[float] = []
    for i in range(_WARMUP + sizes.w7_samples):
        start = perf_counter()
        async with anyio.create_task_group() as task_group:
            for _ in range(3):
                task_group.start_soon(anyio.sleep_forever)
            await checkpoint()
            task_group.cancel_scope.cancel()
        if i >= _WARMUP:
            samples.append(perf_counter() - start)
    return {"AsyncQuiv": samples}


def _ceiling_portal(sizes: Sizes) -> dict[str, Any]:
    samples: list[float] = []
    for i in range(_WARMUP + sizes.w7_samples):
        start = perf_counter()
        with start_blocking_portal():
            pass
        if i >= _WARMUP:
            samples.append(perf_counter() - start)
    return {"Quiv": samples}


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    ceiling = data.get("ceiling", {})
    for facade, label in (
        ("AsyncQuiv", "enter + exit"),
        ("Quiv", "start() + shutdown()"),
    ):
        ours = data.get(facade)
        if ours is None or "error" in ours:
            continue
        mine = distribution(ours["idle"])
        raw = ceiling.get(facade)
        base = distribution(raw) if raw else None
        for pct, target in ((50, _TARGET_P50_MS[facade]), (99, _TARGET_P99_MS)):
            key = f"p{pct}_ms"
            metrics.append(
                Metric(
                    "W7",
                    facade,
                    f"{label}, idle, p{pct}",
                    float(mine[key] or 0.0),
                    "ms",
                    "lower",
                    ceiling=float(base[key] or 0.0) if base else None,
                    target=target,
                    details={"quiv": mine, "ceiling": base} if pct == 99 else {},
                )
            )
        if "start_only" in ours:
            metrics.append(
                Metric(
                    "W7",
                    facade,
                    "start() alone, idle, p50",
                    statistics.median(ours["start_only"]) * 1e3,
                    "ms",
                    "lower",
                )
            )
        metrics.append(
            Metric(
                "W7",
                facade,
                "exit after one job ran (SQLite open), p50",
                statistics.median(ours["exit_after_a_job"]) * 1e3,
                "ms",
                "lower",
                note="information: closes and deletes the database",
            )
        )
    return metrics
