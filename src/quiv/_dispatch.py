"""Delivery of progress payloads and lifecycle events to user callbacks.

Every callback quiv makes to user code, listeners and progress callbacks alike,
is a :class:`Delivery` sent through one anyio memory object stream to one
dispatcher task. One consumer means one order: a job's ``job_started``, its
progress payloads and its final event reach callbacks in the order they
happened.

Producers on the event loop send directly. Worker threads cannot touch the
stream (it is not thread-safe), so they append to an inbox and the first
append of a batch hands one drain over to the engine's inbox task (see
``_inbox``), which moves the whole batch onto the stream: a burst of
progress from a thread costs one loop wake-up, not one per payload. A thread
that gets too far ahead of the dispatcher waits for it, so memory stays
bounded and no payload is dropped.

Where callbacks run is the sink's business: on the scheduler's own loop, or
forwarded in batches to a host loop in another thread (the sync facade inside
a FastAPI app). A callback that raises is logged and never stops delivery.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._runner import task_is_cancelling

__all__ = ["Delivery", "Dispatcher"]

#: Undelivered callbacks at which a worker thread posting more waits for delivery.
#: Small on purpose: it bounds both memory and how stale a progress payload can be.
HIGH_WATER = 256
#: ...and the level the backlog must fall back to before the thread goes on.
LOW_WATER = HIGH_WATER // 2


@dataclass(frozen=True, slots=True)
class Delivery:
    """One call to make: ``callback(*args, **kwargs)``, awaited if it returns an awaitable."""

    callback: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None


def _describe(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


async def _invoke(delivery: Delivery, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    # Whatever a callback raises, KeyboardInterrupt and SystemExit included, is the
    # callback's failure: it is logged and delivery goes on. Only a real
    # cancellation of the delivering task propagates.
    try:
        result = delivery.callback(*delivery.args, **(delivery.kwargs or {}))
        if inspect.isawaitable(result):
            await result
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError) and task_is_cancelling():
            raise
        logger.exception("quiv callback %s raised; delivery goes on", _describe(delivery.callback))


class _HostLoopSink:
    """Runs callbacks on another asyncio loop, in order, without ever waiting for it.

    Batches are handed over with ``call_soon_threadsafe``; on the host loop one
    short-lived pump task runs them in order and exits when it runs dry. The
    hand-over callback itself touches only asyncio (anyio would need a current
    task there); the callbacks run inside the pump task.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.loop = loop
        self._logger = logger
        self._pending: deque[Delivery] = deque()  # touched on the host loop only
        self._pump: asyncio.Task[None] | None = None

    def forward(self, batch: list[Delivery]) -> bool:
        """Hand ``batch`` to the host loop; False if that loop is gone."""
        try:
            self.loop.call_soon_threadsafe(self._accept, batch)
        except RuntimeError:  # the host loop is closed
            return False
        return True

    def _accept(self, batch: list[Delivery]) -> None:
        self._pending.extend(batch)
        if self._pump is None or self._pump.done():
            self._pump = self.loop.create_task(self._run())

    async def _run(self) -> None:
        pending = self._pending
        while pending:
            await _invoke(pending.popleft(), self._logger)


