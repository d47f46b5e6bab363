"""The engine: what moves while a scheduler is open.

It owns the live registry and drives every job from due to done:

* the scheduler loop sleeps until the earliest due time or a wake-up (a change
  that brings a due time forward), turns due tasks into ``scheduled`` jobs and
  starts as many as the pool allows;
* the pool is an ``anyio.CapacityLimiter`` of ``pool_size`` tokens: a job
  borrows one when it starts and returns it when it ends, whatever kind of
  handler it runs (see ``_workers`` for where it runs);
* a job that ends hands its token straight to the next queued job, records its
  outcome, reschedules its task and emits its events (see ``_dispatch``) and
  its rows (see ``_store``).

Every transition is a synchronous method: ``AsyncQuiv`` validates a call, then
applies exactly one of them, so no await can ever interleave with a change.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._clock import Clock
from ._config import QuivConfig
from ._dispatch import Delivery, Dispatcher
from ._ids import new_id
from ._inbox import Inbox
from ._models import Event, JobStatus
from ._registry import JobEntry, Registry, TaskEntry
from ._schedule import skipped_slots
from ._store import Store
from ._types import Listener
from ._workers import Workers

if TYPE_CHECKING:
    from typing import TypeAlias

    _AnyLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = ["Engine"]

_FINAL_EVENT = {
    JobStatus.COMPLETED: Event.JOB_COMPLETED,
    JobStatus.CANCELLED: Event.JOB_CANCELLED,
    JobStatus.FAILED: Event.JOB_FAILED,
}

#: Seconds to wait for handlers that were cut off at shutdown to unwind.
UNWIND_SECONDS = 1.0


def _uncancel_current_task() -> None:
    """Take back a native cancellation the current task has received (Python 3.11+)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


def _fate(job: JobEntry) -> str:
    """What shutdown does to a job that outlives its grace period."""
    return "async: cancelled" if job.task.is_async else "sync: left running in its thread"


def _ignore_progress(**_payload: Any) -> None:
    """The ``_progress_hook`` of a task that has no progress callback."""


class _LateStarts:
    """Warns when jobs start late because the pool was full, without flooding the log.

    The first late start is reported at once; after that, one summary at most
    every ``window`` seconds (a backlog of ten thousand jobs is one line, not
    ten thousand).
    """

    def __init__(self, logger: _AnyLogger, window: float = 10.0) -> None:
        self._logger = logger
        self._window = window
        self._next_report = -math.inf
        self._count = 0
        self._worst = 0.0
        self._worst_job: JobEntry | None = None

    def record(self, job: JobEntry, delay: float, now: float) -> None:
        self._count += 1
        if delay >= self._worst:
            self._worst, self._worst_job = delay, job
        if now >= self._next_report:
            self.report(now)

    def report(self, now: float) -> None:
        job = self._worst_job
        if self._count and job is not None:
            self._logger.warning(
                "quiv pool was busy: %d job(s) started late, the worst %.3fs after it was due "
                "(task %r, job %s); consider a larger pool_size",
                self._count,
                self._worst,
                job.task.name,
                job.id,
            )
        self._count, self._worst, self._worst_job = 0, 0.0, None
        self._next_report = now + self._window


