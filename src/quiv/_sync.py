"""``Quiv``: the blocking facade over ``AsyncQuiv``.

The facade owns no scheduling logic. ``start()`` runs an ``AsyncQuiv`` on a
private event loop in a daemon thread of its own (``anyio.run``), and every
method forwards to the core's code for the coroutine of the same name. The
core's methods never suspend (but for history reads from a store across a
network, below), so forwarding is mechanical and depends only on the calling
thread:

* any ordinary thread (a script, a threadpool worker, a sync handler): a write
  whose result the caller can know (``add_task``, ``pause_task`` ...) is
  decided in that thread by the core and only its effect is queued on the
  engine's inbox (see ``AsyncQuiv._later`` and ``_inbox``): the call does not
  wait for the loop. Any other call is queued there too, run inline inside the
  inbox task on the private loop, after the writes queued before it, and its
  result or exception handed back through a future. Calls from many threads
  that arrive together share one wake-up of the loop. With a store whose
  reads wait on a network (PostgreSQL), each such call runs as a task of its
  own instead, so a read waits in a worker thread and the loop goes on;
* the private loop's own thread (inside an async handler, a listener or a
  callback quiv runs there): waiting would deadlock, so the coroutine is
  driven inline, right there (a read from a store across a network waits
  right there too);
* before ``start()``: inline as well, so tasks can be added up front.

A host event loop (FastAPI's) only ever receives callbacks, fire-and-forget;
the private loop never waits for it, so blocking calls made on the host loop,
``shutdown()`` in a lifespan included, cannot deadlock.

Exiting: the private loop's thread is a daemon, and so are the worker threads
it starts, so an exit hook shuts forgotten schedulers down and then waits for
sync handlers still running (their ``finally`` blocks run). A Ctrl-C during
either wait stops waiting: jobs still running are abandoned and recorded.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import functools
import logging
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures import wait as wait_for_futures
from contextlib import asynccontextmanager, suppress
from datetime import datetime, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._clock import Clock
from ._config import QuivConfig
from ._core import AsyncQuiv
from ._engine import INLINE, Waiter
from ._exceptions import QuivError, SchedulerClosedError, SchedulerStateError
from ._inbox import Inbox
from ._jobpolicy import validate_seconds
from ._models import Event, Job, Stats, Task
from ._runner import current_job_id
from ._triggers import Trigger
from ._types import UNSET, Handler, Listener, ProgressCallback, ProgressListener, Unset
from ._workers import wait_for_sync_handlers

if sys.version_info >= (3, 11):
    from typing import Self, TypeVarTuple, Unpack
else:
    from typing_extensions import Self, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from typing import TypeAlias

    _AnyLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = ["Quiv"]

Ts = TypeVarTuple("Ts")
T = TypeVar("T")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"  # shutdown() is waiting for jobs; calls are still served
    CLOSED = "closed"


def _run_inline(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, right here."""
    inline = INLINE.set(True)  # the core reads right here instead of in a worker thread
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    finally:
        INLINE.reset(inline)
    coroutine.close()
    raise SchedulerStateError(
        "this call has to wait, which is impossible on the scheduler's own loop thread; "
        "await the AsyncQuiv method instead"
    )


#: Seconds an interrupted ``start()`` waits for the loop thread to report the core
#: open (so that it can close it again) before it leaves that thread to itself.
START_REPORT_SECONDS = 10.0
#: Facades started and not yet shut down, stopped at interpreter exit.
_running: weakref.WeakSet[Quiv] = weakref.WeakSet()
#: Set once a Ctrl-C cut a shutdown short: exiting then waits for nothing more.
_interrupted = threading.Event()


