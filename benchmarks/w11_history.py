"""W11 history memory: 300,000 run-once jobs kept for the default 24 h retention.

Trivial run-once jobs (half sync, half async handlers, pool 10) are added in
batches of 10,000; the next batch is added when the end listeners have counted
the previous one, so the store writer keeps up (W8 measures saturation). Once
all have ended and the process is quiet (the writer has committed), RSS is
compared with RSS before the scheduler was created; each facade runs in a
fresh interpreter. Every job stays inside the retention window, so afterwards
``get_job`` of the very first job and ``get_all_jobs()`` must still see all
of them (that listing is timed, and comes after the RSS reading).

No ceiling: holding a history has no raw mechanism to compare with.
"""

from __future__ import annotations

import threading
from time import perf_counter
from typing import Any

import anyio

from quiv import AsyncQuiv, Event, Job, Quiv, QuivError, Task

from ._harness import (
    Metric,
    Sizes,
    asettle_cpu,
    peak_rss_mb,
    quiet_logger,
    rss_mb,
    settle_cpu,
)

TITLE = "history memory (300,000 run-once jobs, default 24 h retention)"
ISOLATE = True

_POOL = 10
_TARGET_RSS_MB = 50.0
_BATCH_TIMEOUT = 120.0
_END_EVENTS = (Event.JOB_COMPLETED, Event.JOB_FAILED, Event.JOB_CANCELLED)


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return anyio.run(_async_core, sizes)
    if unit == "Quiv":
        return _sync_facade(sizes)
    raise ValueError(unit)


def short_sync() -> None:
    pass


async def short_async() -> None:
    pass


class _Ends:
    """Counts ended jobs by status and keeps the first job's id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self.first: str | None = None
        self.target = 0
        self.reached = threading.Event()
        self.reached_on_loop: anyio.Event | None = None

    def on_end(self, event: Event, task: Task, job: Job) -> None:
        with self.lock:
            if self.first is None:
                self.first = job.id
            self.counts[job.status.value] += 1
            if sum(self.counts.values()) >= self.target:
                self.reached.set()
                if self.reached_on_loop is not None:
                    self.reached_on_loop.set()

    def next_batch(self, target: int) -> None:
        with self.lock:
            self.target = target
            self.reached.clear()
            if self.reached_on_loop is not None:
                self.reached_on_loop = anyio.Event()


async def _async_core(sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w11")
    ends = _Ends()
    ends.reached_on_loop = anyio.Event()
    out: dict[str, Any] = {"jobs": 0, "rss_before_mb": rss_mb()}
    async with AsyncQuiv(pool_size=_POOL, logger=logger) as scheduler:
        for event in _END_EVENTS:
            await scheduler.add_listener(event, ends.on_end)
        start = perf_counter()
        while out["jobs"] < sizes.w11_jobs:
            ends.next_batch(out["jobs"] + sizes.w11_batch)
            for i in range(sizes.w11_batch):
                handler = short_async if i % 2 else short_sync
                await scheduler.add_task("w11", handler, interval=60, run_once=True)
            out["jobs"] += sizes.w11_batch
            with anyio.move_on_after(_BATCH_TIMEOUT):
                await ends.reached_on_loop.wait()
        out["seconds"] = perf_counter() - start
        out["settle_seconds"] = await asettle_cpu()
        out["rss_after_mb"] = rss_mb()
        try:
            first = await scheduler.get_job(ends.first or "")
            out["first_job_visible"] = first.id == ends.first
        except QuivError:
            out["first_job_visible"] = False
        start = perf_counter()
        out["visible"] = len(await scheduler.get_all_jobs())
        out["listing_seconds"] = perf_counter() - start
    out["peak_rss_mb"] = peak_rss_mb()
    out["counts"] = ends.counts
    out["log_counts"] = counted.counts
    return out


def _sync_facade(sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w11")
    ends = _Ends()
    out: dict[str, Any] = {"jobs": 0, "rss_before_mb": rss_mb()}
    with Quiv(pool_size=_POOL, logger=logger) as scheduler:
        for event in _END_EVENTS:
            scheduler.add_listener(event, ends.on_end)
        start = perf_counter()
        while out["jobs"] < sizes.w11_jobs:
            ends.next_batch(out["jobs"] + sizes.w11_batch)
            for i in range(sizes.w11_batch):
                handler = short_async if i % 2 else short_sync
                scheduler.add_task("w11", handler, interval=60, run_once=True)
            out["jobs"] += sizes.w11_batch
            ends.reached.wait(_BATCH_TIMEOUT)
        out["seconds"] = perf_counter() - start
        out["settle_seconds"] = settle_cpu()
        out["rss_after_mb"] = rss_mb()
        try:
            out["first_job_visible"] = scheduler.get_job(ends.first or "").id == ends.first
        except QuivError:
            out["first_job_visible"] = False
        start = perf_counter()
        out["visible"] = len(scheduler.get_all_jobs())
        out["listing_seconds"] = perf_counter() - start
    out["peak_rss_mb"] = peak_rss_mb()
    out["counts"] = ends.counts
    out["log_counts"] = counted.counts
    return out


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    for facade in ("AsyncQuiv", "Quiv"):
        ours = data.get(facade)
        if ours is None or "error" in ours:
            continue
        n = ours["jobs"]
        lost = n - ours["counts"]["completed"]
        metrics += [
            Metric(
                "W11",
                facade,
                f"RSS growth, {n:,} jobs in history",
                ours["rss_after_mb"] - ours["rss_before_mb"],
                "MB",
                "lower",
                target=_TARGET_RSS_MB,
                note=f"peak RSS {ours['peak_rss_mb']:.0f} MB (includes the listing)",
                details={
                    k: ours[k]
                    for k in ("rss_before_mb", "rss_after_mb", "peak_rss_mb", "settle_seconds")
                },
            ),
            Metric(
                "W11",
                facade,
                "jobs not recorded completed",
                float(lost),
                "jobs",
                "lower",
                target=0.0,
                note=f"{n / ours['seconds']:,.0f} jobs/s in batches of {sizes.w11_batch:,}",
            ),
            Metric(
                "W11",
                facade,
                "jobs seen by get_all_jobs()",
                float(ours["visible"]),
                "jobs",
                "higher",
                target=float(n),
                note=f"the listing took {ours['listing_seconds']:.2f} s",
            ),
            Metric(
                "W11",
                facade,
                "get_job() of the first job",
                1.0 if ours["first_job_visible"] else 0.0,
                "bool",
                "higher",
                target=1.0,
            ),
        ]
    return metrics
