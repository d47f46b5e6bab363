"""Helpers for handlers: reach the main loop, run a child process, both stoppable.

A sync handler runs in a worker thread; these let it do two things that would
otherwise ignore a ``cancel_job``: wait for something on the event loop, and
wait for a child process. Both watch the job's stop event and give up (the
child is terminated) with :class:`JobCancelledError`, which ends the job
``cancelled`` if left to propagate.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from os import PathLike
from typing import Any, Protocol, TypeVar

from ._exceptions import ConfigurationError, JobCancelledError, SchedulerStateError
from ._jobpolicy import validate_seconds, validate_timeout
from ._runner import current_job, thread_main_loop

__all__ = ["call_on_main", "run_subprocess"]

T = TypeVar("T")

#: Seconds between looks at the stop event while waiting.
POLL_SECONDS = 0.02


class _StopEvent(Protocol):
    def is_set(self) -> bool: ...


def call_on_main(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``func(*args, **kwargs)`` on the scheduler's main loop and return its result.

    For sync handlers: ``func`` may be a plain function or a coroutine
    function (awaited there). The calling thread waits; if the job's stop event
    is set first, the call on the loop is cancelled and
    :class:`JobCancelledError` is raised. An exception ``func`` raises is
    raised here.

    Raises:
        SchedulerStateError: outside a sync handler that quiv runs (an async
            handler should simply await ``func``).
        JobCancelledError: the job's stop event was set before ``func`` returned.
    """
    job, loop = current_job(), thread_main_loop()
    if job is None or loop is None:
        raise SchedulerStateError(
            "call_on_main works only inside a sync handler that quiv runs; "
            "an async handler can call or await the function directly"
        )
    if not callable(func):
        raise ConfigurationError(f"func must be callable, got {func!r}")

    async def call() -> Any:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    future: Future[Any] = asyncio.run_coroutine_threadsafe(call(), loop)
    while True:
        if job.stop_requested:
            future.cancel()
            raise JobCancelledError(f"job {job.id} was asked to stop; call_on_main gave up")
        try:
            return future.result(POLL_SECONDS)
        except FutureTimeoutError:  # not done yet: look at the stop event again
            continue


def run_subprocess(
    args: str | bytes | PathLike[str] | Sequence[str | bytes | PathLike[str]],
    *,
    stop_event: _StopEvent,
    timeout: float | None = None,
    kill_grace: float = 5.0,
    **popen_kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """Run a child process to its end, stopping it when ``stop_event`` is set.

    Stopping means ``terminate()`` (SIGTERM), then ``kill()`` if it is still
    running ``kill_grace`` seconds later. Pass the handler's ``_stop_event``:
    ``cancel_job``, a timeout and shutdown then stop the program too. Output is
    captured if ``popen_kwargs`` ask for it (``stdout=subprocess.PIPE``); the
    exit status is not checked.

    Returns:
        The finished process: ``args``, ``returncode``, ``stdout``, ``stderr``.

    Raises:
        JobCancelledError: ``stop_event`` was set; the child has been stopped.
        subprocess.TimeoutExpired: it ran past ``timeout``; it has been stopped.
        ConfigurationError: for a bad ``stop_event``, ``timeout`` or ``kill_grace``.
    """
    if not callable(getattr(stop_event, "is_set", None)):
        raise ConfigurationError(
            f"stop_event must be a threading.Event (the handler's _stop_event), got {stop_event!r}"
        )
    limit = validate_timeout(timeout)
    grace = validate_seconds(kill_grace, "kill_grace")
    if "input" in popen_kwargs or "check" in popen_kwargs:
        raise ConfigurationError("run_subprocess takes neither input nor check")
    started = time.monotonic()
    with subprocess.Popen(args, **popen_kwargs) as process:
        while True:
            try:
                out, err = process.communicate(timeout=POLL_SECONDS)
                return subprocess.CompletedProcess(process.args, process.returncode, out, err)
            except subprocess.TimeoutExpired:
                pass
            if stop_event.is_set():
                _stop(process, grace)
                raise JobCancelledError(
                    f"stop event set: child process {process.pid} was stopped "
                    f"(exit status {process.returncode})"
                )
            if limit is not None and time.monotonic() - started >= limit:
                out, err = _stop(process, grace)
                raise subprocess.TimeoutExpired(process.args, limit, out, err)


def _stop(process: subprocess.Popen[Any], grace: float) -> tuple[Any, Any]:
    """Terminate ``process``, kill it after ``grace`` seconds; return what it wrote."""
    process.terminate()
    try:
        return process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()
