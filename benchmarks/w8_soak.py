"""W8 soak (``--soak`` only): a million short jobs back to back, on each facade.

Jobs are run-once tasks added in batches of 10,000 (half sync, half async
handlers); the next batch is added when the ``JOB_COMPLETED`` listener has
counted the previous one. ``history_retention_seconds`` is short (2 s), so
history must stay bounded by what ends within that window. After each batch
the unit notes RSS, OS threads, open descriptors and the history length; the
warm-up is the first 10 % of the jobs, or more until five retention periods
have passed (history must have filled its window). At the end it waits out the retention
and checks that history (in memory and in the SQLite file) is empty.

Pass: no job lost (every one recorded completed, none failed or cancelled);
RSS growth after warm-up <= 10 MB; thread count after warm-up never above
its warm-up maximum; history never above ``rate * (retention + 1 s)`` and
empty once the retention has passed.

Both facades run it (``Quiv`` adds from the main thread), each in a fresh
interpreter. Ceiling: none for memory; for information, the raw rate of the
same jobs through a task group and ``to_thread`` is W2's ceiling.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import sys
import threading
import time
from contextlib import closing
from typing import Any

import anyio

from quiv import AsyncQuiv, Event, Job, Quiv, Task

from ._harness import Metric, Sizes, open_fds, quiet_logger, rss_mb, thread_count

TITLE = "soak (1,000,000 short jobs back to back)"
ISOLATE = True

_TARGET_RSS_GROWTH_MB = 10.0
_BATCH_TIMEOUT = 120.0
_END_EVENTS = (Event.JOB_COMPLETED, Event.JOB_FAILED, Event.JOB_CANCELLED)


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return anyio.run(_soak_async_core, sizes)
    if unit == "Quiv":
        return _soak_sync_facade(sizes)
    raise ValueError(unit)


def short_sync() -> None:
    pass


async def short_async() -> None:
    pass


def _store_backlog(core: AsyncQuiv) -> int | None:
    """Rows quiv's writer has noted and not yet committed; None if that is not visible."""
    store = core._store  # introspection only
    noted = [getattr(store, name, None) for name in ("_jobs", "_tasks")]
    if any(not isinstance(rows, dict) for rows in noted):
        return None
    return sum(len(rows) for rows in noted if isinstance(rows, dict))


def _db_rows(core: AsyncQuiv) -> int | None:
    """Job rows in quiv's SQLite file, read side by side (WAL allows it); None if unknown."""
    path = core._store.path  # introspection only: the file is private to quiv
    if path is None or not path.exists():
        return None
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        row = connection.execute("SELECT COUNT(*) FROM quiv_jobs").fetchone()
    return int(row[0])


