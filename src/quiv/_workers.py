"""Where admitted jobs run: worker tasks on the loop and worker threads.

A job reaches :meth:`Workers.submit` already holding one token of the pool
``CapacityLimiter`` (see ``_core``), so at most ``pool_size`` jobs are ever
submitted and unfinished, sync and async together. The workers exist to make
each job cheap, not to bound anything:

* async jobs go to worker *tasks* in the scheduler's task group. An idle
  worker parks on an event; submitting wakes one, or starts a new one while
  fewer than ``pool_size`` exist. No task is spawned per job.
* sync jobs go to worker *threads*, each started with
  ``anyio.to_thread.run_sync`` (under a limiter of ``pool_size`` threads). A
  thread runs the next waiting sync job as soon as it finishes one, without
  a round trip through the loop, and exits after a while without work.

Each job runs in a fresh copy of its worker's ``contextvars`` context, as if
it had a task of its own: a ``ContextVar`` set by one job (a trace id, say)
is never seen by the next job on the same worker.

Finished jobs are reported back through :attr:`finish`; from threads, through
the engine's inbox (``_inbox``), which runs a burst of reports in one batch.

Python cannot stop a thread, and the interpreter kills daemon threads at exit:
worker threads inherit that flag from the loop's thread (daemons under the sync
facade's private loop). So the threads running a sync handler right now are
counted here, and the sync facade's exit hook waits for the daemon ones (see
:func:`wait_for_sync_handlers`), as the interpreter does for the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections import deque
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from ._models import JobStatus
from ._registry import JobEntry
from ._runner import (
    Outcome,
    run_async_job,
    run_sync_job,
    set_thread_main_loop,
    task_is_cancelling,
)

__all__ = ["Workers"]

#: The outcome of an async job the engine cut off (see ``Engine._cut``).
_CUT: Outcome = (JobStatus.CANCELLED, None, None)


def _was_cut(job: JobEntry) -> bool:
    """Whether the engine cut ``job`` off (read afresh: it changes while the job runs)."""
    return job.cut is not None


#: Seconds an idle worker thread waits for work before it exits.
THREAD_IDLE_SECONDS = 10.0

Finish = Callable[[JobEntry, JobStatus, "str | None", "str | None"], None]
ProgressHookFor = Callable[[JobEntry], Callable[..., None]]
Handoff = Callable[[Callable[[], object]], bool]

#: Worker threads running a sync handler right now, in every scheduler of the process.
_busy_threads: set[threading.Thread] = set()
_busy_changed = threading.Condition()


def wait_for_sync_handlers() -> None:
    """Block until no daemon thread is running a sync handler; a Ctrl-C ends the wait.

    Non-daemon worker threads are left out: the interpreter waits for those itself.
    """
    with _busy_changed:
        while any(thread.daemon for thread in _busy_threads):
            _busy_changed.wait(0.5)  # a timeout keeps the wait interruptible everywhere


class _AsyncWorker:
    __slots__ = ("scope", "wakeup")

    def __init__(self) -> None:
        self.wakeup = anyio.Event()
        self.scope = anyio.CancelScope()


class Workers:
    """The async worker tasks and sync worker threads of one scheduler."""

    def __init__(
        self,
        task_group: TaskGroup,
        pool_size: int,
        finish: Finish,
        progress_hook_for: ProgressHookFor,
        handoff: Handoff,
    ) -> None:
        self._task_group = task_group
        self._size = pool_size
        self._finish = finish
        self._progress_hook_for = progress_hook_for
        self._handoff = handoff  # runs a callable on the loop, from a worker thread
        self._closing = False
        #: The error recorded for an async job cut off by a cancellation.
        self._cut_off_reason = "cancelled by shutdown"
        # async side (loop only)
        self._async_pending: deque[tuple[JobEntry, Callable[..., None]]] = deque()
        self._async_idle: list[_AsyncWorker] = []
        self._async_workers: set[_AsyncWorker] = set()
        # sync side (shared with threads, under the condition's lock)
        self._thread_limiter = anyio.CapacityLimiter(pool_size)
        self._cond = threading.Condition()
        self._sync_pending: deque[tuple[JobEntry, Callable[..., None]]] = deque()
        self._threads = 0
        self._threads_busy = 0
        self._thread_scopes: set[anyio.CancelScope] = set()
        #: Where ``quiv.call_on_main`` runs things for sync handlers.
        self.main_loop: asyncio.AbstractEventLoop | None = None

    def submit(self, job: JobEntry) -> None:
        """Run ``job`` as soon as a worker is free; call on the loop."""
        hook = self._progress_hook_for(job)
        if job.task.is_async:
            self._async_pending.append((job, hook))
            if self._async_idle:
                self._async_idle.pop().wakeup.set()
            elif len(self._async_workers) < self._size:
                worker = _AsyncWorker()
                self._async_workers.add(worker)
                self._task_group.start_soon(self._async_worker, worker, name="quiv-worker")
            return
        with self._cond:
            self._sync_pending.append((job, hook))
            spare = self._threads - self._threads_busy
            start_thread = len(self._sync_pending) > spare and self._threads < self._size
            if start_thread:
                self._threads += 1
            else:
                self._cond.notify()
        if start_thread:
            self._task_group.start_soon(self._thread_worker, name="quiv-thread-worker")

    # -- async workers -------------------------------------------------------

    async def _async_worker(self, worker: _AsyncWorker) -> None:
        pending = self._async_pending
        try:
            with worker.scope:
                while True:
                    while pending:
                        job, hook = pending.popleft()
                        await self._run_async(job, hook, worker.scope)
                    if self._closing:
                        break
                    worker.wakeup = anyio.Event()
                    self._async_idle.append(worker)
                    await worker.wakeup.wait()
        finally:
            self._async_workers.discard(worker)
            if worker in self._async_idle:
                self._async_idle.remove(worker)

    async def _run_async(
        self, job: JobEntry, hook: Callable[..., None], scope: anyio.CancelScope
    ) -> None:
        outcome: Outcome | None = None
        try:
            if job.cut is not None:  # cancelled by force before it even began
                outcome = _CUT
            else:
                # A task of its own gives the job a fresh copy of the worker's context,
                # so a ContextVar one handler sets never leaks into the next job. It
                # is also what cancel_job(force=True) and a timeout cancel (``cut``).
                job.handle = handle = asyncio.ensure_future(run_async_job(job, hook, scope))
                try:
                    outcome = await handle
                except asyncio.CancelledError:
                    if not _was_cut(job) or scope.cancel_called or task_is_cancelling():
                        raise
                    outcome = _CUT  # the handler's task was cut off; this worker was not
                finally:
                    job.handle = None
        finally:
            if outcome is None:  # cut off by a cancellation
                outcome = JobStatus.CANCELLED, self._cut_off_reason, None
            self._finish(job, *outcome)

    # -- sync workers --------------------------------------------------------

    async def _thread_worker(self) -> None:
        with anyio.CancelScope() as scope:
            self._thread_scopes.add(scope)
            try:
                await anyio.to_thread.run_sync(
                    self._thread_main, limiter=self._thread_limiter, abandon_on_cancel=True
                )
            finally:
                self._thread_scopes.discard(scope)

    def _thread_main(self) -> None:
        cond, pending = self._cond, self._sync_pending
        set_thread_main_loop(self.main_loop)  # for quiv.call_on_main
        while True:
            with cond:
                while not pending:
                    idle_out = self._closing or not cond.wait(THREAD_IDLE_SECONDS)
                    if idle_out and not pending:  # a notify can race a timeout: look again
                        self._threads -= 1
                        return
                job, hook = pending.popleft()
                self._threads_busy += 1
            thread = threading.current_thread()
            with _busy_changed:
                _busy_threads.add(thread)
            try:
                # Each job runs in a fresh copy of the thread's context (see _run_async).
                outcome = contextvars.copy_context().run(run_sync_job, job, hook)
            finally:
                with _busy_changed:
                    _busy_threads.discard(thread)
                    _busy_changed.notify_all()
            with cond:
                self._threads_busy -= 1
            # False once the scheduler is closed: it gave up on this job already.
            self._handoff(functools.partial(self._finish, job, *outcome))

    # -- shutdown ------------------------------------------------------------

    def abandon(self, reason: str) -> None:
        """Cut off every job still running: async ones are cancelled (recorded with
        ``reason``), threads left behind."""
        self._cut_off_reason = reason
        for worker in list(self._async_workers):
            worker.scope.cancel()
        for scope in list(self._thread_scopes):
            scope.cancel()

    def close(self) -> None:
        """Let every idle worker exit; busy ones exit after their current job."""
        self._closing = True
        for worker in self._async_idle:
            worker.wakeup.set()
        with self._cond:
            self._cond.notify_all()
