"""W9 facade call cost: what one ``Quiv`` call costs the thread that makes it.

The calls are made from the main thread (an ordinary thread, not the
scheduler's loop thread), one at a time with ``gap`` seconds of idleness in
between, so each figure is the cost of a call on an otherwise idle scheduler,
not of a queue filling up (W2 and W5 measure bursts). Only the call itself is
timed. In order, on ``n`` tasks added by the first phase (interval and delay
3600 s, so none runs by itself), pool 10, sync handlers:

* ``add_task`` (the ``n`` tasks), then ``get_task`` on each;
* ``pause_task`` on each, then ``resume_task(delay=3600)`` (delay 0 would run it);
* ``run_task_immediately`` on each (one trivial run each), then ``get_job`` on
  each of those runs once all have completed;
* ``cancel_job`` on a running job: a handler waiting on its stop event is run,
  its ``JOB_STARTED`` listener gives the id, the call is timed, and the next
  sample waits for ``JOB_CANCELLED``.

Ceilings: for the writes, ``loop.call_soon_threadsafe`` to a loop running in
another thread (the least a call that hands work to the loop costs; a blocking
round trip, which waits for the loop to answer, is in the details); for the
reads, a ``Task`` or ``Job`` snapshot built with ``model_construct`` from a
dict under a ``threading.Lock`` (the least a read of shared state costs).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timezone
from time import perf_counter, sleep
from typing import Any

from quiv import Event, Job, JobStatus, Quiv, Task, TaskStatus

from ._harness import Metric, Sizes, distribution, quiet_logger

TITLE = "facade call cost (one Quiv call from an ordinary thread, idle scheduler)"
ISOLATE = False

_POOL = 10
_LONG = 3600
_TIMEOUT = 10.0
_CANCEL_SAMPLES = 200  # at most: each one runs and cancels a job

#: Quiv method -> (target p50 in ms, ceiling kind).
CALLS: dict[str, tuple[float, str]] = {
    "add_task": (0.05, "write"),
    "run_task_immediately": (0.05, "write"),
    "pause_task": (0.05, "write"),
    "resume_task": (0.05, "write"),
    "cancel_job": (0.05, "write"),
    "get_task": (0.1, "read_task"),
    "get_job": (0.1, "read_job"),
}


def units(sizes: Sizes) -> list[str]:
    return ["Quiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "Quiv":
        return _sync_facade(sizes)
    if unit == "ceiling":
        return _ceiling(sizes)
    raise ValueError(unit)


def noop() -> None:
    pass


def wait_for_stop(_stop_event: threading.Event) -> None:
    _stop_event.wait(_TIMEOUT)


def timed_calls(call: Callable[[Any], Any], arguments: list[Any], gap: float) -> list[float]:
    """Seconds each ``call(argument)`` took, with ``gap`` seconds of idleness after each."""
    samples: list[float] = []
    for argument in arguments:
        start = perf_counter()
        call(argument)
        samples.append(perf_counter() - start)
        if gap:
            sleep(gap)
    return samples


class _Ends:
    """Job ids as their listeners report them (listeners run on quiv's loop thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.completed: list[str] = []
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.changed = threading.Condition(self.lock)

    def listener(self, into: list[str]) -> Callable[[Event, Task, Job], None]:
        def on_event(event: Event, task: Task, job: Job) -> None:
            with self.changed:
                into.append(job.id)
                self.changed.notify_all()

        return on_event

    def wait(self, into: list[str], count: int) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(into) >= count, _TIMEOUT):
                raise TimeoutError(f"W9: {count} events expected, {len(into)} seen")


