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
  its rows (see ``_store``);
* the history of finished jobs lives in the store: memory keeps the live jobs
  and the last ``HISTORY_WINDOW`` finished ones, and lets an older one go once
  its final row is committed; reads merge the two;
* nothing outruns its consumer: while the writer has ``UNWRITTEN_HIGH``
  finished jobs to catch up on, or the dispatcher ``EVENTS_HIGH`` undelivered
  callbacks, no new job starts (due jobs wait, as for a full pool, and the
  misfire rules apply to them); the loop itself never waits.

Every transition is a synchronous method: ``AsyncQuiv`` validates a call, then
applies exactly one of them, so no await can ever interleave with a change.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._clock import Clock
from ._config import QuivConfig
from ._dispatch import Delivery, Dispatcher
from ._exceptions import QuivError, SchedulerClosedError, TaskNotFoundError
from ._history import HistoryQuery, select
from ._ids import new_id
from ._inbox import Inbox
from ._jobpolicy import retry_delay
from ._models import Event, Job, JobStatus
from ._registry import JobEntry, Registry, TaskEntry, job_from_row, missed_reason
from ._shared import SharedSchedule
from ._snapshots import SNAPSHOTS_AHEAD, Snapshots
from ._stores import DurableStore, StoreOptions, open_store, worker_name
from ._triggers import Moment, jitter_delay, settle_overdue
from ._types import Listener
from ._workers import Workers

if TYPE_CHECKING:
    from typing import TypeAlias

    _AnyLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = ["LAG_WINDOW", "Engine", "Waiter"]

#: Told once when a job ends: its final snapshot, or why it never will.
Waiter = Callable[["Job | QuivError"], None]

_FINAL_EVENT = {
    JobStatus.COMPLETED: Event.JOB_COMPLETED,
    JobStatus.CANCELLED: Event.JOB_CANCELLED,
    JobStatus.FAILED: Event.JOB_FAILED,
    JobStatus.MISSED: Event.JOB_MISSED,
}

#: Seconds to wait for handlers that were cut off at shutdown to unwind.
UNWIND_SECONDS = 1.0
#: A change of (wall - monotonic) larger than this is a wall-clock jump.
JUMP_TOLERANCE = 0.1
#: At most this many overdue due times of one task are weighed at once; older
#: ones are folded in (a per-second cron after a day's suspend is 86,400 of them).
OVERDUE_LIMIT = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Finished jobs kept in memory once their final rows are stored; older ones are
#: read back from the store.
HISTORY_WINDOW = 1000
#: Finished jobs whose final row the writer has not committed yet at which no new
#: job starts, and the level the writer must bring them back to (about 1 KB each).
UNWRITTEN_HIGH = 5000
UNWRITTEN_LOW = UNWRITTEN_HIGH // 2
#: Undelivered callbacks at which no new job starts, and the level to resume at.
EVENTS_HIGH = 2048
EVENTS_LOW = EVENTS_HIGH // 2
#: The store's spans of end times are this fraction of the retention at most, so
#: its rows are purged that much late at most (reads never show them).
PURGE_GRANULARITY = 0.01
#: With a durable store, a job's progress is stored at most this often (seconds).
PROGRESS_SAVE_SECONDS = 0.1
#: How many recent starts ``stats()`` computes start lag over.
LAG_WINDOW = 1000


_EVERYTHING = HistoryQuery()
#: True while the sync facade runs a call of the core inline, where it cannot suspend.
INLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("quiv_inline", default=False)
#: A store's history reads (``read_job``, ``read_jobs``), or what stands in for them.
ReadJob = Callable[[str, datetime], "tuple[Any, ...] | None"]
ReadJobs = Callable[[datetime, "str | None"], "list[tuple[Any, ...]]"]


def _entry_key(job: JobEntry) -> tuple[JobStatus, str, datetime]:
    return job.status, job.task.id, job.started_at


def _item_key(item: JobEntry | tuple[Any, ...]) -> tuple[JobStatus, str, datetime]:
    """What the history filters read, from a live job or a stored row."""
    if isinstance(item, JobEntry):
        return item.status, item.task.id, item.started_at
    return JobStatus(item[3]), item[1], datetime.fromisoformat(item[4])


