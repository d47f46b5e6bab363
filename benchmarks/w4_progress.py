"""W4 progress: one sync job calls ``_progress_hook`` 50,000 times.

Each payload carries its sequence number and ``perf_counter()`` at the call;
the async progress callback notes its own ``perf_counter()`` at entry. The
rate is payloads over the time from the first hook call to the last
delivery; latency is per payload, call to callback entry; order must be exact.

Variants:

* AsyncQuiv: the callback runs on the scheduler's own loop;
* Quiv + main_loop: the main thread runs a host asyncio loop and passes it as
  ``main_loop``; the scheduler runs on its private loop thread, so payloads
  travel worker thread -> private loop -> host loop.

Ceiling: the least a correct design must do, one hop from a worker thread to
the loop that runs the callback, batched and bounded: the thread appends to
a locked deque and calls ``loop.call_soon_threadsafe`` only for the first
payload of a batch, and waits while 256 payloads are undelivered; on the
loop, one consumer task awaits the callback for each payload.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import anyio

from quiv import AsyncQuiv, Quiv

from ._harness import Metric, Sizes, distribution, quiet_logger

TITLE = "progress (one sync job, 50,000 _progress_hook calls, async callback)"
ISOLATE = False

_TIMEOUT = 120.0
_TARGET_RATE = 100_000.0
_TARGET_P99_MS = 5.0
#: The ceiling's bound on undelivered payloads (a producer thread waits beyond it).
_BOUND = 256


def units(sizes: Sizes) -> list[str]:
    return ["AsyncQuiv", "Quiv+main_loop", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "AsyncQuiv":
        return anyio.run(_async_core, sizes)
    if unit == "Quiv+main_loop":
        return anyio.run(_sync_facade_with_host_loop, sizes)
    if unit == "ceiling":
        return anyio.run(_ceiling, sizes)
    raise ValueError(unit)


class _Receiver:
    """The progress callback and what it saw; lives on the loop that runs it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sequence: list[int] = []
        self.latency: list[float] = []
        self.last_delivery = 0.0
        self.done = anyio.Event()

    async def callback(self, i: int, t: float) -> None:
        now = perf_counter()
        self.sequence.append(i)
        self.latency.append(now - t)
        self.last_delivery = now
        if len(self.sequence) == self.n:
            self.done.set()

    def result(self, first_call: float, producer_seconds: float) -> dict[str, Any]:
        return {
            "events": self.n,
            "delivered": len(self.sequence),
            "in_order": self.sequence == list(range(self.n)),
            "seconds": self.last_delivery - first_call,
            "producer_seconds": producer_seconds,
            "latency": self.latency,
        }


# The producer (the job's handler) notes when it started and ended here.
_PRODUCER: dict[str, float] = {}


def produce(n: int, _progress_hook: Callable[..., None]) -> None:
    _PRODUCER["first"] = perf_counter()
    for i in range(n):
        _progress_hook(i=i, t=perf_counter())
    _PRODUCER["end"] = perf_counter()


async def _async_core(sizes: Sizes) -> dict[str, Any]:
    receiver = _Receiver(sizes.w4_events)
    logger, counted = quiet_logger("w4")
    async with AsyncQuiv(logger=logger) as scheduler:
        await scheduler.add_task(
            "w4",
            produce,
            interval=3600,
            run_once=True,
            args=(sizes.w4_events,),
            progress_callback=receiver.callback,
        )
        with anyio.move_on_after(_TIMEOUT):
            await receiver.done.wait()
    result = receiver.result(_PRODUCER["first"], _PRODUCER["end"] - _PRODUCER["first"])
    result["log_counts"] = counted.counts
    return result


