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

Every buffer on the way is bounded, and the bound holds back the producer,
never the loop: a worker thread waits at ``HIGH_WATER`` (above); loop-side
producers (the engine's events) cannot wait, so the engine stops starting jobs
while :attr:`Dispatcher.pending` is high (see ``_engine``); and the dispatcher
task waits while a host loop has ``SINK_HIGH`` callbacks still to run, except
once shutdown has begun, since that loop may be the one blocked in
``shutdown()`` (see :meth:`Dispatcher.run`).
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
#: Callbacks handed to a host loop and not run there yet at which the dispatcher
#: waits for that loop, and the level it waits for.
SINK_HIGH = 1024
SINK_LOW = SINK_HIGH // 4
#: While waiting for a host loop, look this often whether it was closed meanwhile.
HOST_CHECK_SECONDS = 1.0


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
    """Runs callbacks on another asyncio loop, in order.

    Batches are handed over with ``call_soon_threadsafe``; on the host loop one
    short-lived pump task runs them in order and exits when it runs dry. The
    hand-over callback itself touches only asyncio (anyio would need a current
    task there); the callbacks run inside the pump task.

    What was handed over and has not run yet is counted: :meth:`wait_for_room`
    lets the dispatcher task wait while that loop is ``SINK_HIGH`` behind, until
    it is back to ``SINK_LOW`` or :meth:`stop_waiting` is called.
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
        self._lock = threading.Lock()
        self._outstanding = 0  # handed over, not run yet; under _lock
        #: Set from the host loop once it is back to SINK_LOW: (the waiter's loop, event).
        self._room: tuple[asyncio.AbstractEventLoop, anyio.Event] | None = None
        self._waiting_allowed = True

    @property
    def outstanding(self) -> int:
        """Callbacks handed to the host loop that have not run yet."""
        return self._outstanding

    def forward(self, batch: list[Delivery]) -> bool:
        """Hand ``batch`` to the host loop; False if that loop is gone."""
        with self._lock:
            self._outstanding += len(batch)
        try:
            self.loop.call_soon_threadsafe(self._accept, batch)
        except RuntimeError:  # the host loop is closed
            self._ran(len(batch))
            return False
        return True

    async def wait_for_room(self) -> None:
        """Wait, on the dispatcher's loop, while the host loop is too far behind."""
        with self._lock:
            if not self._waiting_allowed or self._outstanding < SINK_HIGH:
                return
            room = anyio.Event()
            self._room = (asyncio.get_running_loop(), room)
        while not room.is_set():
            with anyio.move_on_after(HOST_CHECK_SECONDS):
                await room.wait()
            if self.loop.is_closed():  # it will never run them: stop waiting for it
                with self._lock:
                    self._room = None
                return

    def stop_waiting(self) -> None:
        """From now on :meth:`wait_for_room` returns at once; a wait under way ends."""
        with self._lock:
            self._waiting_allowed = False
            room, self._room = self._room, None
        if room is not None:
            room[1].set()  # called on the dispatcher's loop

    def _ran(self, count: int) -> None:
        with self._lock:
            self._outstanding -= count
            if self._room is None or self._outstanding > SINK_LOW:
                return
            (loop, event), self._room = self._room, None
        try:
            loop.call_soon_threadsafe(event.set)  # setting an event needs no task
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass

    def _accept(self, batch: list[Delivery]) -> None:
        self._pending.extend(batch)
        if self._pump is None or self._pump.done():
            self._pump = self.loop.create_task(self._run())

    async def _run(self) -> None:
        pending = self._pending
        while pending:
            await _invoke(pending.popleft(), self._logger)
            self._ran(1)


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
        #: Called on the loop after deliveries are done, while set (the engine sets it
        #: while it holds new jobs back, to learn when to let them start).
        self.on_delivered: Callable[[], None] | None = None

    @property
    def pending(self) -> int:
        """Deliveries posted and not yet run here, or handed to the host loop."""
        return self._pending

    def stop_waiting_for_host(self) -> None:
        """Never wait for the host loop from now on: shutdown has begun (see :meth:`run`)."""
        if self._sink is not None:
            self._sink.stop_waiting()

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
        if self.on_delivered is not None:
            self.on_delivered()

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
                sink = self._sink
                if sink is not None and sink.forward(batch):
                    # Handed over. Counting them until the host loop runs them would
                    # make worker threads wait on that loop, which may be the very
                    # one blocked in shutdown() waiting for those threads.
                    self._delivered(len(batch))
                    # Only this task waits for a host loop that falls far behind, and
                    # only until shutdown begins (the engine calls stop_waiting_for_host
                    # first thing): the same loop may then be blocked in shutdown().
                    # Meanwhile what is posted here queues up, so the engine holds new
                    # jobs back and threads posting progress wait: nothing grows.
                    await sink.wait_for_room()
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
        self.stop_waiting_for_host()
        self.drain_inbox()
        with self._lock:
            self._closed = True
            self._room.notify_all()
        if self._send is not None:
            self._send.close()