class _Soak:
    """What both facades share: the end-of-job count and the samples after each batch."""

    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.batches = max(1, sizes.w8_jobs // sizes.w8_batch)
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self.target = 0
        self.lock = threading.Lock()  # Quiv's listeners run on its loop thread
        self.reached = threading.Event()
        self.reached_on_loop: anyio.Event | None = None  # AsyncQuiv: its listeners run on our loop
        self.samples: list[dict[str, float | None]] = []
        self.start = time.perf_counter()

    def on_end(self, event: Event, task: Task, job: Job) -> None:
        with self.lock:
            self.counts[job.status.value] += 1
            if sum(self.counts.values()) >= self.target:
                self.reached.set()
                if self.reached_on_loop is not None:
                    self.reached_on_loop.set()

    def next_batch(self, added: int) -> None:
        with self.lock:
            self.reached.clear()
            if self.reached_on_loop is not None:
                self.reached_on_loop = anyio.Event()
            self.target = added + self.sizes.w8_batch

    def sample(self, batch: int, added: int, history: int, core: AsyncQuiv) -> None:
        self.samples.append(
            {
                "batch": batch,
                "jobs": added,
                "seconds": time.perf_counter() - self.start,
                "rss_mb": rss_mb(),
                "threads": thread_count(),
                "fds": open_fds(),
                "history": history,
                "store_backlog": _store_backlog(core),
            }
        )
        if (batch + 1) % max(1, self.batches // 10) == 0:
            last = self.samples[-1]
            print(
                f"  [W8] {added:>9,} jobs  {last['seconds']:6.1f}s  "
                f"rss {last['rss_mb']:.1f} MB  threads {last['threads']:.0f}  "
                f"fds {last['fds']:.0f}  history {history:,}  "
                f"store backlog {last['store_backlog']}",
                file=sys.stderr,
                flush=True,
            )

    def result(
        self, elapsed: float, history_after: int, db_rows_after: int | None
    ) -> dict[str, Any]:
        return {
            "jobs": self.batches * self.sizes.w8_batch,
            "batches": self.batches,
            "warmup_batches": max(1, self.batches // 10),
            "counts": self.counts,
            "seconds": elapsed,
            "samples": self.samples,
            "history_after_retention": history_after,
            "db_rows_after_retention": db_rows_after,
            "retention_seconds": self.sizes.w8_retention,
        }


async def _soak_async_core(sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w8")
    soak = _Soak(sizes)
    soak.reached_on_loop = anyio.Event()
    async with AsyncQuiv(logger=logger, history_retention_seconds=sizes.w8_retention) as scheduler:
        for event in _END_EVENTS:
            await scheduler.add_listener(event, soak.on_end)
        added = 0
        for batch in range(soak.batches):
            soak.next_batch(added)
            for i in range(sizes.w8_batch):
                handler = short_async if i % 2 else short_sync
                await scheduler.add_task("w8", handler, interval=60, run_once=True)
            added += sizes.w8_batch
            with anyio.move_on_after(_BATCH_TIMEOUT):
                await soak.reached_on_loop.wait()
            soak.sample(batch, added, len(await scheduler.get_all_jobs()), scheduler)
        elapsed = time.perf_counter() - soak.start
        await anyio.sleep(sizes.w8_retention + 1.5)
        history_after = len(await scheduler.get_all_jobs())
        db_rows_after = _db_rows(scheduler)
    result = soak.result(elapsed, history_after, db_rows_after)
    result["log_counts"] = counted.counts
    return result


def _soak_sync_facade(sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w8")
    soak = _Soak(sizes)
    with Quiv(logger=logger, history_retention_seconds=sizes.w8_retention) as scheduler:
        for event in _END_EVENTS:
            scheduler.add_listener(event, soak.on_end)
        added = 0
        for batch in range(soak.batches):
            soak.next_batch(added)
            for i in range(sizes.w8_batch):
                handler = short_async if i % 2 else short_sync
                scheduler.add_task("w8", handler, interval=60, run_once=True)
            added += sizes.w8_batch
            soak.reached.wait(_BATCH_TIMEOUT)
            soak.sample(batch, added, len(scheduler.get_all_jobs()), scheduler._core)
        elapsed = time.perf_counter() - soak.start
        time.sleep(sizes.w8_retention + 1.5)
        history_after = len(scheduler.get_all_jobs())
        db_rows_after = _db_rows(scheduler._core)
    result = soak.result(elapsed, history_after, db_rows_after)
    result["log_counts"] = counted.counts
    return result


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    for facade in ("AsyncQuiv", "Quiv"):
        ours = data.get(facade)
        if ours is not None and "error" not in ours:
            metrics.extend(_summarize_one(facade, ours))
    return metrics


def _summarize_one(variant: str, ours: dict[str, Any]) -> list[Metric]:
    samples = ours["samples"]
    # Warm-up: the first 10 % of the jobs, and long enough for history to fill its window.
    settled = 5 * ours["retention_seconds"]
    warm = ours["warmup_batches"]
    while warm < len(samples) - 1 and samples[warm - 1]["seconds"] < settled:
        warm += 1
    during = samples[:warm]
    after = samples[warm:] or samples[-1:]
    rate = ours["jobs"] / ours["seconds"]
    rss_growth = max(s["rss_mb"] for s in after) - during[-1]["rss_mb"]
    thread_growth = max(s["threads"] for s in after) - max(s["threads"] for s in during)
    fd_growth = max(s["fds"] for s in after) - max(s["fds"] for s in during)
    peak_history = max(s["history"] for s in samples)
    # History may hold what ended within the retention window (plus a second of slack
    # for the purge timer), at the fastest rate seen between two samples.
    rates = [
        (b["jobs"] - a["jobs"]) / (b["seconds"] - a["seconds"])
        for a, b in itertools.pairwise(samples)
        if b["seconds"] > a["seconds"]
    ] or [rate]
    history_bound = max(rates) * (ours["retention_seconds"] + 1.0)
    backlogs = [s["store_backlog"] for s in samples if s.get("store_backlog") is not None]
    counts = ours["counts"]
    lost = ours["jobs"] - counts["completed"]
    return [
        Metric("W8", variant, "jobs/s sustained", rate, "jobs/s", "higher"),
        Metric(
            "W8",
            variant,
            "jobs lost (not recorded completed)",
            float(lost),
            "jobs",
            "lower",
            target=0.0,
            note=f"failed {counts['failed']}, cancelled {counts['cancelled']}",
        ),
        Metric(
            "W8",
            variant,
            "RSS growth after warm-up",
            rss_growth,
            "MB",
            "lower",
            target=_TARGET_RSS_GROWTH_MB,
            note=f"{during[-1]['rss_mb']:.1f} MB at the end of warm-up",
        ),
        Metric(
            "W8",
            variant,
            "thread growth after warm-up",
            float(thread_growth),
            "threads",
            "lower",
            target=0.0,
        ),
        Metric(
            "W8",
            variant,
            "fd growth after warm-up",
            float(fd_growth),
            "fds",
            "lower",
            target=0.0,
        ),
        Metric(
            "W8",
            variant,
            "peak history rows",
            float(peak_history),
            "rows",
            "lower",
            target=history_bound,
            note=f"bound = peak rate x (retention {ours['retention_seconds']:g}s + 1s)",
        ),
        Metric(
            "W8",
            variant,
            "peak store backlog (rows noted, not written)",
            float(max(backlogs)) if backlogs else math.nan,
            "rows",
            "lower",
            note="information: write-behind rows held in memory",
        ),
        Metric(
            "W8",
            variant,
            "history rows after retention",
            float(ours["history_after_retention"]),
            "rows",
            "lower",
            target=0.0,
            note=f"SQLite rows: {ours['db_rows_after_retention']}",
        ),
    ]
