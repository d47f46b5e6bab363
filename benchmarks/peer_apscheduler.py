"""The peer column (``--peers apscheduler``): the same workloads through APScheduler 3.11's own API.

APScheduler is not a quiv dependency: ``make bench PEERS=apscheduler`` installs
it (``apscheduler>=3.11,<4``) into a side environment, ``.venv-peers``, and the
runner starts that interpreter on ``python -m benchmarks.peer_apscheduler``
for each workload, so quiv is never imported next to it. The module imports
nothing but the standard library, ``benchmarks._harness`` (anyio, psutil) and
APScheduler, the latter only inside the units.

Each quiv variant is matched with the APScheduler set-up its user would pick,
always with the memory job store and the UTC time zone:

* ``Quiv`` with sync handlers: ``BackgroundScheduler`` with a
  ``ThreadPoolExecutor`` of the same size as quiv's pool, called from the main
  thread;
* ``Quiv`` with async handlers: ``AsyncIOScheduler`` (its ``AsyncIOExecutor``
  runs coroutines) on an event loop in a thread of its own, called from the
  main thread (APScheduler hands its wake-ups to the loop thread-safely);
* ``AsyncQuiv``: ``AsyncIOScheduler`` on the caller's loop, with
  ``AsyncIOExecutor`` for async handlers and a ``ThreadPoolExecutor`` for
  sync ones; rows without a handler kind (W5, W7) use ``AsyncIOExecutor``.

The workloads are W1, W2, W3, W5, W7, W9 and W10 as their modules describe,
with APScheduler's nearest call: ``add_job`` (no trigger: run now) for a
run-once ``add_task``; ``add_job`` with an hourly interval trigger for an
hourly task; ``modify_job(next_run_time=now)`` for ``run_task_immediately``;
``pause_job``/``resume_job``; ``get_job`` (a scheduled job) for ``get_task``;
``get_jobs`` for ``get_all_tasks``; the ``EVENT_JOB_EXECUTED`` listener for
"recorded completed" (APScheduler keeps no history). ``cancel_job`` and quiv's
``get_job`` (a finished run) have no equivalent. Departures from APScheduler's
defaults: W2 sets ``misfire_grace_time=None``, or the jobs a 10,000-job burst
leaves waiting over a second would be skipped rather than run; in W3 each
task's interval trigger starts at one common instant, and a run's lateness is
measured against its trigger's own slots (quiv's anchor is its first run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from time import perf_counter, sleep
from typing import Any

from ._harness import (
    SIZES,
    Sizes,
    asettle_cpu,
    cpu_seconds,
    distribution,
    peak_rss_mb,
    peer_logger,
    rss_mb,
    settle_cpu,
    thread_count,
)

NAME = "APScheduler"
REQUIREMENT = "apscheduler>=3.11,<4"

#: Workload -> the quiv units it mirrors (each peer unit answers for that quiv unit).
WORKLOADS: dict[str, tuple[str, ...]] = {
    "W1": ("AsyncQuiv", "Quiv"),
    "W2": ("AsyncQuiv", "Quiv"),
    "W3": ("AsyncQuiv", "Quiv"),
    "W5": ("AsyncQuiv", "Quiv"),
    "W7": ("AsyncQuiv", "Quiv"),
    "W9": ("Quiv",),
    "W10": ("fresh process",),
}
#: Workloads whose units each need a fresh interpreter (memory figures).
ISOLATE = frozenset({"W5"})

_TIMEOUT = 120.0
_POOL = 10
_HOUR = 3600.0
_KINDS = ("async", "sync")


@dataclass(frozen=True)
class PeerFigure:
    """One peer figure, for the quiv row with the same workload, variant and name."""

    workload: str
    variant: str
    name: str
    value: float
    setup: str


def version() -> str:
    from importlib import metadata

    return metadata.version("apscheduler")


# -- set-ups -----------------------------------------------------------------------


def setup(facade: str, kind: str | None, pool: int = _POOL) -> str:
    """How APScheduler is set up for a quiv variant, in words (see the module docstring)."""
    if facade == "Quiv" and kind != "async":
        return f"BackgroundScheduler, ThreadPoolExecutor({pool})"
    if facade == "Quiv":
        return "AsyncIOScheduler on a loop thread, AsyncIOExecutor"
    if kind == "sync":
        return f"AsyncIOScheduler, ThreadPoolExecutor({pool})"
    return "AsyncIOScheduler, AsyncIOExecutor"


def _executor(kind: str | None, pool: int) -> Any:
    if kind == "sync":
        from apscheduler.executors.pool import ThreadPoolExecutor

        return ThreadPoolExecutor(pool)
    from apscheduler.executors.asyncio import AsyncIOExecutor

    return AsyncIOExecutor()


def _common(job_defaults: dict[str, Any] | None) -> dict[str, Any]:
    from apscheduler.jobstores.memory import MemoryJobStore

    return {
        "jobstores": {"default": MemoryJobStore()},
        "job_defaults": job_defaults or {},
        "timezone": timezone.utc,
    }


def background(pool: int = _POOL, job_defaults: dict[str, Any] | None = None) -> Any:
    """A ``BackgroundScheduler`` with a ``ThreadPoolExecutor(pool)``, not started."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(pool)}, **_common(job_defaults)
    )


