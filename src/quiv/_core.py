"""``AsyncQuiv``: the scheduler, as a task group on the host event loop.

Four tasks live in the group while the scheduler is open:

* the scheduler loop, which sleeps until the earliest due time or a wake-up
  (a call that changed the schedule, a job that ended), turns due tasks into
  jobs and starts as many as the pool allows;
* one task per running job (see ``_runner``);
* the dispatcher, which delivers callbacks in order (see ``_dispatch``);
* the store writer, which persists in batches (see ``_store``).

Every public method is a coroutine whose body never suspends: it validates,
applies one synchronous transition to the in-memory registry, queues the side
effects and wakes the loop. That is what lets the sync facade call the very
same methods from any thread, including this loop's own.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import pickle
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._clock import Clock, SystemClock
from ._config import QuivConfig, resolve_config
from ._dispatch import Delivery, Dispatcher
from ._exceptions import (
    ConfigurationError,
    HandlerNotRegisteredError,
    SchedulerClosedError,
    SchedulerStateError,
    TaskNotScheduledError,
)
from ._models import Event, Job, JobStatus, Task
from ._registry import JobEntry, Registry, TaskEntry
from ._runner import INJECTABLE, handler_traits
from ._schedule import validate_delay, validate_interval
from ._store import Store
from ._types import Handler, Listener, ProgressCallback
from ._workers import Workers

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

__all__ = ["AsyncQuiv"]

if TYPE_CHECKING:
    from typing import TypeAlias

    _AnyLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

_FINAL_EVENT = {
    JobStatus.COMPLETED: Event.JOB_COMPLETED,
    JobStatus.CANCELLED: Event.JOB_CANCELLED,
    JobStatus.FAILED: Event.JOB_FAILED,
}

#: Seconds to wait for handlers that were cut off at shutdown to unwind.
_UNWIND_SECONDS = 1.0


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


class _State(enum.Enum):
    UNOPENED = "unopened"  # tasks may be added; nothing runs yet
    OPEN = "open"  # running
    CLOSING = "closing"  # shutting down: no new work, reads still served
    CLOSED = "closed"  # every call raises SchedulerClosedError


def _ignore_progress(**_payload: Any) -> None:
    """The ``_progress_hook`` of a task that has no progress callback."""


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _pickled(value: object, what: str) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise ConfigurationError(
            f"{what} must be picklable (lambdas, inner functions and open files are not): {exc}"
        ) from exc


class AsyncQuiv:
    """An in-process scheduler that runs on the current event loop.

    Use it as an async context manager, or hand :meth:`serve` to your own task
    group, or pass :meth:`lifespan` to Starlette/FastAPI::

        async with AsyncQuiv() as scheduler:
            task_id = await scheduler.add_task("sync-feeds", sync_feeds, interval=60)

    Async handlers run as tasks on this loop; sync handlers run in worker
    threads. ``pool_size`` bounds how many jobs of both kinds run at once.
    Tasks may be added before the scheduler is entered; they start running
    when it is. Every method must be awaited on the loop that runs the
    scheduler; from another thread use the sync facade :class:`quiv.Quiv`.

    Args:
        config: grouped options; do not combine with explicit ``pool_size``,
            ``history_retention_seconds`` or ``timezone``.
        pool_size: how many jobs may run at once (default 10).
        history_retention_seconds: how long finished jobs are kept (default 24 h).
        timezone: IANA name or ``tzinfo``; only used to display times in logs.
        logger: logger for quiv's own messages; default ``logging.getLogger("Quiv")``.
        main_loop: asyncio loop on which to run listeners and progress callbacks;
            default the loop running the scheduler.
        clock: source of time; default the system clock. Tests may pass a
            :class:`quiv.VirtualClock`.
        shutdown_timeout: seconds that exiting waits for running jobs to honour
            their stop event before abandoning them (default 30).

    Raises:
        ConfigurationError: if an option is invalid.
        InvalidTimezoneError: if ``timezone`` is unknown.
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
    ) -> None:
        self._config = resolve_config(config, pool_size, history_retention_seconds, timezone)
        if logger is not None and not isinstance(logger, logging.Logger | logging.LoggerAdapter):
            raise ConfigurationError(f"logger must be a logging.Logger, got {logger!r}")
        if main_loop is not None and not isinstance(main_loop, asyncio.AbstractEventLoop):
            raise ConfigurationError(f"main_loop must be an asyncio event loop, got {main_loop!r}")
        if (
            isinstance(shutdown_timeout, bool)
            or not isinstance(shutdown_timeout, int | float)
            or not shutdown_timeout >= 0
        ):
            raise ConfigurationError(
                f"shutdown_timeout must be a number of seconds >= 0, got {shutdown_timeout!r}"
            )
        self._logger: _AnyLogger = logger if logger is not None else logging.getLogger("Quiv")
        self._main_loop = main_loop
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._shutdown_timeout = float(shutdown_timeout)
        self._registry = Registry()
        self._listeners: dict[Event, list[Listener]] = {event: [] for event in Event}
        self._dispatcher = Dispatcher(self._logger)
        self._store = Store(self._logger)
        self._state = _State.UNOPENED
        self._task_group: TaskGroup | None = None
        self._loop_scope: anyio.CancelScope | None = None
        self._wakeup: anyio.Event | None = None
        self._idle: anyio.Event | None = None
        self._services_done: list[anyio.Event] = []
        self._pool: anyio.CapacityLimiter | None = None
        self._workers: Workers | None = None
        self._late = _LateStarts(self._logger)
        self._last_tick = -math.inf
        self._sleeping_until = -math.inf  # the loop's wake-up deadline while it sleeps

    # -- lifecycle ----------------------------------------------------------

    @property
    def config(self) -> QuivConfig:
        """The options this scheduler runs with."""
        return self._config

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            if self._state is _State.OPEN:
                raise SchedulerStateError("this scheduler is already running")
            raise SchedulerClosedError()
        self._pool = anyio.CapacityLimiter(self._config.pool_size)
        self._dispatcher.bind(asyncio.get_running_loop(), self._main_loop)
        self._store.start()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._workers = Workers(
            task_group, self._config.pool_size, self._on_job_end, self._progress_hook
        )
        self._state = _State.OPEN
        task_group.start_soon(self._service, self._dispatcher.run, name="quiv-dispatcher")
        task_group.start_soon(self._service, self._store.run, name="quiv-store-writer")
        self._loop_scope = anyio.CancelScope()
        task_group.start_soon(self._scheduler_loop, name="quiv-scheduler")
        self._logger.debug("quiv scheduler started (pool_size=%d)", self._config.pool_size)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        if task_group is None or self._state is not _State.OPEN:
            return None
        try:
            with anyio.CancelScope(shield=True):  # a host cancellation must not skip clean-up
                await self._close()
        finally:
            self._state = _State.CLOSED
            result = await task_group.__aexit__(exc_type, exc, traceback)
            self._task_group = None
        self._logger.debug("quiv scheduler stopped")
        return result

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the scheduler until cancelled; for apps that own a task group.

        ``await task_group.start(scheduler.serve)`` returns once the scheduler
        accepts calls; cancelling the group shuts it down gracefully.
        """
        async with self:
            task_status.started()
            await anyio.sleep_forever()

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """Run the scheduler for the life of a Starlette/FastAPI app.

        Pass it as it is: ``FastAPI(lifespan=scheduler.lifespan)``.
        """
        async with self:
            yield

    def _adopt_main_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver callbacks on ``loop`` unless a main loop was given explicitly."""
        if self._main_loop is None:
            self._main_loop = loop

    def _close_unopened(self) -> None:
        """Shut down a scheduler that never started: there is nothing to stop."""
        if self._state is _State.UNOPENED:
            self._state = _State.CLOSED

    async def _service(self, run: Callable[[], Any]) -> None:
        done = anyio.Event()
        self._services_done.append(done)
        try:
            await run()
        finally:
            done.set()

    async def _close(self) -> None:
        self._state = _State.CLOSING
        assert self._loop_scope is not None
        self._loop_scope.cancel()
        registry = self._registry
        for job in list(registry.ready):
            registry.discard_queued(job)
            self._finish_job(job, JobStatus.CANCELLED, "the scheduler shut down before it started")
        for job in registry.running.values():
            job.request_stop()
        if registry.running:
            self._idle = anyio.Event()
            with anyio.move_on_after(self._shutdown_timeout):
                await self._idle.wait()
            if registry.running:
                self._logger.warning(
                    "quiv shutdown: %d job(s) ignored their stop event for %.1fs and were "
                    "abandoned: %s",
                    len(registry.running),
                    self._shutdown_timeout,
                    ", ".join(f"{j.task.name!r} (job {j.id})" for j in registry.running.values()),
                )
                assert self._workers is not None
                self._workers.abandon()  # async handlers are cancelled and unwind
                with anyio.move_on_after(_UNWIND_SECONDS):
                    await self._idle.wait()
                for job in list(registry.running.values()):  # threads cannot be stopped
                    self._on_job_end(
                        job, JobStatus.CANCELLED, "abandoned at shutdown: it ignored its stop event"
                    )
        if self._workers is not None:
            self._workers.close()
        self._late.report(self._clock.monotonic())
        self._dispatcher.close()
        self._store.close()
        with anyio.move_on_after(max(self._shutdown_timeout, _UNWIND_SECONDS)):
            for done in self._services_done:
                await done.wait()
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()  # whatever still hangs on, ends now

    # -- the scheduler loop --------------------------------------------------

    def _wake_by(self, when: float) -> None:
        """Make sure the scheduler loop is awake by monotonic time ``when``."""
        if when < self._sleeping_until and self._wakeup is not None:
            self._wakeup.set()

    async def _scheduler_loop(self) -> None:
        assert self._loop_scope is not None
        with self._loop_scope:
            while self._state is _State.OPEN:
                deadline = self._tick()
                self._wakeup = anyio.Event()
                self._sleeping_until = math.inf if deadline is None else deadline
                await self._clock.wait(self._wakeup, deadline)
                self._sleeping_until = -math.inf  # awake: every change is seen by _tick

    def _tick(self) -> float | None:
        """Turn due tasks into jobs, start what the pool allows, purge old history.

        Returns the monotonic time at which there will be more to do, if any.
        """
        registry, clock = self._registry, self._clock
        now, wall = clock.monotonic(), clock.now()
        self._last_tick, previous_tick = now, self._last_tick
        for due, task in registry.pop_due(now):
            job = registry.create_job(task, str(uuid.uuid4()), due, wall)
            self._store.save_job(job)
        self._start_ready(now, wall, waited_if_due_by=previous_tick)
        deadline = registry.next_due()
        oldest = registry.oldest_finished_end()
        if oldest is not None:
            keep = self._config.history_retention_seconds
            if oldest + keep <= now:
                purged = registry.purge_finished(now - keep)
                self._store.purge_jobs(wall - timedelta(seconds=keep))
                self._logger.debug("quiv purged %d finished job(s) from history", purged)
                oldest = registry.oldest_finished_end()
            if oldest is not None:
                deadline = oldest + keep if deadline is None else min(deadline, oldest + keep)
        return deadline

    def _start_ready(self, now: float, wall: datetime, waited_if_due_by: float) -> None:
        """Start queued jobs while the pool has free slots.

        A job due by ``waited_if_due_by`` had to wait for its slot and counts as late.
        """
        registry, pool, workers = self._registry, self._pool, self._workers
        assert pool is not None and workers is not None
        ready = registry.ready
        while ready:
            job = ready[0]
            try:
                pool.acquire_on_behalf_of_nowait(job)
            except anyio.WouldBlock:
                return
            ready.popleft()
            registry.start_job(job, now, wall)
            if job.due <= waited_if_due_by:
                self._late.record(job, now - job.due, now)
            self._store.save_job(job)
            self._emit_job(Event.JOB_STARTED, job)
            workers.submit(job)

    def _on_job_end(self, job: JobEntry, status: JobStatus, error: str | None) -> None:
        if job.status is not JobStatus.RUNNING:
            return  # an abandoned thread reporting after shutdown gave up on it
        assert self._pool is not None
        self._pool.release_on_behalf_of(job)
        self._finish_job(job, status, error)

    def _progress_hook(self, job: JobEntry) -> Callable[..., None]:
        callback = job.task.progress_callback
        if callback is None:
            return _ignore_progress
        post = self._dispatcher.post

        def progress_hook(**payload: Any) -> None:
            post(Delivery(callback, (), payload))

        return progress_hook

    def _finish_job(self, job: JobEntry, status: JobStatus, error: str | None) -> None:
        # Progress still waiting in the inbox goes out before the final event.
        self._dispatcher.drain_inbox()
        registry, task = self._registry, job.task
        now, wall = self._clock.monotonic(), self._clock.now()
        following = registry.finish_job(job, status, error, now, wall)
        if following is not None:
            due, on_cadence = following
            registry.schedule(task, due, wall + timedelta(seconds=due - now), on_cadence=on_cadence)
            self._wake_by(due)
        self._store.save_job(job)
        if error is not None and status is JobStatus.FAILED:
            self._logger.error("quiv task %r (job %s) failed: %s", task.name, job.id, error)
        self._emit_job(_FINAL_EVENT[status], job)
        if task.run_once and not task.removed:
            registry.remove_task(task)
            self._store.delete_task(task.id)
            self._emit_task(Event.TASK_REMOVED, task)
        elif not task.removed:
            self._store.save_task(task)
        if self._state is _State.OPEN and registry.ready:
            # The slot this job held goes straight to the next queued job.
            self._start_ready(now, wall, waited_if_due_by=math.inf)
        self._wake_by(now + self._config.history_retention_seconds)  # the purge timer
        if self._idle is not None and not registry.running:
            self._idle.set()

    # -- events -------------------------------------------------------------

    def _emit_task(self, event: Event, task: TaskEntry) -> None:
        listeners = self._listeners[event]
        if listeners:
            model = task.to_model()
            self._dispatcher.post_many(Delivery(cb, (event, model)) for cb in listeners)

    def _emit_job(self, event: Event, job: JobEntry) -> None:
        listeners = self._listeners[event]
        if listeners:
            task_model, job_model = job.task.to_model(), job.to_model()
            self._dispatcher.post_many(
                Delivery(cb, (event, task_model, job_model)) for cb in listeners
            )

    # -- state checks -------------------------------------------------------

    def _check_usable(self) -> None:
        if self._state is _State.CLOSED:
            raise SchedulerClosedError()

    def _check_accepting(self) -> None:
        if self._state is _State.CLOSED:
            raise SchedulerClosedError()
        if self._state is _State.CLOSING:
            raise SchedulerStateError("the scheduler is shutting down and accepts no new work")

    def _format(self, when: datetime) -> str:
        return when.astimezone(self._config.tz).isoformat(timespec="milliseconds")

    # -- the public API -----------------------------------------------------

    async def add_task(
        self,
        task_name: str,
        func: Handler,
        interval: float,
        delay: float = 0,
        run_once: bool = False,
        fixed_interval: bool = True,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        progress_callback: ProgressCallback | None = None,
    ) -> str:
        """Schedule ``func`` and return the new task's id (a UUID string).

        Args:
            task_name: display label; need not be unique.
            func: the handler, sync or async. It receives ``args``/``kwargs``
                plus whichever of ``_job_id``, ``_stop_event`` and
                ``_progress_hook`` it declares (or all, if it takes ``**kwargs``).
            interval: seconds between runs, > 0.
            delay: seconds until the first run, >= 0.
            run_once: run once, then remove the task.
            fixed_interval: keep the cadence anchored on the first run's start
                (``True``), or wait ``interval`` after each run ends (``False``).
            args: positional arguments; must be a picklable tuple.
            kwargs: keyword arguments; must be a picklable dict with str keys.
            progress_callback: called with each ``_progress_hook(**payload)``,
                on the main loop; may be async.

        Raises:
            ConfigurationError: for any invalid argument; nothing is scheduled.
            SchedulerClosedError: after shutdown.
        """
        self._check_accepting()
        if not isinstance(task_name, str) or not task_name.strip():
            raise ConfigurationError(f"task_name must be a non-empty string, got {task_name!r}")
        if not callable(func):
            raise ConfigurationError(f"func must be callable, got {func!r}")
        seconds = validate_interval(interval)
        wait = validate_delay(delay)
        if not isinstance(run_once, bool):
            raise ConfigurationError(f"run_once must be a bool, got {run_once!r}")
        if not isinstance(fixed_interval, bool):
            raise ConfigurationError(f"fixed_interval must be a bool, got {fixed_interval!r}")
        if args is not None and not isinstance(args, tuple):
            raise ConfigurationError(f"args must be a tuple or None, got {type(args).__name__}")
        if kwargs is not None:
            if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise ConfigurationError("kwargs must be a dict with str keys, or None")
            clash = sorted(INJECTABLE.intersection(kwargs))
            if clash:
                raise ConfigurationError(
                    f"kwargs may not set {', '.join(clash)}: quiv injects those names itself"
                )
        if progress_callback is not None and not callable(progress_callback):
            raise ConfigurationError(
                f"progress_callback must be callable, got {progress_callback!r}"
            )
        is_async, injected = handler_traits(func)
        now, wall = self._clock.monotonic(), self._clock.now()
        task = TaskEntry(
            id=str(uuid.uuid4()),
            name=task_name,
            func=func,
            is_async=is_async,
            injected=injected,
            args_blob=_pickled(args or (), "args"),
            kwargs_blob=_pickled(kwargs or {}, "kwargs"),
            interval=seconds,
            fixed=fixed_interval,
            run_once=run_once,
            progress_callback=progress_callback,
            next_run_at=wall,
        )
        registry = self._registry
        registry.tasks[task.id] = task
        registry.schedule(task, now + wait, wall + timedelta(seconds=wait), on_cadence=True)
        self._store.save_task(task)
        if self._logger.isEnabledFor(logging.INFO):
            self._logger.info(
                "quiv task %r (%s) added; first run at %s",
                task_name,
                task.id,
                self._format(task.next_run_at),
            )
        self._emit_task(Event.TASK_ADDED, task)
        self._wake_by(now + wait)
        return task.id

    async def run_task_immediately(self, task_id: str) -> int:
        """Run a task now, off its cadence; return how many runs were queued (1).

        If the task is running, the extra run starts as soon as the current one
        ends (a task never runs twice at once). A paused task runs once and
        stays paused.

        Raises:
            HandlerNotRegisteredError: if no task has this id.
            TaskNotScheduledError: if it is a run-once task whose run has started.
            SchedulerClosedError: after shutdown.
        """
        self._check_accepting()
        task = self._registry.tasks.get(_check_id(task_id, "task_id"))
        if task is None:
            raise HandlerNotRegisteredError(task_id)
        if task.consumed:
            raise TaskNotScheduledError(task_id)
        if task.job is not None:
            if task.job.status is JobStatus.RUNNING:
                task.rerun = True
            return 1
        now, wall = self._clock.monotonic(), self._clock.now()
        self._registry.schedule(task, now, wall, on_cadence=False)
        self._store.save_task(task)
        self._wake_by(now)
        return 1

    async def pause_task(self, task_id: str) -> None:
        """Stop future runs of a task until :meth:`resume_task`.

        A run in progress continues; a run waiting for a pool slot is cancelled.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        task = self._registry.task(_check_id(task_id, "task_id"))
        if task.paused:
            return
        task.paused = True
        task.resume_at = None
        task.rerun = False
        self._registry.unschedule(task)
        if task.job is not None and task.job.status is JobStatus.SCHEDULED:
            self._cancel_queued(task.job, "its task was paused before it started")
        self._store.save_task(task)
        self._logger.info("quiv task %r (%s) paused", task.name, task.id)
        self._emit_task(Event.TASK_PAUSED, task)

    async def resume_task(self, task_id: str, delay: int = 0) -> None:
        """Re-activate a task; its next run is due ``delay`` seconds from now.

        With ``delay=0`` it runs at once (or, if a run is in progress, as soon as
        that run ends). The fixed cadence re-anchors on this run.

        Raises:
            TaskNotFoundError: if no task has this id.
            ConfigurationError: if ``delay`` is negative or not a finite number.
        """
        self._check_accepting()
        task = self._registry.task(_check_id(task_id, "task_id"))
        wait = validate_delay(delay)
        if task.consumed:
            raise TaskNotScheduledError(task_id)
        now, wall = self._clock.monotonic(), self._clock.now()
        task.paused = False
        task.anchor = None
        if task.job is not None:
            task.resume_at = now + wait
            task.snapshot = None
            if task.job.status is JobStatus.SCHEDULED:
                task.resume_at = None  # already queued to run
        else:
            self._registry.schedule(
                task, now + wait, wall + timedelta(seconds=wait), on_cadence=True
            )
        self._store.save_task(task)
        self._logger.info("quiv task %r (%s) resumed", task.name, task.id)
        self._emit_task(Event.TASK_RESUMED, task)
        self._wake_by(now + wait)

    async def cancel_job(self, job_id: str) -> bool:
        """Ask a job to stop by setting its ``_stop_event``.

        Cancellation is cooperative: the handler should check the event and
        return; the job then ends ``cancelled``. A job still waiting for a pool
        slot is cancelled at once.

        Returns:
            True if the job is scheduled or running (its stop event is now set),
            False if it has already ended or is unknown.
        """
        self._check_usable()
        job = self._registry.jobs.get(_check_id(job_id, "job_id"))
        if job is None or job.status.is_final:
            return False
        if job.status is JobStatus.SCHEDULED:
            self._cancel_queued(job, "cancelled before it started")
        job.request_stop()
        return True

    async def remove_task(self, task_id: str) -> None:
        """Remove a task. A running job of it has its stop event set and ends on its own.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        registry = self._registry
        task = registry.task(_check_id(task_id, "task_id"))
        registry.remove_task(task)
        job = task.job
        if job is not None:
            if job.status is JobStatus.SCHEDULED:
                self._cancel_queued(job, "its task was removed before it started")
            else:
                job.request_stop()
        self._store.delete_task(task.id)
        self._logger.info("quiv task %r (%s) removed", task.name, task.id)
        self._emit_task(Event.TASK_REMOVED, task)

    def _cancel_queued(self, job: JobEntry, reason: str) -> None:
        job.request_stop()
        self._registry.discard_queued(job)
        self._finish_job(job, JobStatus.CANCELLED, reason)

    async def get_task(self, task_id: str) -> Task:
        """Return a snapshot of one task.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        return self._registry.task(_check_id(task_id, "task_id")).to_model()

    async def get_job(self, job_id: str) -> Job:
        """Return a snapshot of one job, live or within the retention window.

        Raises:
            JobNotFoundError: if no job has this id.
        """
        self._check_usable()
        return self._registry.job(_check_id(job_id, "job_id")).to_model()

    async def get_all_tasks(self, include_run_once: bool = False) -> list[Task]:
        """Return every task in the order added; run-once tasks only if asked."""
        self._check_usable()
        return [
            task.to_model()
            for task in self._registry.tasks.values()
            if include_run_once or not task.run_once
        ]

    async def get_all_jobs(self, status: str | None = None) -> list[Job]:
        """Return every job in history in the order created, optionally of one status.

        Raises:
            ConfigurationError: if ``status`` is not a job status.
        """
        self._check_usable()
        jobs = self._registry.jobs.values()
        if status is None:
            return [job.to_model() for job in jobs]
        try:
            wanted = JobStatus(status)
        except ValueError:
            raise ConfigurationError(
                f"status must be one of {', '.join(s.value for s in JobStatus)}, got {status!r}"
            ) from None
        return [job.to_model() for job in jobs if job.status is wanted]

    async def add_listener(self, event: Event, callback: Listener) -> None:
        """Call ``callback`` on every ``event``; sync or async, on the main loop.

        ``TASK_*`` listeners get ``(event, task)``; ``JOB_*`` listeners get
        ``(event, task, job)``. A listener that raises is logged and ignored.

        Raises:
            ConfigurationError: if ``event`` is not an ``Event`` or ``callback``
                is not callable.
        """
        self._check_usable()
        if not isinstance(event, Event):
            raise ConfigurationError(f"event must be a quiv.Event member, got {event!r}")
        if not callable(callback):
            raise ConfigurationError(f"callback must be callable, got {callback!r}")
        self._listeners[event].append(callback)

    async def remove_listener(self, event: Event, callback: Listener) -> None:
        """Forget one registration of ``callback`` for ``event``; unknown ones are ignored.

        Raises:
            ConfigurationError: if ``event`` is not an ``Event``.
        """
        self._check_usable()
        if not isinstance(event, Event):
            raise ConfigurationError(f"event must be a quiv.Event member, got {event!r}")
        listeners = self._listeners[event]
        if callback in listeners:
            listeners.remove(callback)
