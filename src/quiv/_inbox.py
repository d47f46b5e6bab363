"""The way into the scheduler's loop from other threads.

Anything another thread wants done on the loop (a facade call, a worker
thread's report that its job ended, a batch of progress) is a callable
appended to one thread-safe queue. One service task on the loop runs them, in
the order they came, inside itself: anyio asks the running task which async
library it is on (through ``sniffio`` when that is installed), so code that
creates an event, a cancel scope or a task must never run in a bare loop
callback, which has no task.

The task sleeps on an event when the queue is empty, and only the first
callable queued after that pays for waking it (one ``call_soon_threadsafe``);
everything queued meanwhile runs in the same batch. A batch is what was queued
when it began, so a producer that keeps up with the loop cannot keep it in one
batch forever.

The queue is bounded: a thread that finds ``limit`` callables waiting blocks
until the loop has run them (the facade's ``add_task`` in a tight loop is
held back, never lets memory grow, and loses nothing). The loop's own thread
never blocks here; what it queues (an async handler's progress) is let in
above the bound, since it could never be drained while the loop waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["INBOX_LIMIT", "Inbox"]

#: Callables that may wait in the queue before other threads are held back.
INBOX_LIMIT = 2048


class Inbox:
    """Runs callables handed over from any thread inside one task on the loop."""

    def __init__(
        self, logger: logging.Logger | logging.LoggerAdapter[Any], limit: int | None = None
    ) -> None:
        self._logger = logger
        self._limit = INBOX_LIMIT if limit is None else limit
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when a batch has run
        self._waiters = 0  # threads blocked in submit() for room
        self._queue: deque[Callable[[], object]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup: anyio.Event | None = None  # set while the task sleeps on it
        self._closed = False
        self._queued = 0  # callables accepted so far
        self._ran = 0  # of those, how many have run (only the loop counts them)

    def settled(self) -> bool:
        """Whether every callable queued before this call has run (from any thread)."""
        return self._ran >= self._queued

    def submit(self, call: Callable[[], object]) -> bool:
        """Queue ``call`` to run on the loop; False if the inbox is closed (it never will).

        From any thread but the loop's, waits while the queue is full.
        """
        with self._lock:
            if self._closed or self._loop is None:
                return False
            full = len(self._queue) >= self._limit
            if full and threading.get_ident() != self._loop_thread and not self._wait_for_room():
                return False
            self._queue.append(call)
            self._queued += 1
            wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:  # the task sleeps: wake it (setting an event needs no task)
            try:
                self._loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the loop closed under us
                return False
        return True

    def _wait_for_room(self) -> bool:
        """Wait, holding the lock, until the queue has room; False if it closed meanwhile."""
        self._waiters += 1
        try:
            while len(self._queue) >= self._limit and not self._closed:
                self._room.wait(1.0)  # a timeout keeps the wait interruptible
        finally:
            self._waiters -= 1
        return not self._closed

    async def run(self) -> None:
        """Run what is queued until cancelled; then run what is left and refuse more."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        queue = self._queue
        try:
            while True:
                wakeup = None
                with self._lock:
                    if not queue:
                        wakeup = self._wakeup = anyio.Event()
                if wakeup is not None:
                    await wakeup.wait()
                    continue
                self._run_queued(len(queue))
                await anyio.lowlevel.checkpoint()  # let the rest of the loop run between batches
        finally:
            with self._lock:
                self._closed = True
                self._room.notify_all()
            while queue:  # accepted before the close: every one of them runs
                self._run_queued(len(queue))

    def _run_queued(self, count: int) -> None:
        queue = self._queue
        for _ in range(count):  # deque.popleft is atomic; threads only ever append
            call = queue.popleft()
            try:
                call()
            except Exception:  # a bug of ours must not stop the next call
                self._logger.exception("quiv: a call handed to the event loop raised")
            self._ran += 1
        if self._waiters:
            with self._lock:
                self._room.notify_all()