class Engine:
    """The registry plus the loop, the pool, the workers, the dispatcher and the store."""

    def __init__(self, config: QuivConfig, clock: Clock, logger: _AnyLogger) -> None:
        self.config = config
        self.clock = clock
        self.logger = logger
        self.registry = Registry()
        self.listeners: dict[Event, list[Listener]] = {event: [] for event in Event}
        self.dispatcher = Dispatcher(logger)
        #: How other threads (the sync facade, worker threads) get work done on the loop.
        self.inbox = Inbox(logger)
        self.store = Store(logger)
        self.store.snapshot = lambda: (self.registry.tasks.values(), self.registry.jobs.values())
        self.running = False  # True between start() and stop(): jobs may be started
        self._late = _LateStarts(logger)
        self._task_group: TaskGroup | None = None
        self._pool: anyio.CapacityLimiter | None = None
        self._workers: Workers | None = None
        self._loop_scope: anyio.CancelScope | None = None
        self._wakeup: anyio.Event | None = None
        self._sleeping_until = -math.inf  # the loop's wake-up deadline while it sleeps
        self._queued_through = 0  # jobs numbered up to here found the pool full
        self._idle: anyio.Event | None = None
        self._grace: anyio.CancelScope | None = None  # the shutdown grace wait, while it lasts
        self._forced = False  # shutdown was told to stop waiting for running jobs
        self._services_done: list[anyio.Event] = []

    # -- lifecycle ----------------------------------------------------------

    async def run(
        self,
        main_loop: asyncio.AbstractEventLoop | None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every moving part in a task group of its own until :meth:`stop` ends it.

        The group is shielded: a cancellation of the host must not cut the
        dispatcher or the writer off mid-delivery; :meth:`stop` drains them in
        order and then cancels the group itself.
        """
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                self._start(group, main_loop)
                task_status.started()

    def _start(self, task_group: TaskGroup, main_loop: asyncio.AbstractEventLoop | None) -> None:
        """Start the loop, the dispatcher and the writer as tasks of ``task_group``."""
        self._task_group = task_group
        self._loop_scope = anyio.CancelScope()
        self._pool = anyio.CapacityLimiter(self.config.pool_size)
        handoff = self.inbox.submit
        self._workers = Workers(
            task_group, self.config.pool_size, self._on_job_end, self._hook, handoff
        )
        self.dispatcher.bind(asyncio.get_running_loop(), main_loop, handoff)
        self.store.start()
        self.running = True
        task_group.start_soon(self.inbox.run, name="quiv-inbox")
        task_group.start_soon(self._service, self.dispatcher.run, name="quiv-dispatcher")
        task_group.start_soon(self._service, self.store.run, name="quiv-store-writer")
        task_group.start_soon(self._scheduler_loop, name="quiv-scheduler")

    async def stop(self, shutdown_timeout: float) -> None:
        """Stop scheduling, let running jobs finish (or abandon them), drain and close.

        :meth:`force` (the sync facade's answer to a second Ctrl-C) or a second,
        native cancellation of the calling task (asyncio's) ends the wait for
        running jobs at once.
        """
        self.running = False
        assert self._loop_scope is not None
        self._loop_scope.cancel()
        registry = self.registry
        for job in list(registry.ready):
            self.cancel_queued(job, "the scheduler shut down before it started")
        for job in registry.running.values():
            job.request_stop()
        interrupted: BaseException | None = None
        if registry.running:
            self._idle = anyio.Event()
            try:
                if not self._forced:
                    with anyio.move_on_after(shutdown_timeout) as self._grace:
                        await self._idle.wait()
            except anyio.get_cancelled_exc_class() as exc:
                # The callers shield this wait from anyio cancellation, so this is a
                # native one: asyncio tearing the loop down after a second Ctrl-C.
                interrupted = exc
                self._forced = True
                _uncancel_current_task()  # so the bounded waits below still work
            finally:
                self._grace = None
            if registry.running:
                await self._abandon_running(shutdown_timeout)
        if self._workers is not None:
            self._workers.close()
        self._late.report(self.clock.monotonic())
        self.dispatcher.close()
        self.store.close()
        drain = UNWIND_SECONDS if self._forced else max(shutdown_timeout, UNWIND_SECONDS)
        with anyio.move_on_after(drain):
            for done in self._services_done:
                await done.wait()
        undelivered = self.dispatcher.backlog()
        if undelivered:
            self.logger.warning(
                "quiv shutdown: %d callback(s) were still waiting for a slow listener or "
                "progress callback and were dropped",
                undelivered,
            )
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()  # whatever still hangs on, ends now
        if interrupted is not None:
            raise interrupted

    def force(self) -> None:
        """Make a shutdown under way stop waiting for running jobs now; call on the loop."""
        self._forced = True
        if self._grace is not None:
            self._grace.cancel()

    async def _abandon_running(self, grace: float) -> None:
        """Cut off the jobs still running: async ones are cancelled, sync threads left behind."""
        registry = self.registry
        assert self._idle is not None and self._workers is not None
        if self._forced:
            when = "when shutdown was interrupted"
        else:
            when = f"when the {grace:g}s shutdown grace period ended"
        jobs = list(registry.running.values())
        self.logger.warning(
            "quiv shutdown: %d job(s) still running %s: %s",
            len(jobs),
            when,
            ", ".join(f"{job.task.name!r} (job {job.id}, {_fate(job)})" for job in jobs),
        )
        left_running = f"abandoned by shutdown: still running {when}; its thread was left running"
        cancelled = f"cancelled by shutdown: still running {when}"
        for job in jobs:
            if not job.task.is_async:  # a thread cannot be stopped: leave it behind
                self._on_job_end(job, JobStatus.CANCELLED, left_running)
        self._workers.abandon(cancelled)  # async handlers are cancelled and unwind
        if registry.running:
            with anyio.move_on_after(UNWIND_SECONDS):
                await self._idle.wait()
        for job in list(registry.running.values()):  # still shielding itself: give up
            self._on_job_end(
                job, JobStatus.CANCELLED, f"{cancelled}; it did not unwind and was left behind"
            )

    async def _service(self, run: Callable[[], Any]) -> None:
        done = anyio.Event()
        self._services_done.append(done)
        try:
            await run()
        finally:
            done.set()

    # -- transitions, applied by AsyncQuiv after validation --------------------

    def add(self, task: TaskEntry, delay: float) -> None:
        now, first_run = self.clock.monotonic(), self.clock.now() + timedelta(seconds=delay)
        self.registry.tasks[task.id] = task
        self.registry.schedule(task, now + delay, first_run, on_cadence=True)
        self.store.save_task(task)
        self.emit_task(Event.TASK_ADDED, task)
        self._wake_by(now + delay)

    def run_now(self, task: TaskEntry) -> None:
        if task.job is not None:  # queued already, or running: go again once it ends
            if task.job.status is JobStatus.RUNNING:
                task.rerun = True
            return
        now, wall = self.clock.monotonic(), self.clock.now()
        self.registry.schedule(task, now, wall, on_cadence=False)
        self.store.save_task(task)
        self._wake_by(now)

    def pause(self, task: TaskEntry) -> bool:
        """Pause ``task``; False if it already was (nothing changes, no event)."""
        if task.paused:
            return False
        task.paused = True
        task.resume_at = None
        task.rerun = False
        self.registry.unschedule(task)
        if task.job is not None and task.job.status is JobStatus.SCHEDULED:
            self.cancel_queued(task.job, "its task was paused before it started")
        self.store.save_task(task)
        self.emit_task(Event.TASK_PAUSED, task)
        return True

    def resume(self, task: TaskEntry, delay: float) -> None:
        now, wall = self.clock.monotonic(), self.clock.now()
        task.paused = False
        task.anchor = None
        task.snapshot = None
        if task.job is None:
            self.registry.schedule(
                task, now + delay, wall + timedelta(seconds=delay), on_cadence=True
            )
        elif task.job.status is JobStatus.RUNNING:
            task.resume_at = now + delay  # applied when the run ends
        self.store.save_task(task)
        self.emit_task(Event.TASK_RESUMED, task)
        if task.job is None:
            self._wake_by(now + delay)

    def cancel(self, job: JobEntry) -> bool:
        if job.status.is_final:
            return False
        if job.status is JobStatus.SCHEDULED:
            self.cancel_queued(job, "cancelled before it started")
        job.request_stop()
        return True

    def remove(self, task: TaskEntry) -> None:
        self.registry.remove_task(task)
        job = task.job
        if job is not None:
            if job.status is JobStatus.SCHEDULED:
                self.cancel_queued(job, "its task was removed before it started")
            else:
                job.request_stop()
        self.store.delete_task(task.id)
        self.emit_task(Event.TASK_REMOVED, task)

    def cancel_queued(self, job: JobEntry, reason: str) -> None:
        job.request_stop()
        self.registry.discard_queued(job)
        self._finish_job(job, JobStatus.CANCELLED, reason)

    # -- the scheduler loop --------------------------------------------------

    def _wake_by(self, when: float) -> None:
        """Make sure whatever falls due at monotonic time ``when`` is dispatched then."""
        if when >= self._sleeping_until or self._wakeup is None:
            return  # the loop is awake, or will wake by then anyway
        if self.running and when <= self.clock.monotonic():
            # Due already: dispatch it right here, a loop round trip sooner. The
            # loop's own deadline stays right, since nothing else became due.
            self._dispatch_due(self.clock.monotonic(), self.clock.now())
        else:
            self._wakeup.set()

    async def _scheduler_loop(self) -> None:
        assert self._loop_scope is not None
        with self._loop_scope:
            while self.running:
                deadline = self._tick()
                self._wakeup = anyio.Event()
                self._sleeping_until = math.inf if deadline is None else deadline
                await self.clock.wait(self._wakeup, deadline)
                self._sleeping_until = -math.inf  # awake: _tick sees every change

    def _tick(self) -> float | None:
        """Turn due tasks into jobs, start what the pool allows, purge old history.

        Returns the monotonic time at which there will be more to do, if any.
        """
        registry, clock = self.registry, self.clock
        now, wall = clock.monotonic(), clock.now()
        self._dispatch_due(now, wall)
        deadline = registry.next_due()
        oldest = registry.oldest_finished_end()
        if oldest is not None:
            keep = self.config.history_retention_seconds
            if oldest + keep <= now:
                purged = registry.purge_finished(now - keep)
                self.store.purge_jobs(wall - timedelta(seconds=keep))
                self.logger.debug("quiv purged %d finished job(s) from history", purged)
                oldest = registry.oldest_finished_end()
            if oldest is not None:
                deadline = oldest + keep if deadline is None else min(deadline, oldest + keep)
        return deadline

    def _dispatch_due(self, now: float, wall: datetime) -> None:
        """Turn every task due by ``now`` into a job and start what the pool allows."""
        registry = self.registry
        for due, task in registry.pop_due(now):
            job = registry.create_job(task, new_id(), due, wall)
            self.store.save_job(job)
        self._start_ready(now, wall)

    def _start_ready(self, now: float, wall: datetime) -> None:
        """Start queued jobs while the pool has free slots.

        When the pool is full, every job queued so far has to wait: those are
        the ones reported as late when they finally start.
        """
        registry, pool, workers = self.registry, self._pool, self._workers
        assert pool is not None and workers is not None
        ready = registry.ready
        while ready:
            job = ready[0]
            try:
                pool.acquire_on_behalf_of_nowait(job)
            except anyio.WouldBlock:
                self._queued_through = registry.jobs_created
                return
            ready.popleft()
            registry.start_job(job, now, wall)
            if job.number <= self._queued_through:
                self._late.record(job, now - job.due, now)
            self.store.save_job(job)
            self.emit_job(Event.JOB_STARTED, job)
            workers.submit(job)

    def _hook(self, job: JobEntry) -> Callable[..., None]:
        """The ``_progress_hook`` for ``job``: posts to its task's progress callback."""
        callback = job.task.progress_callback
        if callback is None:
            return _ignore_progress
        post = self.dispatcher.post

        def progress_hook(**payload: Any) -> None:
            post(Delivery(callback, (), payload))

        return progress_hook

    def _on_job_end(self, job: JobEntry, status: JobStatus, error: str | None) -> None:
        if job.status is not JobStatus.RUNNING:
            return  # an abandoned thread reporting after shutdown gave up on it
        assert self._pool is not None
        self._pool.release_on_behalf_of(job)
        self._finish_job(job, status, error)

    def _finish_job(self, job: JobEntry, status: JobStatus, error: str | None) -> None:
        # Progress still waiting in the inbox goes out before the final event.
        self.dispatcher.drain_inbox()
        registry, task = self.registry, job.task
        now, wall = self.clock.monotonic(), self.clock.now()
        following = registry.finish_job(job, status, error, now, wall)
        if following is not None:
            due, on_cadence = following
            if on_cadence and task.fixed and task.anchor is not None and task.last_slot is not None:
                skipped = skipped_slots(task.interval, task.last_slot, due)
                if skipped:
                    self.logger.info(
                        "quiv task %r (%s) overran its interval: %d slot(s) skipped",
                        task.name,
                        task.id,
                        skipped,
                    )
            registry.schedule(task, due, wall + timedelta(seconds=due - now), on_cadence=on_cadence)
            self._wake_by(due)
        self.store.save_job(job)
        if error is not None and status is JobStatus.FAILED:
            self.logger.error("quiv task %r (job %s) failed: %s", task.name, job.id, error)
        self.emit_job(_FINAL_EVENT[status], job)
        if task.run_once and not task.removed:
            registry.remove_task(task)
            self.store.delete_task(task.id)
            self.emit_task(Event.TASK_REMOVED, task)
        elif not task.removed:
            self.store.save_task(task)
        if self.running and registry.ready:
            # The slot this job held goes straight to the next queued job.
            self._start_ready(now, wall)
        self._wake_by(now + self.config.history_retention_seconds)  # the purge timer
        if self._idle is not None and not registry.running:
            self._idle.set()

    # -- events -------------------------------------------------------------

    def emit_task(self, event: Event, task: TaskEntry) -> None:
        listeners = self.listeners[event]
        if listeners:
            model = task.to_model()
            self.dispatcher.post_many(Delivery(cb, (event, model)) for cb in listeners)

    def emit_job(self, event: Event, job: JobEntry) -> None:
        listeners = self.listeners[event]
        if listeners:
            task_model, job_model = job.task.to_model(), job.to_model()
            self.dispatcher.post_many(
                Delivery(cb, (event, task_model, job_model)) for cb in listeners
            )
