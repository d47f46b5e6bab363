"""Checking what callers pass in, before anything changes.

Every public method validates all of its arguments first and raises a
``ConfigurationError`` naming the culprit (its subclass ``HandlerRegistrationError``
for an unusable handler or progress callback), so a refused call changes nothing.
"""

from __future__ import annotations

import inspect
import pickle
from datetime import datetime
from typing import Any

from ._exceptions import ConfigurationError, HandlerRegistrationError
from ._ids import new_id
from ._registry import TaskEntry
from ._runner import INJECTABLE, handler_traits
from ._schedule import validate_delay, validate_interval

__all__ = ["check_id", "new_task_entry"]


def check_id(value: object, what: str) -> str:
    """Return ``value`` if it is a str id, else raise ``ConfigurationError``."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _pickled(value: object, what: str) -> tuple[bytes, Any]:
    """The pickle of ``value`` and a copy loaded back from it.

    Each run unpickles a fresh copy, so a value that pickles but cannot be loaded
    back would fail every run; find out now, at the call.
    """
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        copy = pickle.loads(blob)
    except Exception as exc:
        raise ConfigurationError(
            f"{what} must survive pickling (lambdas, inner functions and open files do not): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return blob, copy


def new_task_entry(
    task_name: object,
    func: object,
    interval: object,
    delay: object,
    run_once: object,
    fixed_interval: object,
    args: object,
    kwargs: object,
    progress_callback: object,
    wall: datetime,
) -> tuple[TaskEntry, float]:
    """Validate ``add_task``'s arguments; return the new task and its delay in seconds."""
    if not isinstance(task_name, str) or not task_name.strip():
        raise ConfigurationError(f"task_name must be a non-empty string, got {task_name!r}")
    if not callable(func):
        raise HandlerRegistrationError(f"func must be callable, got {func!r}")
    try:
        generator = inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func)
        is_async, injected = handler_traits(func)
    except Exception as exc:  # e.g. a __getattr__ that raises more than AttributeError
        raise HandlerRegistrationError(
            f"func cannot be inspected: {type(exc).__name__}: {exc}"
        ) from exc
    if generator:
        raise HandlerRegistrationError(
            f"func must be a function, not a generator function ({func!r}): "
            "calling it would only create a generator and run none of its body"
        )
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
        raise HandlerRegistrationError(
            f"progress_callback must be callable, got {progress_callback!r}"
        )
    empty_kwargs: dict[str, Any] = {}
    args_blob, args_copy = _pickled(args or (), "args")
    kwargs_blob, kwargs_copy = _pickled(kwargs or empty_kwargs, "kwargs")
    task = TaskEntry(
        id=new_id(),
        name=task_name,
        func=func,
        is_async=is_async,
        injected=injected,
        args_blob=args_blob,
        kwargs_blob=kwargs_blob,
        args_copy=args_copy,
        kwargs_copy=kwargs_copy,
        interval=seconds,
        fixed=fixed_interval,
        run_once=run_once,
        progress_callback=progress_callback,
        next_run_at=wall,
    )
    return task, wait