def _shutdown_running() -> None:
    """At exit: shut down what the program forgot to, then wait for sync handlers.

    Worker threads under the private loop are daemons, which the interpreter
    would kill mid-handler; like a plain thread, a running handler holds the
    exit up until it returns, unless a Ctrl-C says to stop waiting. This has to
    run before the interpreter joins non-daemon threads (a sync handler's worker
    thread waits for its stop event), which is when ``threading``'s own exit
    hooks run; ``atexit`` would be too late.
    """
    try:
        for facade in list(_running):
            try:
                facade.shutdown()
            except Exception:  # nothing useful to do with it at exit
                pass
        if not _interrupted.is_set():
            wait_for_sync_handlers()
    except KeyboardInterrupt:  # the user does not want to wait: leave the threads behind
        pass


_register_exit_hook = getattr(threading, "_register_atexit", atexit.register)
_register_exit_hook(_shutdown_running)


class Quiv:
    """The scheduler with a blocking API, for scripts and sync code.

    Same options and behaviour as :class:`quiv.AsyncQuiv`, which it runs on a
    private event loop thread between :meth:`start` and :meth:`shutdown`::

        with Quiv() as scheduler:
            scheduler.add_task("cleanup", cleanup, interval=3600)

    Every method may be called from any thread: the main thread, a threadpool
    worker, a handler, a listener, or a coroutine on a host event loop. Tasks
    added before :meth:`start` run once it is called.

    ``main_loop`` is where listeners and progress callbacks run; when not given,
    it is the loop running in the thread that calls :meth:`start`, if any, else
    the private loop.
    """

    def __init__(
        self,
        config: QuivConfig | None = None,
        pool_size: int = 10,
        history_retention_seconds: float = 86400,
        timezone: str | tzinfo = "UTC",
        *,
        logger: _AnyLogger | None = None,
        main_loop: asyncio.AbstractEventLoop | None = None,
        clock: Clock | None = None,
        shutdown_timeout: float = 30.0,
        cancel_grace: float = 1.0,
        store: str | None = None,
        serializer: str = "json",
        lease_seconds: float = 30.0,
        lease_renewal: float = 10.0,
    ) -> None:
        self._core = AsyncQuiv(
            config,
            pool_size,
            history_retention_seconds,
            timezone,
            logger=logger,
            main_loop=main_loop,
            clock=clock,
            shutdown_timeout=shutdown_timeout,
            cancel_grace=cancel_grace,
            store=store,
            serializer=serializer,
            lease_seconds=lease_seconds,
            lease_renewal=lease_renewal,
        )
        self._lock = threading.RLock()
        self._state = _State.UNOPENED
        self._portal: BlockingPortal | None = None
        self._inbox: Inbox | None = None  # the way onto the private loop, while open
        self._in_flight: set[Future[Any]] = set()  # calls handed to that loop
        self._thread: threading.Thread | None = None  # the private loop's
        self._held: Future[None] | None = None  # done when that loop has ended
        self._closing: anyio.Event | None = None  # set to make that task close the core
        self._loop_thread: int | None = None

    @property
    def config(self) -> QuivConfig:
        """The options this scheduler runs with."""
        return self._core.config

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler on its private loop thread. Calling it again does nothing.

        Raises:
            SchedulerClosedError: if the scheduler has already shut down.
        """
        with self._lock:
            if self._state is _State.OPEN:
                return
            if self._state is _State.CLOSED:
                raise SchedulerClosedError()
            try:
                self._core._adopt_main_loop(asyncio.get_running_loop())
            except RuntimeError:
                pass  # no host loop: callbacks run on the private loop
            # A thread of our own whose loop runs the core from its first step:
            # one hand-off to start and one join to stop, where a blocking portal
            # with the core as one of its tasks costs two round trips more.
            started: Future[tuple[BlockingPortal, anyio.Event]] = Future()
            held: Future[None] = Future()
            thread = threading.Thread(
                target=self._run_loop, args=(started, held), name="quiv-loop", daemon=True
            )
            try:
                thread.start()  # an interrupt may land here too, with the thread running
                portal, closing = started.result()
                self._thread, self._held, self._closing = thread, held, closing
                self._loop_thread = thread.ident
                self._portal = portal
                self._inbox = self._core._engine.inbox
                self._state = _State.OPEN
                _running.add(self)
            except BaseException:
                if not started.done() or started.exception() is None:  # an interrupt
                    with suppress(BaseException):  # once the core is open, close it again
                        portal, closing = started.result(START_REPORT_SECONDS)
                        portal.call(closing.set)
                if started.done():  # else the thread never ran: nothing to wait for
                    thread.join()  # the core failed to start, or has closed again
                self._thread = self._held = self._closing = self._portal = self._inbox = None
                self._loop_thread = None
                self._state = _State.UNOPENED
                _running.discard(self)
                raise

    def _run_loop(
        self, started: Future[tuple[BlockingPortal, anyio.Event]], held: Future[None]
    ) -> None:
        """The private loop thread: run the core until told to close; report how it ended."""
        try:
            anyio.run(self._hold_open, started, backend="asyncio")
        except BaseException as exc:  # the core's failure, to whoever waits for it
            (held if started.done() else started).set_exception(exc)
        else:
            held.set_result(None)

    async def _hold_open(self, started: Future[tuple[BlockingPortal, anyio.Event]]) -> None:
        """Keep the core open until the event it reports is set.

        The portal beside it serves the odd call that needs a task of its own
        on the loop (tests use it; the facade's calls go through the inbox).
        """
        closing = anyio.Event()
        # The core outside the portal: its own failure is raised as it is, not
        # wrapped in the portal's task group.
        async with self._core, BlockingPortal() as portal:
            started.set_result((portal, closing))
            await closing.wait()

    def startup(self) -> None:
        """Alias of :meth:`start`."""
        self.start()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the scheduler: signal running jobs, wait for them, delete the database.

        Waits up to ``timeout`` seconds (default: the ``shutdown_timeout``
        option) for jobs to honour their stop event.
        A ``KeyboardInterrupt`` (a second Ctrl-C) during that wait ends it at
        once: jobs still running are abandoned and recorded ``cancelled``, and
        the interrupt is raised once the scheduler is closed. Calling it again
        does nothing. Called from inside a handler, listener or callback, it
        cannot wait for itself: it starts the shutdown in a helper thread and
        returns at once.
        """
        self._core._set_exit_timeout(timeout)  # validated before anything happens
        if current_job_id() is not None or threading.get_ident() == self._loop_thread:
            threading.Thread(target=self.shutdown, name="quiv-shutdown", daemon=True).start()
            return
        with self._lock:
            if self._state is not _State.OPEN:
                self._state = _State.CLOSED
                self._core._close_unopened()
                return
            thread, held, closing = self._thread, self._held, self._closing
            self._thread = self._held = self._closing = None
            self._state = _State.CLOSING
            try:
                if held is not None and closing is not None and self._portal is not None:
                    self._close_core(self._portal, held, closing)
            finally:
                try:
                    if thread is not None:
                        thread.join()  # the loop is closed: nothing of it is left running
                finally:
                    self._state = _State.CLOSED
                    self._portal = self._inbox = None
                    _running.discard(self)
                    for future in list(self._in_flight):  # the loop stopped before them
                        if not future.done():
                            future.set_exception(SchedulerClosedError())

    def _close_core(self, portal: BlockingPortal, held: Future[None], closing: anyio.Event) -> None:
        """Close the core and wait for it; an interrupt of the wait makes it hurry."""
        # One hop, behind the writes still queued (they are applied first), not a
        # round trip; the portal is the way only if the inbox is closed already
        # (and the portal too, if the core has ended by itself: nothing to tell).
        if not self._core._engine.inbox.submit(closing.set):
            try:
                portal.call(closing.set)
            except RuntimeError:  # the portal has stopped: the core has ended
                pass
        try:
            wait_for_futures([held])
        except BaseException:  # KeyboardInterrupt: stop waiting for the jobs
            _interrupted.set()
            engine = self._core._engine
            engine.inbox.submit(engine.force)
            wait_for_futures([held])  # no longer than the unwinding of async handlers
            raise
        held.result()  # the core's own failure, if any

    def stop(self) -> None:
        """Alias of :meth:`shutdown`."""
        self.shutdown()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.shutdown()
        except KeyboardInterrupt:
            if not isinstance(exc, KeyboardInterrupt):
                raise
            # A second Ctrl-C cut the shutdown short; the first one, leaving the
            # block, already says everything (a second traceback would not).

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """Start and stop with a Starlette/FastAPI app: ``FastAPI(lifespan=scheduler.lifespan)``.

        Callbacks run on the app's loop; starting and stopping happen in a worker
        thread so the app's loop keeps serving callbacks meanwhile.
        """
        self._core._adopt_main_loop(asyncio.get_running_loop())
        await anyio.to_thread.run_sync(self.start)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.shutdown)

    # -- forwarding ---------------------------------------------------------

    def _from_thread(self) -> bool:
        """Whether a write may be decided here and applied later (see ``AsyncQuiv._later``)."""
        return self._inbox is not None and threading.get_ident() != self._loop_thread

    def _call(self, method: Callable[[Unpack[Ts]], Coroutine[Any, Any, T]], *args: Unpack[Ts]) -> T:
        inbox, on_loop = self._inbox, threading.get_ident() == self._loop_thread
        if inbox is not None and not on_loop:
            return self._call_on_loop(inbox, method, *args)
        if on_loop:
            return _run_inline(method(*args))
        with self._lock:  # before start (or after shutdown): serialise callers
            return _run_inline(method(*args))

    def _call_on_loop(
        self,
        inbox: Inbox,
        method: Callable[[Unpack[Ts]], Coroutine[Any, Any, T]],
        *args: Unpack[Ts],
    ) -> T:
        # The core's methods never suspend, so the call runs inline inside the
        # inbox task: one hand-off each way, and one loop wake-up for a whole
        # batch of calls. (portal.call would spawn a task per call and cross
        # threads twice more; a bare loop callback has no current task, which
        # anyio needs as soon as a call starts a job.)
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(_run_inline(method(*args)))
            except BaseException as exc:  # the caller re-raises it
                future.set_exception(exc)

        call: Callable[[], object] = run
        engine = self._core._engine
        if engine.store.reads_wait and engine.task_group is not None:
            # A store across a network: a read waits for it in a worker thread, which
            # only a task may await, so the call gets one; the loop goes on meanwhile.
            async def waiting() -> None:
                try:
                    future.set_result(await method(*args))
                except BaseException as exc:  # the caller re-raises it
                    future.set_exception(exc)

            call = functools.partial(engine.task_group.start_soon, waiting)

        self._in_flight.add(future)
        try:
            if not inbox.submit(call):  # the loop is closing or closed
                raise SchedulerClosedError()
            return future.result()
        finally:
            self._in_flight.discard(future)

    # -- the public API: blocking forms of AsyncQuiv's methods ----------------

    def add_task(
        self,
        task_name: str,
        func: Handler,
        interval: float | None = None,
        delay: float = 0,
        run_once: bool = False,
        fixed_interval: bool = True,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        progress_callback: ProgressCallback | None = None,
        *,
        cron: str | None = None,
        run_at: datetime | None = None,
        trigger: Trigger | None = None,
        timezone: str | tzinfo | None = None,
        jitter: float = 0,
        misfire_grace: float | None = None,
        coalesce: bool = True,
        max_instances: int = 1,
        max_retries: int = 0,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
        timeout: float | None = None,
        task_id: str | None = None,
    ) -> str:
        """Blocking form of :meth:`AsyncQuiv.add_task`; returns without waiting for the loop."""
        values = (
            task_name,
            func,
            interval,
            delay,
            run_once,
            fixed_interval,
            args,
            kwargs,
            progress_callback,
            cron,
            run_at,
            trigger,
            timezone,
            jitter,
            misfire_grace,
            coalesce,
            max_instances,
            max_retries,
            retry_backoff,
            retry_backoff_max,
            timeout,
            task_id,
        )
        if self._from_thread():
            return self._core._add_task_nowait(*values)
        return self._call(self._core._add_task, *values)

    def update_task(
        self,
        task_id: str,
        *,
        task_name: str | Unset = UNSET,
        interval: float | Unset = UNSET,
        cron: str | Unset = UNSET,
        run_at: datetime | Unset = UNSET,
        trigger: Trigger | Unset = UNSET,
        timezone: str | tzinfo | Unset | None = UNSET,
        args: tuple[Any, ...] | Unset | None = UNSET,
        kwargs: dict[str, Any] | Unset | None = UNSET,
        progress_callback: ProgressCallback | Unset | None = UNSET,
        jitter: float | Unset = UNSET,
        misfire_grace: float | Unset | None = UNSET,
        coalesce: bool | Unset = UNSET,
        max_instances: int | Unset = UNSET,
        max_retries: int | Unset = UNSET,
        retry_backoff: float | Unset = UNSET,
        retry_backoff_max: float | Unset = UNSET,
        timeout: float | Unset | None = UNSET,
    ) -> Task:
        """Blocking form of :meth:`AsyncQuiv.update_task`."""
        return self._call(
            lambda: self._core.update_task(
                task_id,
                task_name=task_name,
                interval=interval,
                cron=cron,
                run_at=run_at,
                trigger=trigger,
                timezone=timezone,
                args=args,
                kwargs=kwargs,
                progress_callback=progress_callback,
                jitter=jitter,
                misfire_grace=misfire_grace,
                coalesce=coalesce,
                max_instances=max_instances,
                max_retries=max_retries,
                retry_backoff=retry_backoff,
                retry_backoff_max=retry_backoff_max,
                timeout=timeout,
            )
        )

    def run_task_immediately(self, task_id: str) -> int:
        """Blocking form of :meth:`AsyncQuiv.run_task_immediately`; does not wait for the loop."""
        if self._from_thread():
            return self._core._run_task_immediately_nowait(task_id)
        return self._call(self._core.run_task_immediately, task_id)

    def pause_task(self, task_id: str) -> None:
        """Blocking form of :meth:`AsyncQuiv.pause_task`; does not wait for the loop."""
        if self._from_thread():
            return self._core._pause_task_nowait(task_id)
        return self._call(self._core.pause_task, task_id)

    def resume_task(self, task_id: str, delay: float = 0) -> None:
        """Blocking form of :meth:`AsyncQuiv.resume_task`; does not wait for the loop."""
        if self._from_thread():
            return self._core._resume_task_nowait(task_id, delay)
        return self._call(self._core.resume_task, task_id, delay)

    def cancel_job(self, job_id: str, *, force: bool = False) -> bool:
        """Blocking form of :meth:`AsyncQuiv.cancel_job`; does not wait for the loop."""
        if self._from_thread():
            return self._core._cancel_job_nowait(job_id, force)
        return self._call(lambda: self._core.cancel_job(job_id, force=force))

    def remove_task(self, task_id: str) -> None:
        """Blocking form of :meth:`AsyncQuiv.remove_task`; does not wait for the loop."""
        if self._from_thread():
            return self._core._remove_task_nowait(task_id)
        return self._call(self._core.remove_task, task_id)

    def get_task(self, task_id: str) -> Task:
        """Blocking form of :meth:`AsyncQuiv.get_task`."""
        if self._from_thread() and isinstance(task_id, str):
            task = self._core._peek_task(task_id)
            if task is not None:
                return task
        return self._call(self._core.get_task, task_id)

    def get_job(self, job_id: str) -> Job:
        """Blocking form of :meth:`AsyncQuiv.get_job`."""
        if self._from_thread() and isinstance(job_id, str):
            job = self._core._peek_job(job_id)
            if job is not None:
                return job
        return self._call(self._core.get_job, job_id)

    def get_all_tasks(
        self, include_run_once: bool = False, *, task_name: str | None = None
    ) -> list[Task]:
        """Blocking form of :meth:`AsyncQuiv.get_all_tasks`."""
        if self._from_thread() and task_name is None:
            tasks = self._core._peek_all_tasks(include_run_once)
            if tasks is not None:
                return tasks
        return self._call(lambda: self._core.get_all_tasks(include_run_once, task_name=task_name))

    def get_all_jobs(
        self,
        status: str | None = None,
        *,
        task_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Job]:
        """Blocking form of :meth:`AsyncQuiv.get_all_jobs`."""
        return self._call(
            lambda: self._core.get_all_jobs(
                status,
                task_id=task_id,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
                newest_first=newest_first,
            )
        )

    def stats(self) -> Stats:
        """Blocking form of :meth:`AsyncQuiv.stats`."""
        return self._call(self._core.stats)

    def wait_for_job(self, job_id: str, timeout: float | None = None) -> Job:
        """Blocking form of :meth:`AsyncQuiv.wait_for_job`: blocks the calling thread.

        Raises:
            SchedulerStateError: on the scheduler's own loop thread (an async
                handler, a listener run there), where waiting would deadlock,
                or from the sync handler of that very job.
        """
        self._core._refuse_waiting_on_itself(job_id, task=False)
        return self._wait(self._core._watch_job, job_id, timeout)

    def wait_for_task(self, task_id: str, timeout: float | None = None) -> Job:
        """Blocking form of :meth:`AsyncQuiv.wait_for_task`: blocks the calling thread.

        Raises:
            SchedulerStateError: on the scheduler's own loop thread, where
                waiting would deadlock.
        """
        self._core._refuse_waiting_on_itself(task_id, task=True)
        return self._wait(self._core._watch_task, task_id, timeout)

    def _wait(
        self,
        watch: Callable[[str, Waiter], Coroutine[Any, Any, Job | None]],
        ident: str,
        timeout: float | None,
    ) -> Job:
        # The loop only registers the waiter and later completes a future; the
        # waiting itself happens here, in the caller's thread.
        if threading.get_ident() == self._loop_thread:
            raise SchedulerStateError(
                "wait_for_job/wait_for_task cannot block the scheduler's own loop thread "
                "(the job could never end); await AsyncQuiv's method there instead, or wait "
                "from another thread"
            )
        limit = None if timeout is None else validate_seconds(timeout, "timeout")
        future: Future[Job | QuivError] = Future()

        def tell(result: Job | QuivError) -> None:
            if not future.done():
                future.set_result(result)

        ended = self._call(watch, ident, tell)
        if ended is not None:
            return ended
        try:
            result = future.result(limit)
        except FutureTimeoutError:
            try:
                self._call(self._core._unwatch, ident, tell)
            except SchedulerClosedError:
                pass
            if not future.done():
                raise TimeoutError(f"{ident} did not end within {limit:g}s") from None
            result = future.result()
        if isinstance(result, QuivError):
            raise result
        return result

    def add_listener(self, event: Event, callback: Listener) -> None:
        """Blocking form of :meth:`AsyncQuiv.add_listener`."""
        return self._call(self._core.add_listener, event, callback)

    def remove_listener(self, event: Event, callback: Listener) -> None:
        """Blocking form of :meth:`AsyncQuiv.remove_listener`."""
        return self._call(self._core.remove_listener, event, callback)

    def add_progress_listener(self, callback: ProgressListener) -> None:
        """Blocking form of :meth:`AsyncQuiv.add_progress_listener`."""
        return self._call(self._core.add_progress_listener, callback)

    def remove_progress_listener(self, callback: ProgressListener) -> None:
        """Blocking form of :meth:`AsyncQuiv.remove_progress_listener`."""
        return self._call(self._core.remove_progress_listener, callback)
