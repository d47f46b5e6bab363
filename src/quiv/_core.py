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
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ._clock import Clock, SystemClock
from ._config import QuivConfig, resolve_config
from ._engine import LAG_WINDOW, Engine, Waiter
from ._exceptions import (
    ConfigurationError,
    HandlerNotRegisteredError,
    JobNotFoundError,
    QuivError,
    SchedulerClosedError,
    SchedulerStateError,
    TaskNotFoundError,
    TaskNotScheduledError,
)
from ._history import HistoryQuery
from ._jobpolicy import JobPolicy, job_policy_of, validate_cancel_grace, validate_seconds
from ._models import Event, Job, Stats, Task
from ._models import TaskStatus as _TaskStatus
from ._portable import portable
from ._registry import TaskEntry
from ._runner import current_job_id
from ._schedule import validate_delay
from ._store import Store
from ._stores import store_options
from ._triggers import RunPolicy, Trigger, choose_trigger, task_zone
from ._types import UNSET, Handler, Listener, ProgressCallback, ProgressListener, Unset
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
    _Watch: TypeAlias = Callable[[str, Waiter], Coroutine[Any, Any, "Job | None"]]

__all__ = ["AsyncQuiv"]

T = TypeVar("T")
#: What a call changes, applied on the loop (at once there, or queued from a thread).
_Effect = Callable[[], None]


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values; ``None`` if there are none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _shutdown_grace(value: object, what: str) -> float:
    """Seconds to wait for running jobs at shutdown; a huge int waits for ever."""
    try:
        grace = (
            float(value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else math.nan
        )
    except OverflowError:  # an int beyond float's range: wait as long as it takes
        grace = math.inf
    if not grace >= 0:
        raise ConfigurationError(f"{what} must be a number of seconds >= 0, got {value!r}")
    return grace


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
        cancel_grace: seconds a timed-out async handler gets to honour its stop
            event before it is cancelled (default 1).
        store: ``None`` (the default) keeps the schedule and history in a private
            temporary database, deleted at shutdown. ``"sqlite:///path/to/quiv.db"``
            makes them durable and shared by every process that opens the same
            file: each due run is then executed once across them (see
            "Running several processes").
        serializer: how a durable store keeps ``args``/``kwargs``: ``"json"``
            (the default), or ``"pickle"``, which trusts everyone who can write
            to the database.
        lease_seconds: with a durable store, how long a running job's lease
            lasts without renewal before another process records it abandoned.
        lease_renewal: seconds between renewals of this process's leases.

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
        cancel_grace: float = 1.0,
        store: str | None = None,
        serializer: str = "json",
        lease_seconds: float = 30.0,
        lease_renewal: float = 10.0,
    ) -> None:
        self._config = resolve_config(config, pool_size, history_retention_seconds, timezone)
        self._store_options = store_options(store, serializer, lease_seconds, lease_renewal)
        if logger is not None and not isinstance(logger, logging.Logger | logging.LoggerAdapter):
            raise ConfigurationError(f"logger must be a logging.Logger, got {logger!r}")
        if main_loop is not None and not isinstance(main_loop, asyncio.AbstractEventLoop):
            raise ConfigurationError(f"main_loop must be an asyncio event loop, got {main_loop!r}")
        grace = _shutdown_grace(shutdown_timeout, "shutdown_timeout")
        cut_grace = validate_cancel_grace(cancel_grace)
        self._logger: _AnyLogger = logger if logger is not None else logging.getLogger("Quiv")
        self._main_loop = main_loop
        self._shutdown_timeout = grace
        self._engine = Engine(
            self._config,
            clock if clock is not None else SystemClock(),
            self._logger,
            self._store_options,
        )
        self._engine.cancel_grace = cut_grace
        if main_loop is not None:
            self._engine.dispatcher.deliver_early_on(main_loop)
        self._state = _State.UNOPENED
        self._task_group: TaskGroup | None = None
        self._loop_thread: int | None = None  # set while open: calls must come from it
        self._stopped = False  # shutdown() stopped the engine; exiting only closes the group
        # Calls from other threads (see _later): serialised by this lock, and the
        # tasks whose add or removal they queued but the loop has not applied yet.
        self._relay = threading.Lock()
        self._adding: dict[str, TaskEntry] = {}
        self._removing: set[str] = set()

    # -- lifecycle ----------------------------------------------------------

    @property
    def config(self) -> QuivConfig:
        """The options this scheduler runs with."""
        return self._config

    @property
    def _store(self) -> Store:
        """The write-behind store (for tests: ``path``, ``flush()``, ``read_rows()``).

        Typed as the private temporary store, which is what the tests inspect;
        a durable store offers the same surface.
        """
        return cast(Store, self._engine.store)

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
        if task_group is None or (self._state is not _State.OPEN and not self._stopped):
            return None
        self._state = _State.CLOSING
        try:
            if not self._stopped:
                with anyio.CancelScope(shield=True):  # a host cancellation must not skip it
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

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the API's name
        """Stop now, waiting up to ``timeout`` seconds (default ``shutdown_timeout``)
        for running jobs to honour their stop event; calling it again does nothing.

        The ``async with`` block (or :meth:`serve`, :meth:`lifespan`) still has to
        end; it then only releases what is left. Every other call raises
        :class:`SchedulerClosedError` from here on.

        Raises:
            ConfigurationError: if ``timeout`` is not a number of seconds >= 0.
        """
        grace = self._shutdown_timeout if timeout is None else _shutdown_grace(timeout, "timeout")
        if self._state is _State.UNOPENED:
            self._close_unopened()
            return
        if self._state is not _State.OPEN:
            return
        self._check_usable()
        self._state = _State.CLOSING
        self._stopped = True
        try:
            with anyio.CancelScope(shield=True):
                await self._engine.stop(grace)
        finally:
            self._state = _State.CLOSED

    def _set_exit_timeout(self, timeout: float | None) -> None:
        """How long the coming exit waits for running jobs (``Quiv.shutdown(timeout)``)."""
        if timeout is not None:
            self._shutdown_timeout = _shutdown_grace(timeout, "timeout")

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
        self._check_not_closed()
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            # The registry belongs to the loop; touching it from elsewhere would race.
            raise SchedulerStateError(
                "AsyncQuiv methods must be awaited on the event loop that runs the scheduler; "
                "from another thread use quiv.Quiv, or anyio.from_thread.run(...) in a worker "
                "thread of that loop"
            )

    def _check_accepting(self) -> None:
        self._check_usable()
        self._check_not_closing()

    def _check_not_closed(self) -> None:
        if self._state is _State.CLOSED:
            raise SchedulerClosedError()

    def _check_not_closing(self) -> None:
        if self._state is _State.CLOSING:
            raise SchedulerStateError("the scheduler is shutting down and accepts no new work")

    # -- calls from other threads --------------------------------------------
    #
    # A write whose result the caller can know without the loop (a new task's
    # id, a refusal, an unknown id) is decided in the calling thread and only
    # its effect is queued on the loop's inbox, in call order, so the caller
    # does not wait for the loop. Each write is one ``_decide_*`` function used
    # both ways: by the coroutine on the loop, which applies the effect at
    # once, and by ``_later`` for the sync facade. A decision from another
    # thread reads the registry's dicts (never written outside the loop) over
    # the tasks whose add or removal is still queued, so it sees every earlier
    # call; an effect finds its task removed meanwhile (a run-once task that
    # ran) and then does nothing, as if the call had come just before.

    def _later(self, decide: Callable[[], tuple[T, _Effect | None]]) -> T:
        """Decide a call here, in the calling thread; queue its effect for the loop.

        Deciding and queueing happen under one lock, so the order of the
        effects is the order of the decisions, whichever threads made them.
        """
        with self._relay:
            result, effect = decide()
            if effect is not None and not self._engine.inbox.submit(effect):
                raise SchedulerClosedError()
        return result

    def _find_task(self, task_id: str, deferred: bool) -> TaskEntry | None:
        """The task with this id, counting the adds and removals still queued if ``deferred``."""
        if deferred:
            # Looked at in the reverse of the order the loop updates them in,
            # so an add or removal it applies meanwhile is never missed.
            if task_id in self._removing:
                return None
            task = self._adding.get(task_id)
            if task is not None:
                return task
        return self._engine.registry.tasks.get(task_id)

    def _task(self, task_id: object, deferred: bool) -> TaskEntry:
        task = self._find_task(check_id(task_id, "task_id"), deferred)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    def _peek_task(self, task_id: str) -> Task | None:
        """``get_task`` answered in the calling thread, if it can be; else None.

        It can when every call queued for the loop has been applied (so the
        caller's own writes are in the registry) and the task's snapshot is
        cached (snapshots are built and dropped on the loop only).
        """
        if self._state is _State.CLOSED or not self._engine.inbox.settled():
            return None
        task = self._engine.registry.tasks.get(task_id)
        if task is None:
            return None
        task.watched = True  # its snapshot is kept made from now on
        return task.snapshot

    def _peek_job(self, job_id: str) -> Job | None:
        """``get_job`` answered in the calling thread, if the job has ended (see
        ``Engine.ended_job_model``) and every call queued for the loop has run."""
        if self._state is _State.CLOSED or not self._engine.inbox.settled():
            return None
        return self._engine.ended_job_model(job_id)

    def _peek_all_tasks(self, include_run_once: bool) -> list[Task] | None:
        """``get_all_tasks`` answered in the calling thread, if it can be (see ``_peek_task``)."""
        if self._state is _State.CLOSED or not self._engine.inbox.settled():
            return None
        tasks = list(self._engine.registry.tasks.values())  # one step: the loop cannot interleave
        chosen = [task for task in tasks if include_run_once or not task.one_shot]
        snapshots = [task.snapshot for task in chosen]
        if any(snapshot is None for snapshot in snapshots):
            return None
        for task in chosen:
            task.watched = True  # their snapshots are kept made from now on
        return snapshots  # type: ignore[return-value]  # no None left

    def _decide_add(self, task: TaskEntry, wait: float, deferred: bool) -> tuple[str, _Effect]:
        self._check_not_closed()
        self._check_not_closing()
        if self._find_task(task.id, deferred) is not None:
            raise ConfigurationError(f"task_id {task.id!r} is already in use by another task")

        def effect() -> None:
            first_run = self._engine.add(task, wait)
            self._adding.pop(task.id, None)  # registered first: lookups never miss it
            if self._logger.isEnabledFor(logging.INFO):
                self._logger.info(
                    "quiv task %r (%s) added; first run at %s",
                    task.name,
                    task.id,
                    self._format(first_run),
                )

        if deferred:
            self._adding[task.id] = task
        return task.id, effect

    def _decide_run_now(self, task_id: str, deferred: bool) -> tuple[int, _Effect]:
        self._check_not_closed()
        self._check_not_closing()
        task = self._find_task(check_id(task_id, "task_id"), deferred)
        if task is None:
            raise HandlerNotRegisteredError(task_id)
        if task.consumed:
            raise TaskNotScheduledError(task_id)

        def effect() -> None:
            if not task.removed and not task.consumed:
                self._engine.run_now(task)

        return 1, effect

    def _decide_pause(self, task_id: str, deferred: bool) -> tuple[None, _Effect]:
        self._check_not_closed()
        task = self._task(task_id, deferred)

        def effect() -> None:
            if not task.removed and self._engine.pause(task):
                self._logger.info("quiv task %r (%s) paused", task.name, task.id)

        return None, effect

    def _decide_resume(self, task_id: str, delay: float, deferred: bool) -> tuple[None, _Effect]:
        self._check_not_closed()
        self._check_not_closing()
        task = self._task(task_id, deferred)
        wait = validate_delay(delay)
        if task.consumed:
            raise TaskNotScheduledError(task_id)

        def effect() -> None:
            if not task.removed and not task.consumed:
                self._engine.resume(task, wait)
                self._logger.info("quiv task %r (%s) resumed", task.name, task.id)

        return None, effect

    def _decide_cancel(
        self, job_id: str, force: bool, deferred: bool
    ) -> tuple[bool, _Effect | None]:
        self._check_not_closed()
        job = self._engine.registry.jobs.get(check_id(job_id, "job_id"))
        if not isinstance(force, bool):
            raise ConfigurationError(f"force must be True or False, got {force!r}")
        if job is None and self._engine.shared is not None:
            return self._decide_cancel_elsewhere(job_id, force)
        if job is None or job.status.is_final:
            return False, None
        # Its stop event is set before the call returns, wherever the call comes
        # from (setting a threading.Event is safe anywhere); the loop does the rest.
        job.request_stop()

        def effect() -> None:
            self._engine.cancel(job, force)  # a no-op if the job ended meanwhile

        return True, effect

    def _decide_cancel_elsewhere(self, job_id: str, force: bool) -> tuple[bool, _Effect | None]:
        """``cancel_job`` of a job this process does not hold: another one may run it."""
        shared = self._engine.shared
        assert shared is not None
        found = self._engine.job_model(job_id)
        if found is None or found.status.is_final:
            return False, None
        return True, lambda: shared.request_cancel(job_id, force)

    def _decide_remove(self, task_id: str, deferred: bool) -> tuple[None, _Effect]:
        self._check_not_closed()
        task = self._task(task_id, deferred)

        def effect() -> None:
            if not task.removed:
                self._engine.remove(task)
                self._logger.info("quiv task %r (%s) removed", task.name, task.id)
            self._removing.discard(task.id)  # removed first: lookups never find it again

        if deferred:
            self._removing.add(task.id)
        return None, effect

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
        max_retries: int = 0,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
        timeout: float | None = None,  # noqa: ASYNC109 - a run's limit
        task_id: str | None = None,
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
            max_retries: a run whose handler raises is run again up to this
                many times (each attempt its own job; not after a cancel or a
                timeout).
            retry_backoff: the wait before retry ``n`` is random in
                ``[0, retry_backoff * 2**(n-1)]`` seconds (full jitter) ...
            retry_backoff_max: ... capped at this many seconds.
            timeout: a run still going after this many seconds has its stop
                event set and ends ``failed`` (``TimeoutError``); an async
                handler is cancelled ``cancel_grace`` seconds later. ``None``:
                no limit.
            task_id: a stable id of your choosing (default: a random UUID). With
                a durable store, adding an id the store already holds takes the
                definition from this call and keeps the stored run state (next
                due time, paused, history): every process of an app adds its
                tasks at start-up with the same ids.

        Raises:
            ConfigurationError: for any invalid argument, or unless exactly one
                of ``interval``, ``cron``, ``run_at`` and ``trigger`` is given,
                or if ``task_id`` is already in use here; nothing is scheduled.
            HandlerRegistrationError: with a durable store, if ``func`` cannot be
                imported by name or the arguments cannot be stored.
            InvalidTimezoneError: if ``timezone`` is unknown.
            SchedulerClosedError: after shutdown.
        """
        return await self._add_task(
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

    async def _add_task(self, *values: Any) -> str:
        """:meth:`add_task` on the loop (or before it runs), its arguments all positional.

        Positional all the way down: keyword arguments cost a sync facade
        call, which passes them on twice, several microseconds.
        """
        self._check_usable()
        task, wait = self._new_task(*values)
        return _now(self._decide_add(task, wait, deferred=False))

    def _new_task(
        self,
        task_name: object,
        func: Any,
        interval: object,
        delay: object,
        run_once: object,
        fixed_interval: object,
        args: object,
        kwargs: object,
        progress_callback: object,
        cron: object,
        run_at: object,
        trigger: object,
        timezone: object,
        jitter: object,
        misfire_grace: object,
        coalesce: object,
        max_instances: object,
        max_retries: object,
        retry_backoff: object,
        retry_backoff_max: object,
        timeout: object,
        task_id: object,
        /,
    ) -> tuple[TaskEntry, float]:
        """Validate ``add_task``'s arguments (in any thread); the new task and its delay."""
        self._check_not_closed()
        self._check_not_closing()
        policy_of_jobs = job_policy_of(max_retries, retry_backoff, retry_backoff_max, timeout)
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
            policy=_policy(jitter, misfire_grace, coalesce, max_instances),
            default_zone=self._config.tz,
            wall=self._engine.clock.now(),
        )
        task.job_policy = policy_of_jobs
        if task_id is not None:
            task.id = _stable_id(task_id)
        options = self._store_options
        if options.durable:  # any process may have to run it: it must be importable
            task.portable = portable(func, task.args_copy, task.kwargs_copy, options.serializer)
        return task, wait

    def _add_task_nowait(self, *values: Any) -> str:
        """:meth:`add_task` from another thread: validated here, applied on the loop later.

        Takes :meth:`add_task`'s arguments, all positional, in its order; the
        facade's own ``add_task`` carries the typed signature.
        """
        task, wait = self._new_task(*values)
        return self._later(lambda: self._decide_add(task, wait, deferred=True))

    def _run_task_immediately_nowait(self, task_id: str) -> int:
        return self._later(lambda: self._decide_run_now(task_id, deferred=True))

    def _pause_task_nowait(self, task_id: str) -> None:
        self._later(lambda: self._decide_pause(task_id, deferred=True))

    def _resume_task_nowait(self, task_id: str, delay: float = 0) -> None:
        self._later(lambda: self._decide_resume(task_id, delay, deferred=True))

    def _cancel_job_nowait(self, job_id: str, force: bool = False) -> bool:
        return self._later(lambda: self._decide_cancel(job_id, force, deferred=True))

    def _remove_task_nowait(self, task_id: str) -> None:
        self._later(lambda: self._decide_remove(task_id, deferred=True))

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
        max_retries: int | Unset = UNSET,
        retry_backoff: float | Unset = UNSET,
        retry_backoff_max: float | Unset = UNSET,
        timeout: float | Unset | None = UNSET,  # noqa: ASYNC109 - a run's limit
    ) -> Task:
        """Change a task in place, keeping its id and its job history; return it.

        Only the arguments given change. At most one of ``interval``, ``cron``,
        ``run_at`` and ``trigger`` may be given; a new one (or a new
        ``timezone``) plans the next run afresh from now, so ``next_run_at``
        changes at once. A job that is running (or waiting for a pool slot) is
        not touched: it runs to its end with what it started with. ``interval``
        keeps the task's ``fixed_interval``. New retry and timeout settings
        apply to runs that start (and retries scheduled) from now on.

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
        was = task.job_policy
        job_policy = JobPolicy(
            was.max_retries if isinstance(max_retries, Unset) else max_retries,
            was.retry_backoff if isinstance(retry_backoff, Unset) else retry_backoff,
            was.retry_backoff_max if isinstance(retry_backoff_max, Unset) else retry_backoff_max,
            was.timeout if isinstance(timeout, Unset) else timeout,
        )
        # Apply.
        task.name = name
        task.policy = policy
        task.job_policy = job_policy
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
        self._check_usable()
        return _now(self._decide_run_now(task_id, deferred=False))

    async def pause_task(self, task_id: str) -> None:
        """Stop future runs of a task until :meth:`resume_task`.

        A run in progress continues; a run waiting for a pool slot is cancelled.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        _now(self._decide_pause(task_id, deferred=False))

    async def resume_task(self, task_id: str, delay: float = 0) -> None:
        """Re-activate a task; its next run is due ``delay`` seconds from now.

        With ``delay=0`` it runs at once (or, if a run is in progress, as soon as
        that run ends). The fixed cadence re-anchors on this run.

        Raises:
            TaskNotFoundError: if no task has this id.
            ConfigurationError: if ``delay`` is negative or not a finite number.
        """
        self._check_usable()
        _now(self._decide_resume(task_id, delay, deferred=False))

    async def cancel_job(self, job_id: str, *, force: bool = False) -> bool:
        """Ask a job to stop by setting its ``_stop_event``.

        Cancellation is cooperative: the handler should check the event and
        return; the job then ends ``cancelled``. A job still waiting for a pool
        slot (or a retry waiting out its backoff) is cancelled at once. With
        ``force=True`` an async handler is also cancelled at once, through its
        task, whether or not it looks at its event; a sync handler cannot be
        killed, so for it ``force`` changes nothing.

        Returns:
            True if the job is scheduled or running (its stop event is now set),
            False if it has already ended or is unknown.
        """
        self._check_usable()
        return _now(self._decide_cancel(job_id, force, deferred=False))

    async def remove_task(self, task_id: str) -> None:
        """Remove a task. A running job of it has its stop event set and ends on its own.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        _now(self._decide_remove(task_id, deferred=False))

    async def get_task(self, task_id: str) -> Task:
        """Return a snapshot of one task.

        Raises:
            TaskNotFoundError: if no task has this id.
        """
        self._check_usable()
        task = self._engine.registry.task(check_id(task_id, "task_id"))
        task.watched = True  # its snapshot is kept made from now on (see _snapshots)
        return task.to_model()

    async def get_job(self, job_id: str) -> Job:
        """Return a snapshot of one job, live or within the retention window.

        Raises:
            JobNotFoundError: if no job has this id.
        """
        self._check_usable()
        job = await self._engine.job_model_off_loop(check_id(job_id, "job_id"))
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    async def get_all_tasks(
        self, include_run_once: bool = False, *, task_name: str | None = None
    ) -> list[Task]:
        """Return every task in the order added; run-once tasks only if asked.

        ``task_name``: only the tasks with exactly this name.

        Raises:
            ConfigurationError: if ``task_name`` is not a str or ``None``.
        """
        self._check_usable()
        if task_name is not None and not isinstance(task_name, str):
            raise ConfigurationError(f"task_name must be a str or None, got {task_name!r}")
        chosen = [
            task
            for task in self._engine.registry.tasks.values()
            if (include_run_once or not task.one_shot)
            and (task_name is None or task.name == task_name)
        ]
        for task in chosen:
            task.watched = True  # their snapshots are kept made from now on
        return [task.to_model() for task in chosen]

    async def get_all_jobs(
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
        """Return the jobs in history in the order created, filtered and paged.

        Args:
            status: only jobs of this status.
            task_id: only jobs of this task.
            since: only jobs that started (or, if not started, became due) at
                or after this aware datetime ...
            until: ... and before this one.
            limit: at most this many jobs (after ``offset``); ``None``: all.
            offset: skip this many matching jobs first.
            newest_first: the most recently created first.

        Raises:
            ConfigurationError: for a value of the wrong type or out of range
                (``status`` not a job status, a naive datetime, a negative count).
        """
        self._check_usable()
        query = HistoryQuery.of(status, task_id, since, until, limit, offset, newest_first)
        return await self._engine.job_models_off_loop(query)

    async def wait_for_job(self, job_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109 - the API's name
        """Wait until a job has ended and return it; at once if it already has.

        Raises:
            JobNotFoundError: if no job has this id.
            TimeoutError: if it has not ended after ``timeout`` seconds (real time).
            SchedulerClosedError: if the scheduler shuts down first.
            ConfigurationError: if ``timeout`` is not ``None`` or a number >= 0.
        """
        self._refuse_waiting_on_itself(job_id, task=False)
        return await self._wait(self._watch_job, job_id, timeout)

    async def wait_for_task(self, task_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109 - the API's name
        """Wait for the next job of a task to end (one running now, if any) and return it.

        Raises:
            TaskNotFoundError: if no task has this id, or it is removed meanwhile.
            TimeoutError: if none has ended after ``timeout`` seconds (real time).
            SchedulerClosedError: if the scheduler shuts down first.
            ConfigurationError: if ``timeout`` is not ``None`` or a number >= 0.
        """
        self._refuse_waiting_on_itself(task_id, task=True)
        return await self._wait(self._watch_task, task_id, timeout)

    def _refuse_waiting_on_itself(self, ident: object, *, task: bool) -> None:
        """Refuse a handler waiting for its own end, which cannot come while it waits.

        That is ``wait_for_job`` on its own job, or ``wait_for_task`` on its own
        task while that task runs one job at a time. Both facades call this from
        the handler's own thread or task, where :func:`current_job_id` knows it.
        """
        job_id = current_job_id()
        if job_id is None:
            return
        if not task:
            if ident == job_id:
                raise SchedulerStateError("a job cannot wait for itself to end")
            return
        job = self._engine.registry.jobs.get(job_id)
        if job is not None and job.task.id == ident and job.task.policy.max_instances == 1:
            raise SchedulerStateError(
                "a job cannot wait for the next run of its own task to end: with "
                "max_instances=1 that run is itself"
            )

    async def _wait(self, watch: _Watch, ident: str, timeout: float | None) -> Job:  # noqa: ASYNC109 - the API's name
        limit = None if timeout is None else validate_seconds(timeout, "timeout")
        done = anyio.Event()
        outcome: list[Job | QuivError] = []

        def tell(result: Job | QuivError) -> None:
            outcome.append(result)
            done.set()

        ended = await watch(ident, tell)
        if ended is not None:
            return ended
        try:
            with anyio.fail_after(limit):
                await done.wait()
        except TimeoutError:
            await self._unwatch(ident, tell)
            raise TimeoutError(f"{ident} did not end within {limit:g}s") from None
        result = outcome[0]
        if isinstance(result, QuivError):
            raise result
        return result

    async def _watch_job(self, job_id: str, waiter: Waiter) -> Job | None:
        """The job if it has ended; else ``waiter`` is told when it does.

        Suspends only to read a job memory let go of from a store whose reads
        wait on a network (``Engine.job_model_off_loop``).
        """
        self._check_usable()
        job_id = check_id(job_id, "job_id")
        job = self._engine.registry.jobs.get(job_id)
        if job is None or job.status.is_final:  # only ended jobs leave memory
            model = await self._engine.job_model_off_loop(job_id)
            if model is None:
                raise JobNotFoundError(job_id)
            if model.status.is_final:
                return model
            # Live in another process (a shared store): its end is seen at a poll.
        self._check_open()
        self._engine.job_waiters.setdefault(job_id, []).append(waiter)
        return None

    async def _watch_task(self, task_id: str, waiter: Waiter) -> Job | None:
        """``waiter`` is told when the task's next job ends; returns None. Never suspends."""
        self._check_usable()
        task = self._engine.registry.task(check_id(task_id, "task_id"))
        self._check_open()
        self._engine.task_waiters.setdefault(task.id, []).append(waiter)
        if self._engine.shared is not None:  # its next run may be another process's
            self._engine.shared.watch_task(task.id, waiter)
        return None

    async def _unwatch(self, ident: str, waiter: Waiter) -> None:
        """Forget ``waiter`` (it gave up). Never suspends."""
        for waiters in (self._engine.job_waiters, self._engine.task_waiters):
            listed = waiters.get(ident)
            if listed is not None and waiter in listed:
                listed.remove(waiter)
                if not listed:
                    del waiters[ident]

    def _check_open(self) -> None:
        if self._state is not _State.OPEN and self._state is not _State.UNOPENED:
            raise SchedulerStateError("the scheduler is shutting down: no job will end any more")

    async def stats(self) -> Stats:
        """A snapshot of the pool, the queue, start lag and the store's backlog."""
        self._check_usable()
        engine = self._engine
        registry = engine.registry
        pool = engine._pool
        running = registry.running.values()
        by_status = dict.fromkeys(_TaskStatus, 0)
        retries = 0
        for task in registry.tasks.values():
            by_status[task.status] += 1
            retries += sum(1 for job in task.retries if job.retry_due is not None)
        lags = sorted(engine.lags)
        ready = registry.ready
        now = engine.clock.monotonic()
        return Stats(
            pool_size=self._config.pool_size,
            pool_in_use=0 if pool is None else int(pool.borrowed_tokens),
            jobs_running=len(registry.running),
            jobs_queued=len(ready),
            jobs_overrunning=sum(1 for job in running if job.timed_out),
            retries_waiting=retries,
            tasks_by_status={status.value: count for status, count in by_status.items()},
            jobs_ended={status.value: count for status, count in engine.ended.items()},
            start_lag_p50=_percentile(lags, 0.50),
            start_lag_p99=_percentile(lags, 0.99),
            lag_window=LAG_WINDOW,
            # Not ready[0]: the queue is in arrival order, and a retry can arrive
            # ahead of a run that fell due earlier in the same tick.
            oldest_queued_wait=max(0.0, now - min(job.due for job in ready)) if ready else None,
            store_backlog=engine.store.backlog,
        )

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

    async def add_progress_listener(self, callback: ProgressListener) -> None:
        """Call ``callback(task, job, payload)`` on every progress payload of every job.

        ``payload`` is the dict of keyword arguments the handler passed to its
        ``_progress_hook`` (positional ones go to the task's own
        ``progress_callback`` only); ``task`` and ``job`` are snapshots taken
        while the job runs. Delivered like listeners, on the main loop and in
        order: after the job's ``job_started`` and before its final event. With
        no progress listener a payload costs nothing beyond the task's own
        callback. A callback that raises is logged and ignored.

        Raises:
            ConfigurationError: if ``callback`` is not callable.
        """
        self._check_usable()
        if not callable(callback):
            raise ConfigurationError(f"callback must be callable, got {callback!r}")
        self._engine.progress_listeners.append(callback)

    async def remove_progress_listener(self, callback: ProgressListener) -> None:
        """Forget one registration of ``callback``; an unknown one is ignored."""
        self._check_usable()
        listeners = self._engine.progress_listeners
        if callback in listeners:
            listeners.remove(callback)


_DEFAULT_POLICY = RunPolicy()


def _policy(
    jitter: object, misfire_grace: object, coalesce: object, max_instances: object
) -> RunPolicy:
    """The run policy of a new task; the defaults (nearly every task) built once."""
    if (
        misfire_grace is None
        and coalesce is True
        and type(jitter) is int
        and jitter == 0
        and type(max_instances) is int
        and max_instances == 1
    ):
        return _DEFAULT_POLICY
    return RunPolicy(jitter, misfire_grace, coalesce, max_instances)  # type: ignore[arg-type]


def _stable_id(value: object) -> str:
    """A caller's ``task_id``: a non-empty str of printable characters, at most 200."""
    if not isinstance(value, str) or not value or len(value) > 200 or not value.isprintable():
        raise ConfigurationError(
            f"task_id must be a non-empty printable str of at most 200 characters, got {value!r}"
        )
    return value


def _now(decided: tuple[T, _Effect | None]) -> T:
    """Apply a decided call at once (on the loop, or before it runs); its result."""
    result, effect = decided
    if effect is not None:
        effect()
    return result