def _sync_facade(sizes: Sizes) -> dict[str, Any]:
    n = sizes.w9_samples
    gap = sizes.w9_gap
    logger, counted = quiet_logger("w9")
    ends = _Ends()
    data: dict[str, Any] = {}
    with Quiv(pool_size=_POOL, logger=logger) as scheduler:
        scheduler.add_listener(Event.JOB_COMPLETED, ends.listener(ends.completed))
        scheduler.add_listener(Event.JOB_STARTED, ends.listener(ends.started))
        scheduler.add_listener(Event.JOB_CANCELLED, ends.listener(ends.cancelled))
        ids: list[str] = []

        def add(i: int) -> None:
            ids.append(scheduler.add_task(f"w9-{i}", noop, interval=_LONG, delay=_LONG))

        data["add_task"] = timed_calls(add, list(range(n)), gap)
        data["get_task"] = timed_calls(scheduler.get_task, ids, gap)
        data["pause_task"] = timed_calls(scheduler.pause_task, ids, gap)
        data["resume_task"] = timed_calls(
            lambda task_id: scheduler.resume_task(task_id, delay=_LONG), ids, gap
        )
        data["run_task_immediately"] = timed_calls(scheduler.run_task_immediately, ids, gap)
        ends.wait(ends.completed, n)
        data["get_job"] = timed_calls(scheduler.get_job, list(ends.completed), gap)

        blocker = scheduler.add_task("w9-cancel", wait_for_stop, interval=_LONG, delay=_LONG)
        before = len(ends.started) + 1  # the run_task_immediately phase started n jobs
        samples: list[float] = []
        for i in range(min(n, _CANCEL_SAMPLES)):
            scheduler.run_task_immediately(blocker)
            ends.wait(ends.started, before + i)
            job_id = ends.started[-1]
            start = perf_counter()
            cancelled = scheduler.cancel_job(job_id)
            samples.append(perf_counter() - start)
            if not cancelled:
                raise RuntimeError("W9: cancel_job did not find the running job")
            ends.wait(ends.cancelled, i + 1)
            if gap:
                sleep(gap)
        data["cancel_job"] = samples
    data["log_counts"] = counted.counts
    return data


# -- ceilings ----------------------------------------------------------------------


def _loop_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="w9-loop", daemon=True)
    thread.start()
    return loop, thread


def _ceiling(sizes: Sizes) -> dict[str, Any]:
    n = sizes.w9_samples
    gap = sizes.w9_gap
    loop, thread = _loop_thread()
    try:
        hand_off = timed_calls(lambda _: loop.call_soon_threadsafe(noop), list(range(n)), gap)

        def round_trip(_: object) -> None:
            future: Future[None] = Future()
            loop.call_soon_threadsafe(future.set_result, None)
            future.result()

        blocking = timed_calls(round_trip, list(range(n)), gap)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    lock = threading.Lock()
    when = datetime.now(timezone.utc)
    tasks: dict[str, dict[str, Any]] = {
        f"id-{i}": {
            "id": f"id-{i}",
            "task_name": f"w9-{i}",
            "args": (),
            "kwargs": {},
            "interval_seconds": float(_LONG),
            "fixed_interval": True,
            "run_once": False,
            "status": TaskStatus.ACTIVE,
            "next_run_at": when,
        }
        for i in range(n)
    }
    jobs: dict[str, dict[str, Any]] = {
        f"job-{i}": {
            "id": f"job-{i}",
            "task_id": f"id-{i}",
            "task_name": f"w9-{i}",
            "status": JobStatus.COMPLETED,
            "started_at": when,
            "ended_at": when,
            "duration_seconds": 0.0,
            "error_message": None,
        }
        for i in range(n)
    }
    Task.model_construct(id="warm-up")  # pydantic's one-time set-up is not a read
    Job.model_construct(id="warm-up")

    def read_task(task_id: str) -> Task:
        with lock:
            return Task.model_construct(**tasks[task_id])

    def read_job(job_id: str) -> Job:
        with lock:
            return Job.model_construct(**jobs[job_id])

    return {
        "write": hand_off,
        "round_trip": blocking,
        "read_task": timed_calls(read_task, list(tasks), gap),
        "read_job": timed_calls(read_job, list(jobs), gap),
    }


# -- summary -----------------------------------------------------------------------


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    ours = data.get("Quiv")
    if ours is None or "error" in ours:
        return metrics
    ceiling = data.get("ceiling", {})
    round_trip = distribution(ceiling.get("round_trip", []))
    for call, (target, kind) in CALLS.items():
        mine = distribution(ours[call])
        raw = distribution(ceiling.get(kind, []))
        for pct in (50, 99):
            key = f"p{pct}_ms"
            raw_value = raw.get(key)
            metrics.append(
                Metric(
                    "W9",
                    "Quiv",
                    f"{call} p{pct}",
                    float(mine[key] or 0.0),
                    "ms",
                    "lower",
                    ceiling=float(raw_value) if raw_value is not None else None,
                    target=target if pct == 50 else None,
                    details={"quiv": mine, "ceiling": raw, "blocking_round_trip": round_trip}
                    if pct == 50
                    else {},
                )
            )
    return metrics