def _uncancel_current_task() -> None:
    """Take back a native cancellation the current task has received (Python 3.11+)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


def _fate(job: JobEntry) -> str:
    """What shutdown does to a job that outlives its grace period."""
    return "async: cancelled" if job.task.is_async else "sync: left running in its thread"


_CUT_REASON = {
    "force": "cancelled at once by cancel_job(force=True)",
    "timeout": "cancelled: still running when its timeout's grace period ended",
}


def _timed_out(job: JobEntry) -> str:
    timeout = job.task.job_policy.timeout
    limit = "its timeout" if timeout is None else f"{timeout:g}s"
    how = "; it was cancelled after its grace period" if job.cut else ""
    return f"timed out: still running after {limit}{how}"


def _ignore_progress(*_args: Any, **_payload: Any) -> None:
    """The ``_progress_hook`` of a handler that does not take one."""


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

    def __init__(
        self,
        config: QuivConfig,
        clock: Clock,
        logger: _AnyLogger,
        store_options: StoreOptions | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.logger = logger
        self.registry = Registry()
        self._snapshots = Snapshots(self.registry)
        self.listeners: dict[Event, list[Listener]] = {event: [] for event in Event}
        #: ``callback(task, job, payload)`` for every job's progress (``add_progress_listener``).
        self.progress_listeners: list[Listener] = []
        self.dispatcher = Dispatcher(logger)
        #: How other threads (the sync facade, worker threads) get work done on the loop.
        self.inbox = Inbox(logger)
        self.store = open_store(store_options or StoreOptions(), logger)
        #: With a durable store: the schedule shared with other processes (else None).
        self.shared = (
            SharedSchedule(self, self.store) if isinstance(self.store, DurableStore) else None
        )
        self.store.snapshot = lambda: (self.registry.tasks.values(), self.registry.jobs.values())
        self.store.committed = self._rows_committed
        self._held = False  # new jobs wait for the writer or the dispatcher to catch up
        self._unwritten = 0  # finished jobs whose final row is not committed yet
        self.running = False  # True between start() and stop(): jobs may be started
        self._late = _LateStarts(logger)
        self._task_group: TaskGroup | None = None
        self._pool: anyio.CapacityLimiter | None = None
        self._workers: Workers | None = None
        self._loop_scope: anyio.CancelScope | None = None
        self._wakeup: anyio.Event | None = None
        self._sleeping_until = -math.inf  # the loop's wake-up deadline while it sleeps
        self._queued_through = 0  # jobs numbered up to here found the pool full
        self._dispatching = False  # inside _dispatch_due: no nested dispatch
        self._wall_tasks = 0  # tasks with a wall-clock trigger
        self._wall_offset: float | None = None  # wall - monotonic seconds, last seen
        self._rng: random.Random | None = None  # for jitter; seeding it costs a syscall
        self._idle: anyio.Event | None = None
        self._grace: anyio.CancelScope | None = None  # the shutdown grace wait, while it lasts
        self._forced = False  # shutdown was told to stop waiting for running jobs
        self._services_done: list[anyio.Event] = []
        #: Seconds a timed-out async handler gets to honour its stop event before
        #: it is cancelled; set by AsyncQuiv.
        self.cancel_grace = 1.0
        # One-off timers (retry backoffs, timeouts): (monotonic due, seq, callback).
        self._timers: list[tuple[float, int, Callable[[Moment], None]]] = []
        self._timer_seq = 0
        self.job_waiters: dict[str, list[Waiter]] = {}
        self.task_waiters: dict[str, list[Waiter]] = {}
        self.ended: dict[JobStatus, int] = dict.fromkeys(_FINAL_EVENT, 0)
        self.lags: deque[float] = deque(maxlen=LAG_WINDOW)  # due to start, seconds

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
        failure: BaseException | None = None
        if self.shared is not None:
            await self.shared.store.open()  # a database we cannot use: refused right here
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                try:
                    self._start(group, main_loop)
                except BaseException as exc:  # raised below, not wrapped in a group
                    failure = exc
                    self.dispatcher.discard()  # its streams would otherwise leak
                    group.cancel_scope.cancel()
                else:
                    task_status.started()
        if failure is not None:
            raise failure

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
        self._workers.main_loop = main_loop or asyncio.get_running_loop()
        self.store.start()
        self.running = True
        task_group.start_soon(self.inbox.run, name="quiv-inbox")
        task_group.start_soon(self._service, self.dispatcher.run, name="quiv-dispatcher")
        task_group.start_soon(self._service, self.store.run, name="quiv-store-writer")
        task_group.start_soon(self._snapshots.run, name="quiv-snapshots")
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
        # The host loop may be the very one blocked in shutdown(): never wait for it now.
        self.dispatcher.stop_waiting_for_host()
        registry = self.registry
        for job in list(registry.ready):
            self.cancel_queued(job, "the scheduler shut down before it started")
        for task in list(registry.tasks.values()):
            for job in list(task.retries):
                self.cancel_queued(job, "the scheduler shut down before its retry was due")
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
        self._release_waiters(SchedulerClosedError())
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

    def now(self) -> Moment:
        """The current instant on both clocks."""
        clock = self.clock
        return Moment(clock.monotonic(), clock.now())

    def add(self, task: TaskEntry, delay: float) -> datetime:
        """Register ``task``; return when its first run is due (it may have started already)."""
        now = self.now()
        self._register(task)
        if self.shared is not None:
            self.shared.add(task, now, delay)  # scheduled once the store has adopted it
        else:
            self._schedule(task, task.timeline.start(now, delay))
        self.store.save_task(task)
        self.emit_task(Event.TASK_ADDED, task)
        first_run = task.next_run_at
        self._wake_for(task)
        self._recheck_wall_within(now)
        return first_run

    def update(self, task: TaskEntry, retimed: bool) -> None:
        """Apply the changes ``AsyncQuiv.update_task`` made to ``task``'s fields.

        With a new trigger (``retimed``), an idle task is planned afresh from now;
        a queued or running job is not touched, and the task's next run is
        planned from the new trigger when it ends.
        """
        now = self.now()
        self.registry.stale(task)
        if retimed:
            task.owed.clear()
            if task.due is not None:
                self.registry.unschedule(task)
            if self.shared is not None:
                self.shared.retimed(task, now)  # the store's next due time, for every process
            elif not task.paused and not task.jobs:
                self._schedule(task, task.timeline.start(now, 0.0))
        self._plan(task, now, ended=False)  # e.g. a larger max_instances allows a run now
        self.store.save_task(task)
        self._wake_for(task)
        self._recheck_wall_within(now)

    def retimed(self, task: TaskEntry, was_wall_clock: bool) -> None:
        """Keep the count of wall-clock tasks right after ``task``'s trigger changed."""
        self._wall_tasks += int(task.trigger.wall_clock) - int(was_wall_clock)

    def run_now(self, task: TaskEntry) -> None:
        if task.queued is not None:
            return  # queued already: it is about to run
        if len(task.running) >= task.policy.max_instances:
            task.rerun = True  # go again once a run ends
            return
        now = self.now()
        self.registry.schedule(task, now, on_cadence=False)
        self.store.save_task(task)
        self._wake_by(now.mono)

    def pause(self, task: TaskEntry, *, announce: bool = True) -> bool:
        """Pause ``task``; False if it already was (nothing changes, no event).

        ``announce=False``: the pause came from the shared store (another
        process paused it), so it is not written back there.
        """
        if task.paused:
            return False
        task.paused = True
        task.resume_at = None
        task.rerun = False
        task.owed.clear()
        self.registry.unschedule(task)
        if task.queued is not None:
            self.cancel_queued(task.queued, "its task was paused before it started")
        now = self.clock.monotonic()
        for job in task.retries:  # a retry waits with its task
            if job.retry_due is None:  # queued for the pool: back to waiting, due now
                self.registry.discard_queued(job)
                job.retry_due = now
        self.store.save_task(task)
        if self.shared is not None and announce:
            self.shared.paused(task)
        self.emit_task(Event.TASK_PAUSED, task)
        return True

    def resume(self, task: TaskEntry, delay: float) -> None:
        now = self.now()
        task.paused = False
        self.registry.stale(task)
        if self.shared is not None:
            self.shared.resume(task, now, delay)
        elif not task.jobs:
            self._schedule(task, task.timeline.start(now, delay))
        elif task.running and task.queued is None:
            task.resume_at = now.mono + delay  # applied when the run ends
        for job in task.retries:
            if job.retry_due is not None:
                self._arm_retry(job)
        self.store.save_task(task)
        self.emit_task(Event.TASK_RESUMED, task)
        self._wake_for(task)

    def cancel(self, job: JobEntry, force: bool = False) -> bool:
        if job.status.is_final:
            return False
        if job.status is JobStatus.SCHEDULED:
            self.cancel_queued(job, "cancelled before it started")
        job.request_stop()
        if force:
            self._cut(job, "force")
        return True

    def remove(self, task: TaskEntry, *, keep_row: bool = False) -> None:
        """Remove ``task`` here; from the store too unless ``keep_row`` (a finished one-shot)."""
        self.registry.remove_task(task)
        if task.trigger.wall_clock:
            self._wall_tasks -= 1
        for job in task.jobs + task.retries:
            if job.status is JobStatus.SCHEDULED:
                self.cancel_queued(job, "its task was removed before it started")
            else:
                job.request_stop()
        if not keep_row:
            self.store.delete_task(task.id)
        if self.shared is not None:
            self.shared.forget(task.id)
        self.emit_task(Event.TASK_REMOVED, task)
        waiters = self.task_waiters.pop(task.id, None)
        if waiters:
            for waiter in waiters:
                waiter(TaskNotFoundError(task.id))

    def cancel_queued(self, job: JobEntry, reason: str) -> None:
        job.request_stop()
        self.registry.discard_queued(job)
        self._finish_job(job, JobStatus.CANCELLED, reason)

    # -- planning ------------------------------------------------------------

    def _random(self) -> random.Random:
        """The source of jitter and backoff, made on first use (seeding it costs a syscall)."""
        if self._rng is None:
            self._rng = random.Random()
        return self._rng

    def _schedule(self, task: TaskEntry, slot: Moment | None) -> None:
        """Put ``task`` on the heap for ``slot`` (its job starts after a random jitter)."""
        if slot is None:
            return  # the trigger fires no more
        jitter = jitter_delay(task.policy.jitter, self._random()) if task.policy.jitter else 0.0
        self.registry.schedule(task, slot, jitter=jitter)

    def _plan(self, task: TaskEntry, now: Moment, *, ended: bool) -> None:
        """Put ``task`` back on the heap if it may have another job now.

        Called when one of its jobs starts (``ended=False``: a task below
        ``max_instances`` keeps its next due time on the heap, so runs may
        overlap) and when one ends. Due times that passed while the task was at
        ``max_instances`` with every job running are skipped: a task never runs
        more than ``max_instances`` at once, and never makes up for that later.
        """
        if task.removed or task.paused or task.queued is not None or task.due is not None:
            return
        if self.shared is not None:
            self.shared.plan(task, now, ended=ended)
            return
        if task.consumed or len(task.running) >= task.policy.max_instances:
            return  # planned again when a run ends
        timeline = task.timeline
        if task.rerun:  # run-now during the run: go again at once, off the cadence
            task.rerun = False
            task.resume_at = None
            self.registry.schedule(task, now, on_cadence=False)
        elif task.resume_at is not None:
            delay = max(0.0, task.resume_at - now.mono)
            task.resume_at = None
            self._schedule(task, timeline.start(now, delay))
        elif task.owed:  # coalesce=False: the next overdue run, at once
            self.registry.schedule(task, task.owed.pop(0))
        elif ended:
            _, skipped = timeline.overdue(now, 0)
            if skipped:
                self.logger.info(
                    "quiv task %r (%s) overran its %s: %d slot(s) skipped",
                    task.name,
                    task.id,
                    "schedule" if task.trigger.wall_clock else "interval",
                    skipped,
                )
            self._schedule(task, timeline.after_run(now))
        else:
            self._schedule(task, timeline.upcoming(now))
        self._wake_for(task)

    def _recheck_wall_within(self, now: Moment) -> None:
        """Bring the loop's wake-up within the clock's ``wall_recheck`` if it needs one.

        A wall-clock task just added (or retimed) must not wait for a wake-up
        planned before it existed to have its wall clock looked at.
        """
        recheck: float | None = getattr(self.clock, "wall_recheck", None)
        if recheck is not None and self._wall_tasks > 0:
            self._wake_by(now.mono + recheck)

    def _wake_for(self, task: TaskEntry) -> None:
        if task.due is not None:
            self._wake_by(task.due)

    def _settle(self, job: JobEntry, now: Moment) -> bool:
        """Weigh the due times a job about to start stands for; False if it is missed.

        They are its own, the overdue runs still owed (``coalesce=False``) and
        every due time that passed while it waited (a full pool, a wall-clock
        jump). ``misfire_grace`` and ``coalesce`` decide which run and which
        become ``missed`` records.
        """
        task, timeline, policy = job.task, job.task.timeline, job.task.policy
        passed, count = timeline.overdue(now, OVERDUE_LIMIT)
        dues = [job.slot, *task.owed, *passed]
        task.owed = []
        if len(dues) == 1 and policy.misfire_grace is None:
            return True  # the common case: on time, or late with no grace to judge by

        def late(slot: Moment) -> float:
            return timeline.late_by(slot, now) - (job.jitter if slot is job.slot else 0.0)

        # Weighed as "seconds late", so one pure rule serves every kind of trigger.
        by_key = {-late(slot): slot for slot in dues}
        for slot in dues:
            timeline.advance(slot)
        outcome = settle_overdue(
            list(by_key), 0.0, misfire_grace=policy.misfire_grace, coalesce=policy.coalesce
        )
        folded = outcome.coalesced + (count - len(passed))
        if folded:
            self.logger.info(
                "quiv task %r (%s): %d overdue run(s) coalesced into one",
                task.name,
                task.id,
                folded,
            )
        run = [by_key[key] for key in outcome.run]
        missed = [by_key[key] for key in outcome.missed]
        if not run:
            job.slot = missed.pop()  # the job itself is the record of the latest
        for slot in missed:
            self._record_missed(task, slot, now)
        if not run:
            return False
        job.slot = run[0]
        task.owed = run[1:]
        return True

    def add_foreign(self, task: TaskEntry) -> None:
        """Register a task another process added to the shared store (already stored)."""
        self._register(task)
        self.emit_task(Event.TASK_ADDED, task)

    def _register(self, task: TaskEntry) -> None:
        """Hold ``task`` here: in the registry, counted if wall-clock, snapshot made ahead."""
        self.registry.tasks[task.id] = task
        if task.trigger.wall_clock:
            self._wall_tasks += 1
        if not task.one_shot and len(self.registry.tasks) <= SNAPSHOTS_AHEAD:
            self.registry.want_snapshot(task)  # made ahead, for reads from other threads

    def schedule_at(self, task: TaskEntry, slot: Moment) -> None:
        """Put ``task`` on the heap for ``slot`` (plus jitter) and wake the loop for it."""
        self._schedule(task, slot)
        self._wake_for(task)

    def run_claimed(self, task: TaskEntry, job_id: str, slot: Moment, now: Moment) -> None:
        """Queue the job of an occurrence this process claimed in the shared store."""
        task.slot, task.slot_jitter, task.due_is_slot = slot, 0.0, False  # settled by the claim
        job = self.registry.create_job(task, job_id, now)
        self.store.save_job(job)
        if self.running:
            self._start_ready(now)

    def retry_abandoned(
        self, task: TaskEntry, job_id: str, attempt: int, retry_of: str | None
    ) -> None:
        """Retry a job another process abandoned (its lease ran out) in this one."""
        if not self.running or task.removed:
            return
        now = self.now()
        failed = JobEntry(job_id, task, 0, now.mono, now, False, now.wall)
        failed.attempt, failed.retry_of = attempt, retry_of
        self._schedule_retry(failed, now)
        self.emit_job(Event.JOB_RETRYING, failed)
        if self.registry.ready:
            self._start_ready(now)

    def record_missed(self, task: TaskEntry, slot: Moment, now: Moment) -> None:
        self._record_missed(task, slot, now)

    def _record_missed(self, task: TaskEntry, slot: Moment, now: Moment) -> None:
        job = self.registry.record_missed(task, new_id(), slot, now)
        self._unwritten += 1
        self.store.save_job(job)
        self._ended(job)
        self.emit_job(Event.JOB_MISSED, job)

    # -- timers: retry backoffs and timeouts -----------------------------------

    def _at(self, when: float, fire: Callable[[Moment], None]) -> None:
        """Call ``fire(now)`` on the loop once monotonic time reaches ``when``."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fire))
        if when < self._sleeping_until and self._wakeup is not None:
            self._wakeup.set()

    def _fire_timers(self, now: Moment) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now.mono:
            _, _, fire = heapq.heappop(timers)
            fire(now)

    def _should_retry(self, job: JobEntry) -> bool:
        task = job.task
        return (
            job.attempt <= task.job_policy.max_retries
            and self.running
            and not task.removed
            and not job.stop_requested  # cancelled, or timed out: not retried
        )

    def _schedule_retry(self, failed: JobEntry, now: Moment) -> JobEntry:
        """The next attempt of ``failed``, due after a random backoff."""
        task, policy = failed.task, failed.task.job_policy
        delay = retry_delay(
            failed.attempt, policy.retry_backoff, policy.retry_backoff_max, self._random()
        )
        due = Moment(now.mono + delay, now.wall + timedelta(seconds=delay))
        waiting = delay > 0 or task.paused
        job = self.registry.create_retry(failed, new_id(), due, waiting=waiting)
        self.store.save_job(job)
        if waiting and not task.paused:
            self._arm_retry(job)
        return job

    def _arm_retry(self, job: JobEntry) -> None:
        assert job.retry_due is not None
        job.retry_timer += 1
        timer = job.retry_timer

        def due(now: Moment) -> None:
            if job.retry_timer != timer or job.retry_due is None or job.task.paused:
                return  # cancelled, re-armed, or its task was paused (re-armed on resume)
            job.retry_due = None
            self.registry.ready.append(job)

        self._at(job.retry_due, due)

    def _time_out(self, job: JobEntry, timeout: float, now: Moment) -> None:
        """``job`` ran ``timeout`` seconds: set its stop event; async ones are cut off later."""
        if job.status is not JobStatus.RUNNING:
            return
        if not job.stop_requested:
            job.timed_out = True
            self.logger.warning(
                "quiv task %r (job %s) timed out after %gs; its stop event is set%s",
                job.task.name,
                job.id,
                timeout,
                f" and it is cancelled in {self.cancel_grace:g}s unless it returns"
                if job.task.is_async
                else " (a sync handler cannot be killed: it keeps its slot until it returns)",
            )
        job.request_stop()
        if job.task.is_async:
            self._at(now.mono + self.cancel_grace, lambda _now: self._cut(job, "timeout"))

    def _cut(self, job: JobEntry, reason: str) -> None:
        """Cancel a running async handler now, through its task; sync ones cannot be."""
        if job.status is not JobStatus.RUNNING or not job.task.is_async or job.cut is not None:
            return
        job.cut = reason
        job.request_stop()
        if job.handle is not None:
            job.handle.cancel()  # else its worker sees ``cut`` before it starts it

    def _ended(self, job: JobEntry) -> None:
        """Count ``job``'s end and tell whoever waits for it."""
        self.ended[job.status] += 1
        if self.job_waiters or self.task_waiters:
            model = job.to_model()
            for waiter in self.job_waiters.pop(job.id, ()):
                waiter(model)
            for waiter in self.task_waiters.pop(job.task.id, ()):
                waiter(model)

    def _release_waiters(self, error: QuivError) -> None:
        for waiters in (*self.job_waiters.values(), *self.task_waiters.values()):
            for waiter in waiters:
                waiter(error)
        self.job_waiters.clear()
        self.task_waiters.clear()

    # -- the scheduler loop --------------------------------------------------

    def _wake_by(self, when: float) -> None:
        """Make sure whatever falls due at monotonic time ``when`` is dispatched then."""
        if self._dispatching or when >= self._sleeping_until or self._wakeup is None:
            return  # the loop is awake, or will wake by then anyway
        if self.running and when <= self.clock.monotonic():
            # Due already: dispatch it right here, a loop round trip sooner. The
            # loop's own deadline stays right, since nothing else became due.
            self._dispatch_due(self.now())
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
        registry = self.registry
        now = self.now()
        self._check_wall_clock(now)
        if self._timers:
            self._fire_timers(now)
        self._dispatch_due(now)
        deadline = registry.next_due()
        oldest = registry.oldest_finished_end()
        if oldest is not None:
            keep = self.config.history_retention_seconds
            if oldest + keep <= now.mono:
                purged = registry.purge_finished(now.mono - keep)
                self.store.purge_jobs(now.wall - timedelta(seconds=keep))
                self.logger.debug("quiv purged %d finished job(s) from history", purged)
                oldest = registry.oldest_finished_end()
            if oldest is not None:
                deadline = oldest + keep if deadline is None else min(deadline, oldest + keep)
        recheck: float | None = getattr(self.clock, "wall_recheck", None)
        if recheck is not None and self._wall_tasks > 0:
            # The system clock cannot announce a jump: look again after at most
            # this long, only while wall-clock tasks exist (see docs/scheduling.md).
            limit = now.mono + recheck
            deadline = limit if deadline is None else min(deadline, limit)
        if self._timers:
            first = self._timers[0][0]
            deadline = first if deadline is None else min(deadline, first)
        return deadline

    def _check_wall_clock(self, now: Moment) -> None:
        """Re-plan wall-clock tasks if the wall clock moved apart from the monotonic one."""
        offset = (now.wall - _EPOCH).total_seconds() - now.mono
        if self._wall_offset is None or abs(offset - self._wall_offset) <= JUMP_TOLERANCE:
            if self._wall_offset is None:
                self._wall_offset = offset
            return
        jump, self._wall_offset = offset - self._wall_offset, offset
        registry = self.registry
        replanned = 0
        for task in list(registry.scheduled()):
            slot = task.slot
            assert slot is not None
            if task.trigger.wall_clock and task.due_is_slot:
                registry.schedule(task, task.timeline.rebase(slot, now), jitter=task.slot_jitter)
                replanned += 1
            else:  # elapsed time is unaffected: only the shown wall time moves
                task.slot = Moment.at_mono(slot.mono, now)
                task.next_run_at = task.slot.wall
                registry.stale(task)
        self.logger.info(
            "quiv noticed the wall clock jump by %+.3fs; re-planned %d wall-clock task(s)",
            jump,
            replanned,
        )

    def _dispatch_due(self, now: Moment) -> None:
        """Turn every task due by ``now`` into a job and start what the pool allows."""
        if self._dispatching:
            return  # the dispatch under way looks at the heap again before it ends
        registry, shared = self.registry, self.shared
        self._dispatching = True
        upcoming: float | None = None
        try:
            while True:
                for task in registry.pop_due(now.mono):
                    if shared is not None and task.due_is_slot:
                        shared.dispatch(task, now)  # claimed first; run if the claim holds
                        continue
                    job = registry.create_job(task, new_id(), now)
                    self.store.save_job(job)
                self._start_ready(now)
                upcoming = registry.next_due()
                if upcoming is None or upcoming > now.mono:
                    break
        finally:
            self._dispatching = False
        if upcoming is not None and upcoming < self._sleeping_until and self._wakeup is not None:
            self._wakeup.set()  # dispatched outside the loop: bring its deadline forward

    def _start_ready(self, now: Moment) -> None:
        """Start queued jobs while the pool has free slots.

        When the pool is full, every job queued so far has to wait: those are
        the ones reported as late when they finally start. A job that can start
        only past its task's ``misfire_grace`` ends ``missed`` instead.
        """
        registry, pool, workers = self.registry, self._pool, self._workers
        assert pool is not None and workers is not None
        ready = registry.ready
        while ready:
            if self._must_hold():
                return
            job = ready[0]
            try:
                pool.acquire_on_behalf_of_nowait(job)
            except anyio.WouldBlock:
                self._queued_through = registry.jobs_created
                return
            ready.popleft()
            task = job.task
            if job.on_cadence and not self._settle(job, now):
                pool.release_on_behalf_of(job)
                self._finish_job(job, JobStatus.MISSED, None, start_next=False)
                continue
            registry.start_job(job, now)
            if self.shared is not None:  # the private store has one process: no name needed
                job.worker = worker_name()
            self.lags.append(now.mono - job.due)
            if job.number <= self._queued_through:
                self._late.record(job, now.mono - job.due, now.mono)
            self.store.save_job(job)
            self.emit_job(Event.JOB_STARTED, job)
            workers.submit(job)
            timeout = task.job_policy.timeout
            if timeout is not None:
                self._at(now.mono + timeout, functools.partial(self._time_out, job, timeout))
            self._plan(task, now, ended=False)

    # -- holding new jobs back while the writer or the dispatcher catches up ----

    def _must_hold(self) -> bool:
        """Whether new jobs must wait; arms the release when they must."""
        unwritten = self._unwritten
        behind = unwritten >= UNWRITTEN_HIGH and not self.store.failing
        if not (behind or self.dispatcher.pending >= EVENTS_HIGH):
            return False
        if not self._held:
            self._held = True
            self.dispatcher.on_delivered = self._maybe_release
            self.logger.debug(
                "quiv holds new jobs back: %d finished job(s) not yet written, "
                "%d callback(s) not yet delivered",
                unwritten,
                self.dispatcher.pending,
            )
        return True

    def _maybe_release(self) -> None:
        """Let new jobs start again once both consumers are back below their low marks."""
        if not self._held:
            return
        if self._unwritten > UNWRITTEN_LOW and not self.store.failing:
            return
        if self.dispatcher.pending > EVENTS_LOW:
            return
        self._held = False
        self.dispatcher.on_delivered = None
        if self.running and self.registry.ready and self._wakeup is not None:
            self._wakeup.set()  # the scheduler loop starts what waited

    def _rows_committed(self, entries: list[JobEntry]) -> None:
        """The writer committed these jobs' latest state: let old finished ones go."""
        for job in entries:
            if job.status.is_final and not job.stored:
                job.stored = True
                self._unwritten -= 1
        granularity = self.config.history_retention_seconds * PURGE_GRANULARITY
        self.registry.release_stored(HISTORY_WINDOW, granularity)
        self._maybe_release()

    # -- history reads (merged with the store) --------------------------------

    def _history_start(self) -> datetime:
        """Jobs that ended before this instant are outside the retention window."""
        return self.clock.now() - timedelta(seconds=self.config.history_retention_seconds)

    def job_model(self, job_id: str, read_job: ReadJob | None = None) -> Job | None:
        """The snapshot of one job in memory or in the store, None if there is none.

        ``read_job``: what stands in for the store's read (see ``job_model_off_loop``).
        """
        job = self.registry.jobs.get(job_id)
        if job is not None:
            return job.to_model()
        if not self.registry.stored_ends and self.shared is None:
            return None  # the store holds nothing that memory does not
        row = (read_job or self.store.read_job)(job_id, self._history_start())
        if row is None or (row[5] is None and self.shared is None):  # not there, or stale
            return None
        return job_from_row(row)

    def ended_job_model(self, job_id: str) -> Job | None:
        """The snapshot of a job that has ended, read from any thread; else None.

        An ended job's record never changes again, and its status is the last
        field set, so another thread may read it without the loop: from memory,
        or from the store once memory has let it go (which it does only after
        the final row is committed). None means "ask the loop": the job is live,
        unknown, or its row is not final yet.
        """
        job = self.registry.jobs.get(job_id)
        if job is not None:
            return job.to_model() if job.status.is_final else None
        if not self.registry.stored_ends:
            return None
        row = self.store.read_job(job_id, self._history_start())
        return None if row is None or row[5] is None else job_from_row(row)

    def job_models(
        self, query: HistoryQuery = _EVERYTHING, read_jobs: ReadJobs | None = None
    ) -> list[Job]:
        """The jobs in the retention window that ``query`` picks; the newest state wins.

        ``read_jobs``: what stands in for the store's read (see ``job_model_off_loop``).
        """
        memory = self.registry.jobs
        if not self.registry.stored_ends and self.shared is None:  # memory holds it all
            jobs = memory.values()
            if query == _EVERYTHING:
                return [job.to_model() for job in jobs]
            return [job.to_model() for job in select(jobs, query, _entry_key)]
        items = self._merged_history(query.status, read_jobs or self.store.read_jobs)
        chosen = items if query == _EVERYTHING else select(items, query, _item_key)
        return [
            item.to_model() if isinstance(item, JobEntry) else job_from_row(item) for item in chosen
        ]

    async def job_model_off_loop(self, job_id: str) -> Job | None:
        """``job_model`` for the async API: a read that may wait on a network waits in
        a worker thread, and the loop goes on meanwhile.

        Memory is consulted after the read, and wins. A call the sync facade runs
        inline (``INLINE``) cannot suspend: it reads right there.
        """
        if not self.store.reads_wait or INLINE.get() or job_id in self.registry.jobs:
            return self.job_model(job_id)
        row = await anyio.to_thread.run_sync(self.store.read_job, job_id, self._history_start())
        return self.job_model(job_id, lambda *_: row)

    async def job_models_off_loop(self, query: HistoryQuery = _EVERYTHING) -> list[Job]:
        """``job_models`` for the async API (see ``job_model_off_loop``)."""
        if not self.store.reads_wait or INLINE.get():
            return self.job_models(query)
        released = self.registry.released
        status = None if query.status is None else query.status.value
        rows = await anyio.to_thread.run_sync(self.store.read_jobs, self._history_start(), status)
        if self.registry.released != released:
            # Memory let jobs go meanwhile, perhaps some whose rows came after the
            # read began: they would be in neither. Read again, here (rare).
            return self.job_models(query)
        return self.job_models(query, lambda *_: rows)

    def _merged_history(
        self, status: JobStatus | None, read_jobs: ReadJobs
    ) -> list[JobEntry | tuple[Any, ...]]:
        """Memory's jobs and the stored rows of the others, in the order created.

        Rows come in creation order; a job memory holds stands in for its row. Jobs
        the writer has not reached yet were created after every stored one. With
        ``status``, the store returns only the rows that may match it.
        """
        memory, shared = self.registry.jobs, self.shared is not None
        rows = read_jobs(self._history_start(), None if status is None else status.value)
        items: list[JobEntry | tuple[Any, ...]] = []
        seen: set[str] = set()
        for row in rows:
            live = memory.get(row[0])
            if live is not None:
                seen.add(live.id)
                items.append(live)
            elif row[5] is not None or shared:  # else stale: memory lets go of ended jobs only
                items.append(row)
        items.extend(job for job in memory.values() if job.id not in seen)
        return items

    def _hook(self, job: JobEntry) -> Callable[..., None]:
        """The ``_progress_hook`` for ``job``: posts to its task's progress callback
        and to the progress listeners, through the dispatcher like every event.

        The listeners are looked up on each call, so one added while the job runs
        hears the rest of it; with none and no callback a payload costs a check.
        """
        task = job.task
        if "_progress_hook" not in task.injected:
            return _ignore_progress  # the handler cannot report progress
        callback = task.progress_callback
        watchers = self.progress_listeners
        post = self.dispatcher.post
        snapshot: tuple[Any, Any] | None = None

        keep = self.shared is not None  # a durable store shows it to every process
        saved = -math.inf

        def progress_hook(*args: Any, **payload: Any) -> None:
            nonlocal snapshot, saved
            if keep:
                job.progress = payload
                moment = time.monotonic()
                if moment - saved >= PROGRESS_SAVE_SECONDS:  # stored this often at most
                    saved = moment
                    self.inbox.submit(functools.partial(self.store.save_job, job))
            if callback is not None:
                # Positional arguments are passed on too, as quiv 0.x did.
                post(Delivery(callback, args, payload))
            if watchers:
                if snapshot is None:
                    # Taken while the job runs (its record does not change until it
                    # ends), so a payload never carries the job's final status.
                    snapshot = (task.to_model(), job.to_model())
                for watcher in tuple(watchers):
                    post(Delivery(watcher, (*snapshot, dict(payload))))

        return progress_hook

    def _on_job_end(
        self, job: JobEntry, status: JobStatus, error: str | None, error_type: str | None = None
    ) -> None:
        if job.status is not JobStatus.RUNNING:
            return  # an abandoned thread reporting after shutdown gave up on it
        assert self._pool is not None
        self._pool.release_on_behalf_of(job)
        if job.timed_out:
            status, error, error_type = JobStatus.FAILED, _timed_out(job), "TimeoutError"
        elif job.cut is not None:
            status, error, error_type = JobStatus.CANCELLED, _CUT_REASON[job.cut], None
        self._finish_job(job, status, error, error_type)

    def _finish_job(
        self,
        job: JobEntry,
        status: JobStatus,
        error: str | None,
        error_type: str | None = None,
        *,
        start_next: bool = True,
    ) -> None:
        # Progress still waiting in the inbox goes out before the final event.
        self.dispatcher.drain_inbox()
        registry, task = self.registry, job.task
        now = self.now()
        if status is JobStatus.MISSED and error is None:
            error = missed_reason(task, job.slot, now)
        registry.finish_job(job, status, error, now, error_type)
        self._unwritten += 1
        self.store.save_job(job)
        retrying = False
        if status is JobStatus.FAILED:
            self.logger.error(
                "quiv task %r (job %s) failed: %s: %s", task.name, job.id, error_type, error
            )
            retrying = self._should_retry(job)
            if retrying:
                self._schedule_retry(job, now)
        self._ended(job)
        # The final event goes out before anything this end lets start: _plan
        # and _start_ready below are the only ways a run can start from here.
        self.emit_job(_FINAL_EVENT[status], job)
        if retrying:
            self.emit_job(Event.JOB_RETRYING, job)
        if task.removed:
            pass
        elif task.one_shot and task.consumed and not task.jobs and not task.retries:
            # A durable store keeps the row (no next due time): the task ran, and
            # adding it again with its id (a restart) must not run it again.
            self.remove(task, keep_row=self.shared is not None)
        else:
            self._plan(task, now, ended=True)
            self.store.save_task(task)
        if start_next and self.running and registry.ready:
            # The slot this job held goes straight to the next queued job.
            self._start_ready(now)
        self._wake_by(now.mono + self.config.history_retention_seconds)  # the purge timer
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