class Dispatcher:
    """The stream of deliveries and the one task that consumes it."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = logger
        # Created by bind(), on the loop; until then (tasks added before start) posts wait here.
        self._early: list[Delivery] = []
        self._send: MemoryObjectSendStream[Delivery] | None = None
        self._receive: MemoryObjectReceiveStream[Delivery] | None = None
        self._inbox: deque[Delivery] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._pending = 0  # posted and not yet delivered, wherever they are; under _lock
        self._handoff_pending = False
        self._waiters = 0
        self._handoff: Callable[[Callable[[], object]], bool] | None = None
        self._loop_thread: int | None = None
        self._sink: _HostLoopSink | None = None
        self._early_done: anyio.Event | None = None
        self._closed = False

    def deliver_early_on(self, host_loop: asyncio.AbstractEventLoop) -> None:
        """Until :meth:`bind`, hand each delivery to ``host_loop`` at once.

        For an explicit ``main_loop``: listeners hear what happens before the
        scheduler starts (tasks added up front) right away, as in quiv 0.x.
        """
        self._sink = _HostLoopSink(host_loop, self._logger)

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        host_loop: asyncio.AbstractEventLoop | None,
        handoff: Callable[[Callable[[], object]], bool],
    ) -> None:
        """Attach to the running loop; deliver on ``host_loop`` if it is another loop.

        ``handoff`` runs a callable inside a task on ``loop``, from any thread; it
        returns False once it no longer does.
        """
        # Unbounded on purpose: loop-side producers are synchronous transitions that
        # must not fail or wait. Worker threads, which can flood it, are held back
        # by the high-water mark instead.
        self._send, self._receive = anyio.create_memory_object_stream[Delivery](math.inf)
        for delivery in self._early:
            self._send.send_nowait(delivery)
        self._early.clear()
        self._handoff = handoff
        self._loop_thread = threading.get_ident()
        early, self._sink = self._sink, None
        if host_loop is not None and host_loop is not loop:
            # The same sink keeps its order after the deliveries made before start.
            same = early is not None and early.loop is host_loop
            self._sink = early if same else _HostLoopSink(host_loop, self._logger)
        elif early is not None and early.loop is loop:
            # Delivered here from now on: first let the early ones run, in order.
            self._early_done = anyio.Event()
            if not early.forward([Delivery(self._early_done.set)]):
                self._early_done = None

    def post(self, delivery: Delivery) -> None:
        """Queue a delivery from any thread."""
        if self._loop_thread is None or threading.get_ident() == self._loop_thread:
            self._post_on_loop(delivery)
        else:
            self._post_from_thread(delivery)

    def post_many(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            self.post(delivery)

    def _post_on_loop(self, delivery: Delivery) -> None:
        if self._send is None:
            if self._sink is not None and self._sink.forward([delivery]):
                return
            self._early.append(delivery)
            with self._lock:
                self._pending += 1
            return
        try:
            self._send.send_nowait(delivery)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._logger.debug("quiv dropped a callback posted after shutdown")
            return
        with self._lock:
            self._pending += 1

    def _post_from_thread(self, delivery: Delivery) -> None:
        with self._lock:
            while self._pending >= HIGH_WATER and not self._closed:
                self._waiters += 1
                try:
                    self._room.wait(timeout=1.0)
                finally:
                    self._waiters -= 1
            self._inbox.append(delivery)
            self._pending += 1
            if self._handoff_pending:
                return
            self._handoff_pending = True
        assert self._handoff is not None
        if not self._handoff(self.drain_inbox):  # closed: nobody is left to deliver to
            with self._lock:
                self._pending -= len(self._inbox)
                self._inbox.clear()
                self._handoff_pending = False

    def backlog(self) -> int:
        """Deliveries posted but not yet run here, or handed to the host loop."""
        with self._lock:
            return self._pending

    def _delivered(self, count: int) -> None:
        with self._lock:
            self._pending -= count
            if self._waiters and self._pending <= LOW_WATER:
                self._room.notify_all()

    def drain_inbox(self) -> None:
        """Move what worker threads posted into the stream; call on the loop.

        Everything moves at once, so a later loop-side post can never overtake it.
        """
        with self._lock:
            batch = list(self._inbox)
            self._inbox.clear()
            self._handoff_pending = False
        send = self._send
        if send is None:
            return
        for delivery in batch:
            try:
                send.send_nowait(delivery)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._delivered(1)  # dropped: nobody is left to deliver to

    async def run(self) -> None:
        """Deliver until :meth:`close` is called and everything queued is delivered."""
        receive = self._receive
        assert receive is not None, "bind() first"
        if self._early_done is not None:
            await self._early_done.wait()
        async with receive:
            async for delivery in receive:
                # Take everything already queued in one go: receive() would yield to
                # the loop once per item, receive_nowait() does not.
                batch = [delivery]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                if self._sink is not None and self._sink.forward(batch):
                    # Handed over. Counting them until the host loop runs them would
                    # make worker threads wait on that loop, which may be the very
                    # one blocked in shutdown() waiting for those threads.
                    self._delivered(len(batch))
                    continue
                self._sink = None
                for item in batch:
                    await _invoke(item, self._logger)
                    self._delivered(1)

    def discard(self) -> None:
        """Close both ends of the stream unused: start-up failed before :meth:`run` began."""
        with self._lock:
            self._closed = True
        for stream in (self._send, self._receive):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """Stop accepting deliveries; :meth:`run` returns once the backlog is delivered."""
        self.drain_inbox()
        with self._lock:
            self._closed = True
            self._room.notify_all()
        if self._send is not None:
            self._send.close()
