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
everything queued meanwhile runs in the same batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["Inbox"]


class Inbox:
    """Runs callables handed over from any thread inside one task on the loop."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._queue: deque[Callable[[], object]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: anyio.Event | None = None  # set while the task sleeps on it
        self._closed = False

    def submit(self, call: Callable[[], object]) -> bool:
        """Queue ``call`` to run on the loop; False if the inbox is closed (it never will)."""
        with self._lock:
            if self._closed or self._loop is None:
                return False
            self._queue.append(call)
            wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:  # the task sleeps: wake it (setting an event needs no task)
            try:
                self._loop.call_soon_threadsafe(wakeup.set)
            except RuntimeError:  # the loop closed under us
                return False
        return True

    async def run(self) -> None:
        """Run what is queued until cancelled; then run what is left and refuse more."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
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
                self._run_queued()
                await anyio.lowlevel.checkpoint()  # let the rest of the loop run between batches
        finally:
            with self._lock:
                self._closed = True
            self._run_queued()  # accepted before the close: every one of them runs

    def _run_queued(self) -> None:
        queue = self._queue
        while queue:  # deque.popleft is atomic; threads only ever append
            call = queue.popleft()
            try:
                call()
            except Exception:  # a bug of ours must not stop the next call
                self._logger.exception("quiv: a call handed to the event loop raised")