def asyncio_scheduler(
    kind: str | None,
    pool: int = _POOL,
    job_defaults: dict[str, Any] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Any:
    """An ``AsyncIOScheduler`` with the executor for ``kind``, not started."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    return AsyncIOScheduler(
        executors={"default": _executor(kind, pool)}, event_loop=loop, **_common(job_defaults)
    )


@contextmanager
def from_thread(
    kind: str, pool: int = _POOL, job_defaults: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A started scheduler for the ``Quiv`` variants: its calls come from this thread."""
    if kind == "sync":
        scheduler = background(pool, job_defaults)
        scheduler.start()
        try:
            yield scheduler
        finally:
            scheduler.shutdown()
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="peer-loop", daemon=True)
    thread.start()
    scheduler = asyncio_scheduler(kind, pool, job_defaults, loop)
    try:
        scheduler.start()
        try:
            yield scheduler
        finally:
            scheduler.shutdown()  # handed to the loop, which runs it before stopping
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@asynccontextmanager
async def on_loop(
    kind: str | None, pool: int = _POOL, job_defaults: dict[str, Any] | None = None
) -> AsyncIterator[Any]:
    """A started scheduler for the ``AsyncQuiv`` variants: on the running loop."""
    scheduler = asyncio_scheduler(kind, pool, job_defaults)
    scheduler.start()
    try:
        yield scheduler
    finally:
        await stop_on_loop(scheduler)


async def stop_on_loop(scheduler: Any) -> None:
    """``AsyncIOScheduler.shutdown`` only schedules the shutdown; wait until it ran."""
    scheduler.shutdown()
    while scheduler.running:  # noqa: ASYNC110 - it offers nothing to wait on
        await asyncio.sleep(0)


class Ends:
    """Counts job ends by APScheduler event, and wakes a waiter at a target count.

    Listeners run in worker threads or on a loop; ``wait`` blocks a thread and
    ``await_reached`` suspends a coroutine on ``loop``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.lock = threading.Lock()
        self.executed = 0
        self.errors = 0
        self.missed = 0
        self.target = 1
        self.reached = threading.Event()
        self.loop = loop
        self.reached_on_loop = asyncio.Event() if loop is not None else None

    def listen(self, scheduler: Any) -> None:
        from apscheduler.events import (
            EVENT_JOB_ERROR,
            EVENT_JOB_EXECUTED,
            EVENT_JOB_MAX_INSTANCES,
            EVENT_JOB_MISSED,
        )

        scheduler.add_listener(
            self.on_event,
            EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES,
        )

    def on_event(self, event: Any) -> None:
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED

        with self.lock:
            if event.code == EVENT_JOB_EXECUTED:
                self.executed += 1
            elif event.code == EVENT_JOB_ERROR:
                self.errors += 1
            else:
                self.missed += 1
            if self.executed + self.errors + self.missed >= self.target:
                self.reached.set()
                if self.loop is not None and self.reached_on_loop is not None:
                    self.loop.call_soon_threadsafe(self.reached_on_loop.set)

    def expect(self, total: int) -> None:
        """Wake the waiter once ``total`` jobs have ended in all."""
        with self.lock:
            self.target = total
            self.reached.clear()
            if self.loop is not None:
                self.reached_on_loop = asyncio.Event()
            if self.executed + self.errors + self.missed >= total:
                self.reached.set()
                if self.reached_on_loop is not None:
                    self.reached_on_loop.set()

    def wait(self, timeout: float = _TIMEOUT) -> None:
        if not self.reached.wait(timeout):
            raise TimeoutError(f"{NAME}: jobs did not end in time")

    async def await_reached(self, timeout: float = _TIMEOUT) -> None:
        assert self.reached_on_loop is not None
        await asyncio.wait_for(self.reached_on_loop.wait(), timeout)

    def as_dict(self) -> dict[str, int]:
        return {"executed": self.executed, "errors": self.errors, "missed": self.missed}


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- units -------------------------------------------------------------------------


def units(workload: str, sizes: Sizes) -> list[str]:
    return list(WORKLOADS[workload])


def run_unit(workload: str, unit: str, sizes: Sizes) -> dict[str, Any]:
    """Run the peer's side of one quiv unit; plain, JSON-friendly data."""
    _, counted = peer_logger("apscheduler")
    if unit not in WORKLOADS.get(workload, ()):
        raise ValueError(f"{workload}/{unit}")
    runner = _UNITS[workload]
    data = runner(unit, sizes)
    data["log_counts"] = dict(counted.counts)
    data["log_first"] = dict(counted.first)
    return data


