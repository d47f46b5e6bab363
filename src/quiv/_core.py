"""``AsyncQuiv``: the scheduler, as a task group on the host event loop.

This module is the public surface: options, the lifecycle (``async with``,
:meth:`AsyncQuiv.serve`, :meth:`AsyncQuiv.lifespan`) and the methods. Each
method validates its arguments, then applies one synchronous transition of the
engine (see ``_engine``), which owns everything that moves.

The methods are coroutines whose bodies never suspend. That is what lets the
sync facade call the very same methods from any thread, the loop's own
included (see ``_sync``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._clock import Clock, SystemClock
from ._config import QuivConfig, resolve_config
from ._engine import Engine
from ._exceptions import (
    ConfigurationError,
    HandlerNotRegisteredError,
    JobNotFoundError,
    SchedulerClosedError,
    SchedulerStateError,
    TaskNotScheduledError,
)
from ._models import Event, Job, JobStatus, Task
from ._schedule import validate_delay
from ._store import Store
from ._triggers import RunPolicy, Trigger, choose_trigger, task_zone
from ._types import UNSET, Handler, Listener, ProgressCallback, Unset
from ._validation import (
    check_args,
    check_id,
    check_kwargs,
    check_name,
    check_progress_callback,
    new_task_entry,
    timed,
)

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

if TYPE_CHECKING:
    from typing import TypeAlias

    _AnyLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = ["AsyncQuiv"]


class _State(enum.Enum):
    UNOPENED = "unopened"  # tasks may be added; nothing runs yet
    OPEN = "open"  # running
    CLOSING = "closing"  # shutting down: no new work, reads still served
    CLOSED = "closed"  # every call raises SchedulerClosedError


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
        timezone: IANA name or ``tzinfo``: the zone of cron expressions and naive
            ``run_at`` times that name none, and of times in logs.
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
        try:
            grace = (
                float(shutdown_timeout)
                if isinstance(shutdown_timeout, int | float)
                and not isinstance(shutdown_timeout, bool)
                else math.nan
            )
        except OverflowError:  # an int beyond float's range: wait as long as it takes
            grace = math.inf
        if not grace >= 0:
            raise ConfigurationError(
                f"shutdown_timeout must be a number of seconds >= 0, got {shutdown_timeout!r}"
            )
        self._logger: _AnyLogger = logger if logger is not None else logging.getLogger("Quiv")
        self._main_loop = main_loop
        self._shutdown_timeout = grace
        self._engine = Engine(
            self._config, clock if clock is not None else SystemClock(), self._logger
        )
        if main_loop is not None:
            self._engine.dispatcher.deliver_early_on(main_loop)
        self._state = _State.UNOPENED
        self._task_group: TaskGroup | None = None
        self._loop_thread: int | None = None  # set while open: calls must come from it

    # -- lifecycle ----------------------------------------------------------

    @property
    def config(self) -> QuivConfig:
        """The options this scheduler runs with."""
        return self._config

    @property
    def _store(self) -> Store:
        """The write-behind store (for tests: ``path``, ``flush()``, ``read_rows()``)."""
        return self._engine.store

    async def __aenter__(self) -> Self:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio, or another library anyio runs on
            raise SchedulerStateError(
                "quiv runs on asyncio only (its database layer, aiosqlite and SQLAlchemy's "
                "asyncio engine, needs it); run it with asyncio, e.g. anyio.run(main, "
                'backend="asyncio"), or use quiv.Quiv, which runs its own asyncio loop'
            ) from None
        if self._state is not _State.UNOPENED:
            if self._state is _State.OPEN:
                raise SchedulerStateError("this scheduler is already running")
            raise SchedulerClosedError()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await task_group.start(self._engine.run, self._main_loop)
        except BaseException:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
            raise
        self._task_group = task_group
        self._loop_thread = threading.get_ident()
        self._state = _State.OPEN
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
        self._state = _State.CLOSING
        try:
            with anyio.CancelScope(shield=True):  # a host cancellation must not skip clean-up
                await self._engine.stop(self._shutdown_timeout)
        finally:
            self._state = _State.CLOSED
            self._task_group = None
            self._loop_thread = None
            # The body's own exception is not the group's business: it propagates as
            # it is (an ``except ValueError`` around the block still catches it).
            await task_group.__aexit__(None, None, None)
        self._logger.debug("quiv scheduler stopped")
        return None

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

    # -- state checks -------------------------------------------------------

    def _check_usable(self) -> None:
        if self._state is _State.CLOSED:
            raise SchedulerClosedError()
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            # The registry belongs to the loop; touching it from elsewhere would race.
            raise SchedulerStateError(
                "AsyncQuiv methods must be awaited on the event loop that runs the scheduler; "
                "from another thread use quiv.Quiv, or anyio.from_thread.run(...) in a worker "
                "thread of that loop"
            )

    def _check_accepting(self) -> None:
        self._check_usable()
        if self._state is _State.CLOSING:
            raise SchedulerStateError("the scheduler is shutting down and accepts no new work")

    def _format(self, when: datetime) -> str:
        try:
            return when.astimezone(self._config.tz).isoformat(timespec="milliseconds")
        except Exception:  # a tzinfo that passed its check yet fails on this date
            return when.isoformat(timespec="milliseconds")

    # -- the public API -----------------------------------------------------

    async def add_task(
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
    ) -> str:
        """Schedule ``func`` and return the new task's id (a UUID string).

        Say when it runs with exactly one of ``interval``, ``cron``, ``run_at``
        or ``trigger`` (see the scheduling guide for the rules of each).

        Args:
            task_name: display label; need not be unique.
            func: the handler, sync or async. It receives ``args``/``kwargs``
                plus whichever of ``_job_id``, ``_stop_event`` and
                ``_progress_hook`` it declares (or all, if it takes ``**kwargs``).
            interval: seconds between runs, > 0, on the monotonic clock.
            delay: seconds until the first run at the earliest, >= 0.
            run_once: run once, then remove the task.
            fixed_interval: keep the cadence anchored on the first run's start
                (``True``), or wait ``interval`` after each run ends (``False``).
            args: positional arguments; must be a picklable tuple.
            kwargs: keyword arguments; must be a picklable dict with str keys.
            progress_callback: called with each ``_progress_hook(**payload)``,
                on the main loop; may be async.
            cron: a cron expression (5 fields, or 6 with seconds first, or an
                ``@daily``-style shorthand), read on the wall clock of ``timezone``.
            run_at: one run at this instant (a naive datetime is read in
                ``timezone``); one already past runs at once. The task is then
                removed, as with ``run_once``.
            trigger: a :class:`quiv.Every`, :class:`quiv.Cron` or :class:`quiv.At`.
            timezone: IANA name or ``tzinfo`` for this task's wall-clock rules;
                default the scheduler's ``timezone``.
            jitter: each run starts up to this many seconds later, at random;
                the cadence itself does not move.
            misfire_grace: a run that cannot start within this many seconds of
                its due time is not run but recorded ``missed``; ``None`` (the
                default) runs late runs however late.
            coalesce: when several runs are overdue at once, run one for all of
                them (``True``) or each of them (``False``).
            max_instances: how many jobs of the task may run at once.

        Raises:
            ConfigurationError: for any invalid argument, or unless exactly one
                of ``interval``, ``cron``, ``run_at`` and ``trigger`` is given;
                nothing is scheduled.
            InvalidTimezoneError: if ``timezone`` is unknown.
            SchedulerClosedError: after shutdown.
        """
        self._check_accepting()
        engine = self._engine
        task, wait = new_task_entry(
            task_name,
            func,
            interval,
            delay,
            run_once,
            fixed_interval,
            args,
            kwargs,
            progress_callback,
            cron=cron,
            run_at=run_at,
            timezone=timezone,
            trigger=trigger,
            policy=RunPolicy(jitter, misfire_grace, coalesce, max_instances),
            default_zone=self._config.tz,
            wall=engine.clock.now(),
        )
        first_run = engine.add(task, wait)
        if self._logger.isEnabledFor(logging.INFO):
            self._logger.info(
                "quiv task %r (%s) added; first run at %s",
                task.name,
                task.id,
                self._format(first_run),
            )
        return task.id

    async def update_task(
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
    ) -> Task:
        """Change a task in place, keeping its id and its job history; return it.

        Only the arguments given change. At most one of ``interval``, ``cron``,
        ``run_at`` and ``trigger`` may be given; a new one (or a new
        ``timezone``) plans the next run afresh from now, so ``next_run_at``
        changes at once. A job that is running (or waiting for a pool slot) is
        not touched: it runs to its end with what it started with. ``interval``
        keeps the task's ``fixed_interval``.

        Raises:
            TaskNotFoundError: if no task has this id.
            ConfigurationError: for any invalid argument; nothing changes.
            InvalidTimezoneError: if ``timezone`` is unknown.
        """
        self._check_accepting()
        engine = self._engine
        task = engine.registry.task(check_id(task_id, "task_id"))
        given = {
            name: value
            for name, value in (
                ("interval", interval),
                ("cron", cron),
                ("run_at", run_at),
                ("trigger", trigger),
            )
            if value is not UNSET
        }
        # Validate everything before changing anything.
        name = task.name if task_name is UNSET else check_name(task_name)
        new_trigger = task.given
        if given:
            new_trigger = choose_trigger(
                given.get("interval"),
                task.fixed_interval,
                given.get("cron"),
                given.get("run_at"),
                given.get("trigger"),
            )
        zone = task.zone if timezone is UNSET else task_zone(timezone)
        retimed = bool(given) or timezone is not UNSET
        timing = timed(new_trigger, zone, self._config.tz) if retimed else None
        args_pair = None if args is UNSET else check_args(args)
        kwargs_pair = None if kwargs is UNSET else check_kwargs(kwargs)
        if progress_callback is not UNSET:
            check_progress_callback(progress_callback)
        old = task.policy
        policy = RunPolicy(
            old.jitter if jitter is UNSET else jitter,
            old.misfire_grace if misfire_grace is UNSET else misfire_grace,
            old.coalesce if coalesce is UNSET else coalesce,
            old.max_instances if max_instances is UNSET else max_instances,
        )
        # Apply.
        task.name = name
        task.policy = policy
        if args_pair is not None:
            task.args_blob, task.args_copy = args_pair
        if kwargs_pair is not None:
            task.kwargs_blob, task.kwargs_copy = kwargs_pair
        if not isinstance(progress_callback, Unset):
            task.progress_callback = progress_callback
        if timing is not None:
            was_wall_clock = task.trigger.wall_clock
            task.given, task.zone = new_trigger, zone
            task.trigger, task.timeline, task.display_zone = timing
            fixed = getattr(task.trigger, "fixed", None)
            if isinstance(fixed, bool):
                task.fixed_interval = fixed
            engine.retimed(task, was_wall_clock)
        engine.update(task, retimed)
        self._logger.info("quiv task %r (%s) updated", task.name, task.id)
        return task.to_model()

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
        task = self._engine.registry.tasks.get(check_id(task_id, "task_id"))
        if task is None:
            raise HandlerNotRegisteredError(task_id)
        if task.consumed:
            raise TaskNotScheduledError(task_id)
        self._engine.run_now(task)
        return 1

    async def pause_task(self, task_id: str) -> None:
        """Stop future runs of a task until :meth:`resume_task`.

        A run in progress continues; a run waiting for a pool slot is cancelled.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        task = self._engine.registry.task(check_id(task_id, "task_id"))
        if self._engine.pause(task):
            self._logger.info("quiv task %r (%s) paused", task.name, task.id)

    async def resume_task(self, task_id: str, delay: float = 0) -> None:
        """Re-activate a task; its next run is due ``delay`` seconds from now.

        With ``delay=0`` it runs at once (or, if a run is in progress, as soon as
        that run ends). The fixed cadence re-anchors on this run.

        Raises:
            TaskNotFoundError: if no task has this id.
            ConfigurationError: if ``delay`` is negative or not a finite number.
        """
        self._check_accepting()
        task = self._engine.registry.task(check_id(task_id, "task_id"))
        wait = validate_delay(delay)
        if task.consumed:
            raise TaskNotScheduledError(task_id)
        self._engine.resume(task, wait)
        self._logger.info("quiv task %r (%s) resumed", task.name, task.id)

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
        job = self._engine.registry.jobs.get(check_id(job_id, "job_id"))
        return job is not None and self._engine.cancel(job)

    async def remove_task(self, task_id: str) -> None:
        """Remove a task. A running job of it has its stop event set and ends on its own.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        task = self._engine.registry.task(check_id(task_id, "task_id"))
        self._engine.remove(task)
        self._logger.info("quiv task %r (%s) removed", task.name, task.id)

    async def get_task(self, task_id: str) -> Task:
        """Return a snapshot of one task.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        return self._engine.registry.task(check_id(task_id, "task_id")).to_model()

    async def get_job(self, job_id: str) -> Job:
        """Return a snapshot of one job, live or within the retention window.

        Raises:
            JobNotFoundError: if no job has this id.
        """
        self._check_usable()
        job = self._engine.job_model(check_id(job_id, "job_id"))
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    async def get_all_tasks(self, include_run_once: bool = False) -> list[Task]:
        """Return every task in the order added; run-once tasks only if asked."""
        self._check_usable()
        return [
            task.to_model()
            for task in self._engine.registry.tasks.values()
            if include_run_once or not task.one_shot
        ]

    async def get_all_jobs(self, status: str | None = None) -> list[Job]:
        """Return every job in history in the order created, optionally of one status.

        Raises:
            ConfigurationError: if ``status`` is not a job status.
        """
        self._check_usable()
        if status is None:
            return self._engine.job_models()
        try:
            wanted = JobStatus(status)
        except ValueError:
            raise ConfigurationError(
                f"status must be one of {', '.join(s.value for s in JobStatus)}, got {status!r}"
            ) from None
        return self._engine.job_models(wanted)

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
        self._engine.listeners[event].append(callback)

    async def remove_listener(self, event: Event, callback: Listener) -> None:
        """Forget one registration of ``callback`` for ``event``; unknown ones are ignored.

        Raises:
            ConfigurationError: if ``event`` is not an ``Event``.
        """
        self._check_usable()
        if not isinstance(event, Event):
            raise ConfigurationError(f"event must be a quiv.Event member, got {event!r}")
        listeners = self._engine.listeners[event]
        if callback in listeners:
            listeners.remove(callback)
