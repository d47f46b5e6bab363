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

Finished jobs are reported back through :attr:`finish`. From threads the
reports are batched: the first report of a burst schedules one hand-off onto
the loop, which then takes every report that has piled up.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from ._models import JobStatus
from ._registry import JobEntry
from ._runner import Outcome, run_async_job, run_sync_job

__all__ = ["Workers"]

#: Seconds an idle worker thread waits for work before it exits.
THREAD_IDLE_SECONDS = 10.0

Finish = Callable[[JobEntry, JobStatus, "str | None", "str | None"], None]
ProgressHookFor = Callable[[JobEntry], Callable[..., None]]


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
    ) -> None:
        self._task_group = task_group
        self._size = pool_size
        self._finish = finish
        self._progress_hook_for = progress_hook_for
        self._loop = asyncio.get_running_loop()
        self._closing = False
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
        self._reports: list[tuple[JobEntry, Outcome]] = []
        self._report_pending = False

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
        outcome: Outcome = (
            JobStatus.CANCELLED,
            "stopped by shutdown after the grace period",
            None,
        )
        try:
            # A task of its own gives the job a fresh copy of the worker's context,
            # so a ContextVar one handler sets never leaks into the next job.
            outcome = await asyncio.ensure_future(run_async_job(job, hook, scope))
        finally:
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
        while True:
            with cond:
                while not pending:
                    idle_out = self._closing or not cond.wait(THREAD_IDLE_SECONDS)
                    if idle_out and not pending:  # a notify can race a timeout: look again
                        self._threads -= 1
                        return
                job, hook = pending.popleft()
                self._threads_busy += 1
            # Each job runs in a fresh copy of the thread's context (see _run_async).
            outcome = contextvars.copy_context().run(run_sync_job, job, hook)
            with cond:
                self._threads_busy -= 1
            self._report(job, outcome)

    def _report(self, job: JobEntry, outcome: Outcome) -> None:
        with self._cond:
            self._reports.append((job, outcome))
            if self._report_pending:
                return
            self._report_pending = True
        try:
            self._loop.call_soon_threadsafe(self._collect_reports)
        except RuntimeError:  # the loop is gone: the scheduler already gave up on it
            pass

    def _collect_reports(self) -> None:
        with self._cond:
            reports, self._reports = self._reports, []
            self._report_pending = False
        for job, outcome in reports:
            self._finish(job, *outcome)

    # -- shutdown ------------------------------------------------------------

    def abandon(self) -> None:
        """Cut off every job still running: async ones are cancelled, threads left behind."""
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