# W1 ----------------------------------------------------------------------------------


def _w1(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return {kind: asyncio.run(_w1_on_loop(kind, sizes)) for kind in _KINDS}
    return {kind: _w1_from_thread(kind, sizes) for kind in _KINDS}


def _entry_handlers() -> tuple[list[float], Callable[[], None], Callable[[], Any]]:
    entry = [0.0]

    def sync_handler() -> None:
        entry[0] = perf_counter()

    async def async_handler() -> None:
        entry[0] = perf_counter()

    return entry, sync_handler, async_handler


def _w1_from_thread(kind: str, sizes: Sizes) -> dict[str, Any]:
    entry, sync_handler, async_handler = _entry_handlers()
    handler = async_handler if kind == "async" else sync_handler
    ends = Ends()
    out: dict[str, Any] = {}
    with from_thread(kind) as scheduler:
        ends.listen(scheduler)
        for call in ("add", "run_now"):
            job = None
            if call == "run_now":
                job = scheduler.add_job(handler, "interval", seconds=_HOUR)
            samples: list[float] = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                ends.expect(ends.executed + ends.errors + ends.missed + 1)
                start = perf_counter()
                if job is None:
                    scheduler.add_job(handler)
                else:
                    scheduler.modify_job(job.id, next_run_time=_now())
                ends.wait(10.0)
                if i >= sizes.w1_warmup:
                    samples.append(entry[0] - start)
                sleep(sizes.w1_gap)
            out[call] = samples
            if job is not None:
                scheduler.remove_job(job.id)
    out["ends"] = ends.as_dict()
    return out


async def _w1_on_loop(kind: str, sizes: Sizes) -> dict[str, Any]:
    entry, sync_handler, async_handler = _entry_handlers()
    handler = async_handler if kind == "async" else sync_handler
    ends = Ends(asyncio.get_running_loop())
    out: dict[str, Any] = {}
    async with on_loop(kind) as scheduler:
        ends.listen(scheduler)
        for call in ("add", "run_now"):
            job = None
            if call == "run_now":
                job = scheduler.add_job(handler, "interval", seconds=_HOUR)
            samples: list[float] = []
            for i in range(sizes.w1_warmup + sizes.w1_samples):
                ends.expect(ends.executed + ends.errors + ends.missed + 1)
                start = perf_counter()
                if job is None:
                    scheduler.add_job(handler)
                else:
                    scheduler.modify_job(job.id, next_run_time=_now())
                await ends.await_reached(10.0)
                if i >= sizes.w1_warmup:
                    samples.append(entry[0] - start)
                await asyncio.sleep(sizes.w1_gap)
            out[call] = samples
            if job is not None:
                scheduler.remove_job(job.id)
    out["ends"] = ends.as_dict()
    return out


# W2 ----------------------------------------------------------------------------------

#: Run every job of the burst however late (APScheduler's default skips those late by 1 s).
_NO_MISFIRE = {"misfire_grace_time": None}


def trivial_sync() -> None:
    pass


async def trivial_async() -> None:
    pass


def _w2(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return {kind: asyncio.run(_w2_on_loop(kind, sizes)) for kind in _KINDS}
    return {kind: _w2_from_thread(kind, sizes) for kind in _KINDS}


def _w2_from_thread(kind: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w2_jobs
    handler = trivial_async if kind == "async" else trivial_sync
    ends = Ends()
    ends.expect(n)
    with from_thread(kind, sizes.w2_pool, _NO_MISFIRE) as scheduler:
        ends.listen(scheduler)
        start = perf_counter()
        for _ in range(n):
            scheduler.add_job(handler)
        added = perf_counter()
        ends.wait()
        end = perf_counter()
    return {"jobs": n, "seconds": end - start, "add_seconds": added - start, **ends.as_dict()}


async def _w2_on_loop(kind: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w2_jobs
    handler = trivial_async if kind == "async" else trivial_sync
    ends = Ends(asyncio.get_running_loop())
    ends.expect(n)
    async with on_loop(kind, sizes.w2_pool, _NO_MISFIRE) as scheduler:
        ends.listen(scheduler)
        start = perf_counter()
        for _ in range(n):
            scheduler.add_job(handler)
        added = perf_counter()
        await ends.await_reached()
        end = perf_counter()
    return {"jobs": n, "seconds": end - start, "add_seconds": added - start, **ends.as_dict()}


# W3 ----------------------------------------------------------------------------------

#: Entry times (``time.time()``) per task index, appended by the handlers.
_ENTRIES: dict[int, list[float]] = {}


def tick_sync(index: int) -> None:
    _ENTRIES[index].append(time.time())


async def tick_async(index: int) -> None:
    _ENTRIES[index].append(time.time())


def _w3(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return {kind: asyncio.run(_w3_on_loop(kind, sizes)) for kind in _KINDS}
    return {kind: _w3_from_thread(kind, sizes) for kind in _KINDS}


def _w3_add(scheduler: Any, kind: str, sizes: Sizes) -> float:
    """Add the tasks, all starting at one instant; return it (epoch seconds)."""
    _ENTRIES.clear()
    first = _now() + timedelta(seconds=0.05 + 0.002 * sizes.w3_tasks)  # time to add them all
    handler = tick_async if kind == "async" else tick_sync
    for i in range(sizes.w3_tasks):
        _ENTRIES[i] = []
        scheduler.add_job(
            handler, "interval", seconds=sizes.w3_interval, start_date=first, args=(i,)
        )
    return first.timestamp()


def _w3_result(anchor: float, stop: float, sizes: Sizes) -> dict[str, Any]:
    return {
        "entries": [list(_ENTRIES[i]) for i in range(sizes.w3_tasks)],
        "anchors": [anchor] * sizes.w3_tasks,
        "stop": stop,
    }


def _w3_from_thread(kind: str, sizes: Sizes) -> dict[str, Any]:
    with from_thread(kind, sizes.w3_tasks) as scheduler:
        anchor = _w3_add(scheduler, kind, sizes)
        sleep(max(0.0, anchor - time.time()) + sizes.w3_seconds)
        stop = time.time()
    return _w3_result(anchor, stop, sizes)


async def _w3_on_loop(kind: str, sizes: Sizes) -> dict[str, Any]:
    async with on_loop(kind, sizes.w3_tasks) as scheduler:
        anchor = _w3_add(scheduler, kind, sizes)
        await asyncio.sleep(max(0.0, anchor - time.time()) + sizes.w3_seconds)
        stop = time.time()
    return _w3_result(anchor, stop, sizes)


# W5 ----------------------------------------------------------------------------------

_WARM_LISTINGS = 5


def idle_handler() -> None:
    pass


def _w5(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return asyncio.run(_w5_on_loop(sizes))
    return _w5_from_thread(sizes)


def _w5_from_thread(sizes: Sizes) -> dict[str, Any]:
    n = sizes.w5_tasks
    out: dict[str, Any] = {"tasks": n, "rss_before_mb": rss_mb()}
    with from_thread("sync") as scheduler:
        start = perf_counter()
        for _ in range(n):
            scheduler.add_job(idle_handler, "interval", seconds=_HOUR)
        out["add_seconds"] = perf_counter() - start
        out["settle_seconds"] = settle_cpu()
        out["rss_after_mb"] = rss_mb()
        out["threads"] = thread_count()
        cpu, wall = cpu_seconds(), perf_counter()
        sleep(sizes.w5_idle_seconds)
        out["idle_cpu_seconds"] = cpu_seconds() - cpu
        out["idle_wall_seconds"] = perf_counter() - wall
        start = perf_counter()
        out["list_all_count"] = len(scheduler.get_jobs())
        out["list_all_seconds"] = perf_counter() - start
    out["peak_rss_mb"] = peak_rss_mb()
    with from_thread("sync") as scheduler:
        for _ in range(sizes.w5_listing):
            scheduler.add_job(idle_handler, "interval", seconds=_HOUR)
        settle_cpu()
        out["listing_seconds"] = _timed_listings(scheduler, sizes.w5_listing)
    return out


async def _w5_on_loop(sizes: Sizes) -> dict[str, Any]:
    n = sizes.w5_tasks
    out: dict[str, Any] = {"tasks": n, "rss_before_mb": rss_mb()}
    async with on_loop(None) as scheduler:
        start = perf_counter()
        for _ in range(n):
            scheduler.add_job(idle_handler, "interval", seconds=_HOUR)
        out["add_seconds"] = perf_counter() - start
        out["settle_seconds"] = await asettle_cpu()
        out["rss_after_mb"] = rss_mb()
        out["threads"] = thread_count()
        cpu, wall = cpu_seconds(), perf_counter()
        await asyncio.sleep(sizes.w5_idle_seconds)
        out["idle_cpu_seconds"] = cpu_seconds() - cpu
        out["idle_wall_seconds"] = perf_counter() - wall
        start = perf_counter()
        out["list_all_count"] = len(scheduler.get_jobs())
        out["list_all_seconds"] = perf_counter() - start
    out["peak_rss_mb"] = peak_rss_mb()
    async with on_loop(None) as scheduler:
        for _ in range(sizes.w5_listing):
            scheduler.add_job(idle_handler, "interval", seconds=_HOUR)
        await asettle_cpu()
        out["listing_seconds"] = _timed_listings(scheduler, sizes.w5_listing)
    return out


def _timed_listings(scheduler: Any, count: int) -> list[float]:
    import gc

    timings: list[float] = []
    for _ in range(1 + _WARM_LISTINGS):
        gc.collect()
        start = perf_counter()
        listed = scheduler.get_jobs()
        timings.append(perf_counter() - start)
        if len(listed) != count:
            raise RuntimeError(f"{NAME}: get_jobs() listed {len(listed)} of {count}")
    return timings


# W7 ----------------------------------------------------------------------------------

_W7_WARMUP = 3
_W7_AFTER_A_JOB = 10


def _w7(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return asyncio.run(_w7_on_loop(sizes))
    return _w7_from_thread(sizes)


def _w7_from_thread(sizes: Sizes) -> dict[str, Any]:
    idle: list[float] = []
    starts: list[float] = []
    for i in range(_W7_WARMUP + sizes.w7_samples):
        scheduler = background()
        start = perf_counter()
        scheduler.start()
        started = perf_counter()
        scheduler.shutdown()
        if i >= _W7_WARMUP:
            idle.append(perf_counter() - start)
            starts.append(started - start)
    after_job: list[float] = []
    for _ in range(min(_W7_AFTER_A_JOB, sizes.w7_samples)):
        scheduler = background()
        ends = Ends()
        ends.listen(scheduler)
        scheduler.start()
        scheduler.add_job(trivial_sync)
        ends.wait(10.0)
        sleep(0.05)
        start = perf_counter()
        scheduler.shutdown()
        after_job.append(perf_counter() - start)
    return {"idle": idle, "start_only": starts, "exit_after_a_job": after_job}


async def _w7_on_loop(sizes: Sizes) -> dict[str, Any]:
    idle: list[float] = []
    for i in range(_W7_WARMUP + sizes.w7_samples):
        scheduler = asyncio_scheduler(None)
        start = perf_counter()
        scheduler.start()
        await stop_on_loop(scheduler)
        if i >= _W7_WARMUP:
            idle.append(perf_counter() - start)
    after_job: list[float] = []
    for _ in range(min(_W7_AFTER_A_JOB, sizes.w7_samples)):
        scheduler = asyncio_scheduler(None)
        ends = Ends(asyncio.get_running_loop())
        ends.listen(scheduler)
        scheduler.start()
        scheduler.add_job(trivial_async)
        await ends.await_reached(10.0)
        await asyncio.sleep(0.05)
        start = perf_counter()
        await stop_on_loop(scheduler)
        after_job.append(perf_counter() - start)
    return {"idle": idle, "exit_after_a_job": after_job}


# W9 ----------------------------------------------------------------------------------


def noop() -> None:
    pass


def _w9(unit: str, sizes: Sizes) -> dict[str, Any]:
    n = sizes.w9_samples
    gap = sizes.w9_gap
    ends = Ends()
    ends.expect(n)
    out: dict[str, Any] = {}

    def timed(call: Callable[[Any], Any], arguments: list[Any]) -> list[float]:
        samples: list[float] = []
        for argument in arguments:
            start = perf_counter()
            call(argument)
            samples.append(perf_counter() - start)
            if gap:
                sleep(gap)
        return samples

    with from_thread("sync") as scheduler:
        ends.listen(scheduler)
        ids: list[str] = []
        out["add_task"] = timed(
            lambda _: ids.append(scheduler.add_job(noop, "interval", seconds=_HOUR).id),
            list(range(n)),
        )
        out["get_task"] = timed(scheduler.get_job, ids)
        out["pause_task"] = timed(scheduler.pause_job, ids)
        out["resume_task"] = timed(scheduler.resume_job, ids)
        out["run_task_immediately"] = timed(
            lambda job_id: scheduler.modify_job(job_id, next_run_time=_now()), ids
        )
        ends.wait()
    out["ends"] = ends.as_dict()
    return out


# W10 ---------------------------------------------------------------------------------

#: What an APScheduler user imports to schedule from a thread.
IMPORT = "from apscheduler.schedulers.background import BackgroundScheduler"


def _w10(unit: str, sizes: Sizes) -> dict[str, Any]:
    from .w10_import import time_command  # imports nothing of quiv

    return {"seconds": time_command(IMPORT, sizes.w10_runs)}


_UNITS: dict[str, Callable[[str, Sizes], dict[str, Any]]] = {
    "W1": _w1,
    "W2": _w2,
    "W3": _w3,
    "W5": _w5,
    "W7": _w7,
    "W9": _w9,
    "W10": _w10,
}


# -- figures (in the runner's process, next to quiv's rows) ---------------------------


def figures(workload: str, data: dict[str, dict[str, Any]], sizes: Sizes) -> list[PeerFigure]:
    """The peer's figures of one workload, named like quiv's rows they sit beside."""
    out: list[PeerFigure] = []

    def add(variant: str, name: str, value: float, how: str) -> None:
        out.append(PeerFigure(workload, variant, name, value, how))

    for unit, measured in data.items():
        if "error" in measured:
            continue
        if workload in ("W1", "W2", "W3"):
            for kind in _KINDS:
                variant = f"{unit} / {kind} handler"
                pool = sizes.w3_tasks if workload == "W3" else _POOL
                how = setup(unit, kind, pool)
                for name, value in _FIGURES[workload](measured[kind], sizes):
                    add(variant, name, value, how)
        else:
            how = setup(unit, None)
            for name, value in _FIGURES[workload](measured, sizes):
                add(unit, name, value, how)
    return out


def _w1_figures(measured: dict[str, Any], sizes: Sizes) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for call, label in (("add", "add_task"), ("run_now", "run_task_immediately")):
        summary = distribution(measured[call])
        for pct in (50, 99):
            rows.append((f"{label} p{pct}", float(summary[f"p{pct}_ms"] or 0.0)))
    return rows


def _w2_figures(measured: dict[str, Any], sizes: Sizes) -> list[tuple[str, float]]:
    n = measured["jobs"]
    return [
        ("jobs/s, add to all recorded", n / measured["seconds"]),
        ("add phase rate", n / measured["add_seconds"]),
        ("jobs not recorded completed", float(n - measured["executed"])),
    ]


def _w3_figures(measured: dict[str, Any], sizes: Sizes) -> list[tuple[str, float]]:
    from .w3_cadence import analyse

    found = analyse(measured["entries"], measured["anchors"], measured["stop"], sizes.w3_interval)
    return [
        ("lateness p50", float(found["lateness"].get("p50_ms", float("nan")))),
        ("lateness p99", float(found["lateness"].get("p99_ms", float("nan")))),
        (
            "lateness p99, first runs excluded",
            float(found["lateness_after_first_run"].get("p99_ms", float("nan"))),
        ),
        ("lateness max", float(found["lateness"].get("max_ms", float("nan")))),
        ("missed runs", float(found["missed"] + found["tasks_that_never_ran"])),
    ]


def _w5_figures(measured: dict[str, Any], sizes: Sizes) -> list[tuple[str, float]]:
    import statistics

    n = measured["tasks"]
    timings = measured["listing_seconds"]
    return [
        (f"add rate ({n:,} tasks)", n / measured["add_seconds"]),
        (f"RSS growth, {n:,} tasks", measured["rss_after_mb"] - measured["rss_before_mb"]),
        (
            f"idle CPU over {sizes.w5_idle_seconds:g}s",
            100.0 * measured["idle_cpu_seconds"] / measured["idle_wall_seconds"],
        ),
        (f"get_all_tasks() of {sizes.w5_listing:,}, first", timings[0] * 1e3),
        (f"get_all_tasks() of {sizes.w5_listing:,}, repeat", statistics.median(timings[1:]) * 1e3),
        (
            f"get_all_tasks() of {measured['list_all_count']:,}, first",
            measured["list_all_seconds"] * 1e3,
        ),
    ]


def _w7_figures(measured: dict[str, Any], sizes: Sizes) -> list[tuple[str, float]]:
    import statistics

    label = "start() + shutdown()" if "start_only" in measured else "enter + exit"
    idle = distribution(measured["idle"])
    rows = [(f"{label}, idle, p{pct}", float(idle[f"p{pct}_ms"] or 0.0)) for pct in (50, 99)]
    if "start_only" in measured:
        rows.append(("start() alone, idle, p50", statistics.median(measured["start_only"]) * 1e3))
    rows.append(
        (
            "exit after one job ran (SQLite open), p50",
            statistics.median(measured["exit_after_a_job"]) * 1e3,
        )
    )
    return rows


def _w9_figures(measured: dict[str, Any], sizes: Sizes) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    for call in ("add_task", "get_task", "pause_task", "resume_task", "run_task_immediately"):
        summary = distribution(measured[call])
        rows += [(f"{call} p{pct}", float(summary[f"p{pct}_ms"] or 0.0)) for pct in (50, 99)]
    return rows


def _w10_figures(measured: dict[str, Any], sizes: Sizes) -> list[tuple[str, float]]:
    import statistics

    return [("python -c 'import quiv', p50", statistics.median(measured["seconds"]))]


_FIGURES: dict[str, Callable[[dict[str, Any], Sizes], list[tuple[str, float]]]] = {
    "W1": _w1_figures,
    "W2": _w2_figures,
    "W3": _w3_figures,
    "W5": _w5_figures,
    "W7": _w7_figures,
    "W9": _w9_figures,
    "W10": _w10_figures,
}


# -- the child process ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.peer_apscheduler W2 Quiv AsyncQuiv --sizes full --out F``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_apscheduler")
    parser.add_argument("workload", nargs="?")
    parser.add_argument("units", nargs="*")
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--version", action="store_true", help="print APScheduler's version")
    args = parser.parse_args(argv)
    if args.version:
        print(version())
        return 0
    if args.workload is None or args.out is None:
        parser.error("a workload and --out are required")
    sizes = SIZES[args.sizes]
    results: dict[str, Any] = {}
    for unit in args.units or units(args.workload, sizes):
        print(f"  [{args.workload}] {NAME} {unit} ...", file=sys.stderr, flush=True)
        started = perf_counter()
        try:
            results[unit] = run_unit(args.workload, unit, sizes)
        except Exception:
            import traceback

            results[unit] = {"error": traceback.format_exc()}
            print(results[unit]["error"], file=sys.stderr, flush=True)
        print(
            f"  [{args.workload}] {NAME} {unit} done in {perf_counter() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    args.out.write_text(json.dumps({"version": version(), "units": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
