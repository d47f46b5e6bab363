"""W6 cancel: ``cancel_job`` on a handler that polls its stop event every 1 ms.

Each sample starts a run-once job, waits for its ``JOB_STARTED`` listener and
3 ms more (so the handler is in its polling loop), then calls ``cancel_job``.
Three instants are noted: the call, the handler seeing the event (its last
line), and the ``JOB_CANCELLED`` listener's entry, at which point the job is
recorded ``cancelled`` (checked with ``get_job``).

* total: call -> listener, which includes up to one polling period;
* overhead: handler return -> listener, quiv's own part (target <= 1 ms).

Ceiling: the same polling handler run with ``to_thread.run_sync`` (sync) or
as a task (async), stopped by setting a ``threading.Event``; its overhead is
from the handler's last line to the code awaiting it resuming on the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from time import perf_counter
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal

from quiv import AsyncQuiv, Event, Job, JobStatus, Quiv, Task

from ._harness import Box, Metric, Sizes, distribution, quiet_logger

TITLE = "cancel (handler polls its stop event every 1 ms)"
ISOLATE = False

_POLL = 0.001
_SETTLE = 0.003
_TIMEOUT = 10.0
_TARGET_OVERHEAD_MS = 1.0

_VARIANTS = (("AsyncQuiv", "sync"), ("AsyncQuiv", "async"), ("Quiv", "sync"), ("Quiv", "async"))

# The handlers note when they saw the stop event here (they run in this process).
_SEEN = Box(0.0)


def poll_sync(_stop_event: threading.Event) -> None:
    while not _stop_event.is_set():
        time.sleep(_POLL)
    _SEEN.value = perf_counter()


async def poll_async(_stop_event: threading.Event) -> None:
    while not _stop_event.is_set():  # noqa: ASYNC110 - polling is the workload
        await anyio.sleep(_POLL)
    _SEEN.value = perf_counter()


def _handler(kind: str) -> Callable[..., Any]:
    return poll_async if kind == "async" else poll_sync


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return {kind: anyio.run(_async_core, kind, sizes) for kind in ("sync", "async")}
    if unit == "Quiv":
        return {kind: _sync_facade(kind, sizes) for kind in ("sync", "async")}
    if unit == "ceiling":
        data = {f"AsyncQuiv/{k}": anyio.run(_ceiling_on_loop, k, sizes) for k in ("sync", "async")}
        data.update({f"Quiv/{k}": _ceiling_through_portal(k, sizes) for k in ("sync", "async")})
        return data
    raise ValueError(unit)


# -- quiv ------------------------------------------------------------------------


async def _async_core(kind: str, sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w6")
    started = Box(anyio.Event())
    cancelled = Box(anyio.Event())
    job_id = Box("")
    heard = Box(0.0)

    def on_started(event: Event, task: Task, job: Job) -> None:
        job_id.value = job.id
        started.value.set()

    def on_cancelled(event: Event, task: Task, job: Job) -> None:
        heard.value = perf_counter()
        cancelled.value.set()

    totals: list[float] = []
    overheads: list[float] = []
    not_recorded = 0
    async with AsyncQuiv(logger=logger) as scheduler:
        await scheduler.add_listener(Event.JOB_STARTED, on_started)
        await scheduler.add_listener(Event.JOB_CANCELLED, on_cancelled)
        for _ in range(sizes.w6_samples):
            started.value, cancelled.value = anyio.Event(), anyio.Event()
            await scheduler.add_task("w6", _handler(kind), interval=3600, run_once=True)
            with anyio.fail_after(_TIMEOUT):
                await started.value.wait()
            await anyio.sleep(_SETTLE)
            call = perf_counter()
            await scheduler.cancel_job(job_id.value)
            with anyio.fail_after(_TIMEOUT):
                await cancelled.value.wait()
            totals.append(heard.value - call)
            overheads.append(heard.value - _SEEN.value)
            if (await scheduler.get_job(job_id.value)).status is not JobStatus.CANCELLED:
                not_recorded += 1
    return {
        "total": totals,
        "overhead": overheads,
        "not_recorded_cancelled": not_recorded,
        "log_counts": counted.counts,
    }


def _sync_facade(kind: str, sizes: Sizes) -> dict[str, Any]:
    logger, counted = quiet_logger("w6")
    started = threading.Event()
    cancelled = threading.Event()
    job_id = Box("")
    heard = Box(0.0)

    def on_started(event: Event, task: Task, job: Job) -> None:
        job_id.value = job.id
        started.set()

    def on_cancelled(event: Event, task: Task, job: Job) -> None:
        heard.value = perf_counter()
        cancelled.set()

    totals: list[float] = []
    overheads: list[float] = []
    not_recorded = 0
    with Quiv(logger=logger) as scheduler:
        scheduler.add_listener(Event.JOB_STARTED, on_started)
        scheduler.add_listener(Event.JOB_CANCELLED, on_cancelled)
        for _ in range(sizes.w6_samples):
            started.clear()
            cancelled.clear()
            scheduler.add_task("w6", _handler(kind), interval=3600, run_once=True)
            if not started.wait(_TIMEOUT):
                raise TimeoutError("W6: the job did not start")
            time.sleep(_SETTLE)
            call = perf_counter()
            scheduler.cancel_job(job_id.value)
            if not cancelled.wait(_TIMEOUT):
                raise TimeoutError("W6: the job was not cancelled")
            totals.append(heard.value - call)
            overheads.append(heard.value - _SEEN.value)
            if scheduler.get_job(job_id.value).status is not JobStatus.CANCELLED:
                not_recorded += 1
    return {
        "total": totals,
        "overhead": overheads,
        "not_recorded_cancelled": not_recorded,
        "log_counts": counted.counts,
    }


# -- ceilings ----------------------------------------------------------------------


async def _raw_job(
    kind: str, stop: threading.Event, returned: Box, done: Callable[[], None]
) -> None:
    if kind == "sync":
        await anyio.to_thread.run_sync(poll_sync, stop)
    else:
        await poll_async(stop)
    returned.value = perf_counter()
    done()


async def _ceiling_on_loop(kind: str, sizes: Sizes) -> dict[str, Any]:
    totals: list[float] = []
    overheads: list[float] = []
    returned = Box(0.0)
    async with anyio.create_task_group() as task_group:
        for _ in range(sizes.w6_samples):
            stop = threading.Event()
            finished = anyio.Event()
            task_group.start_soon(_raw_job, kind, stop, returned, finished.set)
            await anyio.sleep(_SETTLE)
            call = perf_counter()
            stop.set()
            with anyio.fail_after(_TIMEOUT):
                await finished.wait()
            totals.append(returned.value - call)
            overheads.append(returned.value - _SEEN.value)
    return {"total": totals, "overhead": overheads}


def _ceiling_through_portal(kind: str, sizes: Sizes) -> dict[str, Any]:
    totals: list[float] = []
    overheads: list[float] = []
    returned = Box(0.0)
    finished = threading.Event()
    with start_blocking_portal() as portal:
        for _ in range(sizes.w6_samples):
            stop = threading.Event()
            finished.clear()
            portal.start_task_soon(_raw_job, kind, stop, returned, finished.set)
            time.sleep(_SETTLE)
            call = perf_counter()
            stop.set()
            if not finished.wait(_TIMEOUT):
                raise TimeoutError("W6 ceiling: the job did not end")
            totals.append(returned.value - call)
            overheads.append(returned.value - _SEEN.value)
    return {"total": totals, "overhead": overheads}


# -- summary -----------------------------------------------------------------------


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    ceiling = data.get("ceiling", {})
    for facade, kind in _VARIANTS:
        ours = data.get(facade, {}).get(kind)
        if ours is None:
            continue
        raw = ceiling.get(f"{facade}/{kind}")
        variant = f"{facade} / {kind} handler"
        for series, label in (
            ("overhead", "handler return -> listener"),
            ("total", "cancel -> listener"),
        ):
            mine = distribution(ours[series])
            base = distribution(raw[series]) if raw else None
            for pct in (50, 99):
                key = f"p{pct}_ms"
                metrics.append(
                    Metric(
                        "W6",
                        variant,
                        f"{label} p{pct}",
                        float(mine[key] or 0.0),
                        "ms",
                        "lower",
                        ceiling=float(base[key] or 0.0) if base else None,
                        target=_TARGET_OVERHEAD_MS if series == "overhead" else None,
                        details={"quiv": mine, "ceiling": base} if pct == 99 else {},
                    )
                )
        metrics.append(
            Metric(
                "W6",
                variant,
                "jobs not recorded cancelled",
                float(ours["not_recorded_cancelled"]),
                "jobs",
                "lower",
                target=0.0,
            )
        )
    return metrics
