"""W13 retries: 10,000 failing run-once jobs with ``max_retries=1`` and zero backoff.

Each job fails, is retried at once (its retry is a job of its own, queued
behind whatever waits for the pool) and fails again: 20,000 runs, 10,000 of
them retries. The clock runs from the first ``add_task`` until the
``JOB_FAILED`` listener has heard all 20,000. The figure is retries per second.

Ceiling: the same 20,000 failing runs as 20,000 run-once tasks without a retry
policy, measured the same way: what the runs cost without the retry machinery.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import anyio

from quiv import AsyncQuiv, Event, Job, Task

from ._harness import Metric, Sizes, quiet_logger

TITLE = "retries (10,000 failing jobs, max_retries=1, zero backoff)"
ISOLATE = False

_POOL = 10
_TIMEOUT = 300.0


def _size(sizes: Sizes) -> int:
    if sizes.name == "smoke":
        return 100
    return 2_000 if sizes.quick else 10_000


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    n = _size(sizes)
    if unit == "AsyncQuiv":
        return anyio.run(_run, n, 1)
    if unit == "ceiling":
        return anyio.run(_run, 2 * n, 0)
    raise ValueError(unit)


async def fail() -> None:
    raise RuntimeError("W13")


async def _run(tasks: int, max_retries: int) -> dict[str, Any]:
    expected = tasks * (1 + max_retries)
    failed = 0
    done = anyio.Event()

    def on_failed(_event: Event, _task: Task, _job: Job) -> None:
        nonlocal failed
        failed += 1
        if failed == expected:
            done.set()

    logger, _counted = quiet_logger("w13")
    logger.setLevel(100)  # every failure logs an error: keep the figure about scheduling
    async with AsyncQuiv(pool_size=_POOL, logger=logger) as scheduler:
        await scheduler.add_listener(Event.JOB_FAILED, on_failed)
        started = perf_counter()
        for i in range(tasks):
            await scheduler.add_task(
                f"w13-{i}",
                fail,
                interval=60,
                run_once=True,
                max_retries=max_retries,
                retry_backoff=0,
            )
        with anyio.fail_after(_TIMEOUT):
            await done.wait()
        seconds = perf_counter() - started
    return {"tasks": tasks, "runs": expected, "retries": tasks * max_retries, "seconds": seconds}


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    core, raw = data.get("AsyncQuiv", {}), data.get("ceiling", {})
    if "seconds" not in core:
        return []
    ceiling = raw["runs"] / 2 / raw["seconds"] if "seconds" in raw else None
    return [
        Metric(
            "W13",
            "AsyncQuiv",
            "retries/s",
            core["retries"] / core["seconds"],
            "retries/s",
            "higher",
            ceiling=ceiling,
            note="ceiling: half the rate of the same failing runs with no retry policy",
            details=core,
        )
    ]