async def _sync_facade_with_host_loop(sizes: Sizes) -> dict[str, Any]:
    receiver = _Receiver(sizes.w4_events)
    logger, counted = quiet_logger("w4")
    scheduler = Quiv(logger=logger, main_loop=asyncio.get_running_loop())
    # Blocking calls go through a worker thread so this host loop keeps serving callbacks.
    await anyio.to_thread.run_sync(scheduler.start)
    try:
        add = functools.partial(
            scheduler.add_task,
            "w4",
            produce,
            interval=3600,
            run_once=True,
            args=(sizes.w4_events,),
            progress_callback=receiver.callback,
        )
        await anyio.to_thread.run_sync(add)
        with anyio.move_on_after(_TIMEOUT):
            await receiver.done.wait()
    finally:
        await anyio.to_thread.run_sync(scheduler.shutdown)
    result = receiver.result(_PRODUCER["first"], _PRODUCER["end"] - _PRODUCER["first"])
    result["log_counts"] = counted.counts
    return result


class _RawRelay:
    """A worker thread -> loop hand-off: one ``call_soon_threadsafe`` per batch, bounded.

    The producer waits while ``_BOUND`` payloads are undelivered, so memory and
    latency stay bounded (and waiting releases the GIL to the loop).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[..., Awaitable[None]]
    ) -> None:
        self._loop = loop
        self._callback = callback
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._inbox: deque[dict[str, Any]] = deque()
        self._backlog = 0  # posted and not yet delivered; under the lock
        self._scheduled = False
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()

    def post(self, **payload: Any) -> None:  # any thread
        with self._lock:
            while self._backlog >= _BOUND:
                self._room.wait()
            self._inbox.append(payload)
            self._backlog += 1
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:  # on the loop
        with self._lock:
            self._pending.extend(self._inbox)
            self._inbox.clear()
            self._scheduled = False
        self._wake.set()

    async def consume(self) -> None:
        pending = self._pending
        while True:
            await self._wake.wait()
            self._wake.clear()
            delivered = 0
            while pending:
                await self._callback(**pending.popleft())
                delivered += 1
            with self._lock:
                self._backlog -= delivered
                self._room.notify_all()


async def _ceiling(sizes: Sizes) -> dict[str, Any]:
    receiver = _Receiver(sizes.w4_events)
    relay = _RawRelay(asyncio.get_running_loop(), receiver.callback)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(relay.consume)
        await anyio.to_thread.run_sync(produce, sizes.w4_events, relay.post)
        with anyio.move_on_after(_TIMEOUT):
            await receiver.done.wait()
        task_group.cancel_scope.cancel()
    return receiver.result(_PRODUCER["first"], _PRODUCER["end"] - _PRODUCER["first"])


# -- summary -----------------------------------------------------------------------


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    raw = data.get("ceiling")
    raw_ok = raw is not None and "error" not in raw
    raw_latency = distribution(raw["latency"]) if raw is not None and raw_ok else None
    for unit, variant in (
        ("AsyncQuiv", "AsyncQuiv / callback on its loop"),
        ("Quiv+main_loop", "Quiv / callback on host loop"),
    ):
        ours = data.get(unit)
        if ours is None or "error" in ours:
            continue
        latency = distribution(ours["latency"])
        details = {k: v for k, v in ours.items() if k != "latency"}
        rate = ours["delivered"] / ours["seconds"] if ours["seconds"] > 0 else 0.0
        metrics.append(
            Metric(
                "W4",
                variant,
                "events/s delivered",
                rate,
                "events/s",
                "higher",
                ceiling=raw["delivered"] / raw["seconds"] if raw is not None and raw_ok else None,
                target=_TARGET_RATE,
                details=details,
            )
        )
        for pct, target in ((50, None), (99, _TARGET_P99_MS)):
            key = f"p{pct}_ms"
            metrics.append(
                Metric(
                    "W4",
                    variant,
                    f"delivery latency p{pct}",
                    float(latency[key] or 0.0),
                    "ms",
                    "lower",
                    ceiling=float(raw_latency[key] or 0.0) if raw_latency else None,
                    target=target,
                    details={"quiv": latency, "ceiling": raw_latency} if pct == 99 else {},
                )
            )
        metrics.append(
            Metric(
                "W4",
                variant,
                "delivered in order, none lost",
                float(ours["in_order"] and ours["delivered"] == ours["events"]),
                "bool",
                "higher",
                target=1.0,
                note=f"{ours['delivered']:,} of {ours['events']:,}",
            )
        )
    return metrics
