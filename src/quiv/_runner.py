"""Running one job: build the call, run the handler, classify the outcome.

Where a job runs (a worker task on the loop, a worker thread) is decided in
``_workers``; this module is what happens inside: arguments are unpickled
afresh for every run, the injected names the handler declares are added, and
whatever the handler does is turned into an outcome.

The outcome is always one of three statuses, whatever the handler throws:
``completed``, ``cancelled`` (it returned after its stop event was set, by
``cancel_job``, by shutdown or by the handler itself, or shutdown cut it off)
or ``failed`` (it raised anything, ``BaseException`` subclasses included, or
returned an awaitable from a sync function). A failure is recorded as the
exception's message and, apart, its class name.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import pickle
import threading
from collections.abc import Callable
from typing import Any

import anyio

from ._exceptions import JobCancelledError
from ._models import JobStatus
from ._registry import JobEntry

__all__ = [
    "INJECTABLE",
    "Outcome",
    "current_job_id",
    "handler_traits",
    "injected_names",
    "is_async_callable",
    "run_async_job",
    "run_sync_job",
    "task_is_cancelling",
]

INJECTABLE = frozenset({"_job_id", "_stop_event", "_progress_hook"})

#: ``(status, error_message, error_type)``.
Outcome = tuple[JobStatus, "str | None", "str | None"]

_thread_state = threading.local()
#: The async job whose handler runs in this task (each job has a task of its own).
_async_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "quiv_async_job_id", default=None
)


def current_job_id() -> str | None:
    """The id of the job whose handler is running here, if any.

    A sync job is known to its worker thread; an async job to its own task.
    """
    job_id: str | None = getattr(_thread_state, "job_id", None)
    return job_id if job_id is not None else _async_job_id.get()


def set_thread_main_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Tell this worker thread which loop is the scheduler's main loop."""
    _thread_state.main_loop = loop


def thread_main_loop() -> asyncio.AbstractEventLoop | None:
    return getattr(_thread_state, "main_loop", None)


def current_job() -> JobEntry | None:
    """The sync job running in this worker thread, if any."""
    return getattr(_thread_state, "job", None)


def is_async_callable(func: object) -> bool:
    """True for ``async def`` functions, partials of them and objects with async ``__call__``."""
    while hasattr(func, "func") and hasattr(func, "args"):  # functools.partial
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - we want the bound __call__
    )


def injected_names(func: Callable[..., Any]) -> frozenset[str]:
    """Which of ``_job_id``/``_stop_event``/``_progress_hook`` ``func`` can accept."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: inject nothing
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return INJECTABLE
    return frozenset(
        p.name
        for p in parameters
        if p.name in INJECTABLE
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def handler_traits(func: Callable[..., Any]) -> tuple[bool, frozenset[str]]:
    """``(is_async, injected_names)`` for a handler (``_validation`` caches it per handler)."""
    return is_async_callable(func), injected_names(func)


def _failure(exc: BaseException, context: str = "") -> Outcome:
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ raises must not take us down with it
        text = "<str() of the exception failed>"
    return JobStatus.FAILED, context + text, type(exc).__name__


def _arguments(
    job: JobEntry, progress_hook: Callable[..., None]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    task = job.task
    # A fresh copy for every run, so no run sees another's mutations; nothing to
    # copy when there are no arguments (the common case).
    args: tuple[Any, ...] = pickle.loads(task.args_blob) if task.args_copy else ()
    kwargs: dict[str, Any] = pickle.loads(task.kwargs_blob) if task.kwargs_copy else {}
    if task.injected:
        if "_job_id" in task.injected:
            kwargs["_job_id"] = job.id
        if "_stop_event" in task.injected:
            kwargs["_stop_event"] = job.stop_event
        if "_progress_hook" in task.injected:
            kwargs["_progress_hook"] = progress_hook
    return args, kwargs


def _settle(job: JobEntry) -> Outcome:
    """How a run that returned normally ended: cancelled if its stop event was set."""
    stop_event = job.stop_event
    if job.stop_requested or (stop_event is not None and stop_event.is_set()):
        return JobStatus.CANCELLED, None, None
    return JobStatus.COMPLETED, None, None


def run_sync_job(job: JobEntry, progress_hook: Callable[..., None]) -> Outcome:
    """Run a sync job to its end in the calling (worker) thread and say how it ended.

    Nothing escapes: a ``KeyboardInterrupt`` raised by handler code is that
    job's failure, not the scheduler's.
    """
    try:
        args, kwargs = _arguments(job, progress_hook)
    except Exception as exc:
        return _failure(exc, "could not prepare arguments: ")
    _thread_state.job_id = job.id
    _thread_state.job = job
    try:
        result = job.task.func(*args, **kwargs)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return (
                JobStatus.FAILED,
                "the sync handler returned an awaitable; declare it 'async def' "
                "so quiv awaits it on the event loop",
                "TypeError",
            )
    except JobCancelledError:  # a helper gave up because the stop event was set
        return JobStatus.CANCELLED, None, None
    except BaseException as exc:
        return _failure(exc)
    finally:
        _thread_state.job_id = _thread_state.job = None
    return _settle(job)


async def run_async_job(
    job: JobEntry, progress_hook: Callable[..., None], scope: anyio.CancelScope
) -> Outcome:
    """Await an async job on the loop and say how it ended.

    Only a cancellation of ``scope`` (shutdown cutting the job off) or of the
    host propagates; a ``CancelledError`` the handler raises itself is a failure.
    """
    try:
        args, kwargs = _arguments(job, progress_hook)
    except Exception as exc:
        return _failure(exc, "could not prepare arguments: ")
    _async_job_id.set(job.id)  # this task is the job's own: nothing to reset
    try:
        await job.task.func(*args, **kwargs)
    except anyio.get_cancelled_exc_class() as exc:
        if scope.cancel_called or job.cut is not None or task_is_cancelling():
            raise
        return _failure(exc)
    except JobCancelledError:
        return JobStatus.CANCELLED, None, None
    except BaseException as exc:
        return _failure(exc)
    return _settle(job)


def task_is_cancelling() -> bool:
    """Whether the task running us is really being cancelled, not just handed a raise.

    Python 3.10 cannot tell; there a stray cancellation counts as the handler's
    failure, and anyio re-delivers a genuine one at the next checkpoint anyway.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False
