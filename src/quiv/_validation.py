"""Checking what callers pass in, before anything changes.

Every public method validates all of its arguments first and raises a
``ConfigurationError`` naming the culprit (its subclass ``HandlerRegistrationError``
for an unusable handler or progress callback), so a refused call changes nothing.
"""

from __future__ import annotations

import functools
import inspect
import pickle
from datetime import datetime, tzinfo
from datetime import timezone as dt_timezone
from typing import Any

from ._exceptions import ConfigurationError, HandlerRegistrationError
from ._ids import new_id
from ._registry import TaskEntry, resolved_zone_name
from ._runner import INJECTABLE, handler_traits
from ._schedule import validate_delay
from ._triggers import RunPolicy, Timeline, Trigger, choose_trigger, resolve_trigger, task_zone

DEFAULT_POLICY = RunPolicy()
UTC = dt_timezone.utc

__all__ = [
    "check_args",
    "check_func",
    "check_id",
    "check_kwargs",
    "check_name",
    "check_progress_callback",
    "new_task_entry",
    "timed",
]


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


def _inspect(func: Any) -> tuple[bool, bool, frozenset[str]]:
    """Whether ``func`` is a generator function, whether it is async, what it takes injected."""
    generator = inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func)
    is_async, injected = handler_traits(func)
    return generator, is_async, injected


#: The same handler is often added many times: it is inspected once.
_inspect_cached = functools.lru_cache(maxsize=512)(_inspect)


def check_func(func: object) -> tuple[bool, frozenset[str]]:
    """Validate a handler; return whether it is async and the names it takes injected."""
    if not callable(func):
        raise HandlerRegistrationError(f"func must be callable, got {func!r}")
    try:
        try:
            generator, is_async, injected = _inspect_cached(func)
        except TypeError:  # unhashable callable: inspect it every time
            generator, is_async, injected = _inspect(func)
    except Exception as exc:  # e.g. a __getattr__ that raises more than AttributeError
        raise HandlerRegistrationError(
            f"func cannot be inspected: {type(exc).__name__}: {exc}"
        ) from exc
    if generator:
        raise HandlerRegistrationError(
            f"func must be a function, not a generator function ({func!r}): "
            "calling it would only create a generator and run none of its body"
        )
    return is_async, injected


def check_name(task_name: object) -> str:
    if not isinstance(task_name, str) or not task_name.strip():
        raise ConfigurationError(f"task_name must be a non-empty string, got {task_name!r}")
    return task_name


#: The pickles of no arguments, which nearly every task has: made once.
_NO_ARGS = pickle.dumps((), protocol=pickle.HIGHEST_PROTOCOL)
_NO_KWARGS = pickle.dumps({}, protocol=pickle.HIGHEST_PROTOCOL)


def check_args(args: object) -> tuple[bytes, tuple[Any, ...]]:
    """Validated ``args``: the pickle and one copy loaded back."""
    if args is None or (type(args) is tuple and not args):
        return _NO_ARGS, ()
    if not isinstance(args, tuple):
        raise ConfigurationError(f"args must be a tuple or None, got {type(args).__name__}")
    return _pickled(args, "args")


def check_kwargs(kwargs: object) -> tuple[bytes, dict[str, Any]]:
    """Validated ``kwargs``: the pickle and one copy loaded back."""
    if kwargs is None or (type(kwargs) is dict and not kwargs):
        return _NO_KWARGS, {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigurationError("kwargs must be a dict with str keys, or None")
    clash = sorted(INJECTABLE.intersection(kwargs))
    if clash:
        raise ConfigurationError(
            f"kwargs may not set {', '.join(clash)}: quiv injects those names itself"
        )
    return _pickled(kwargs, "kwargs")


def check_progress_callback(progress_callback: object) -> None:
    if progress_callback is not None and not callable(progress_callback):
        raise HandlerRegistrationError(
            f"progress_callback must be callable, got {progress_callback!r}"
        )


def timed(trigger: Trigger, zone: tzinfo | None, default: tzinfo) -> tuple[Trigger, Timeline, str]:
    """The trigger that runs (zone resolved), a fresh timeline on it, and the zone shown."""
    resolved = resolve_trigger(trigger, zone, default)
    return resolved, resolved.timeline(), resolved_zone_name(resolved, zone, default)


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
    *,
    cron: object = None,
    run_at: object = None,
    timezone: object = None,
    trigger: object = None,
    policy: RunPolicy = DEFAULT_POLICY,
    default_zone: tzinfo = UTC,
    wall: datetime,
) -> tuple[TaskEntry, float]:
    """Validate ``add_task``'s arguments; return the new task and its delay in seconds."""
    name = check_name(task_name)
    is_async, injected = check_func(func)
    given = choose_trigger(interval, fixed_interval, cron, run_at, trigger)
    zone = task_zone(timezone)
    wait = validate_delay(delay)
    if not isinstance(run_once, bool):
        raise ConfigurationError(f"run_once must be a bool, got {run_once!r}")
    if not isinstance(fixed_interval, bool):
        raise ConfigurationError(f"fixed_interval must be a bool, got {fixed_interval!r}")
    args_blob, args_copy = check_args(args)
    kwargs_blob, kwargs_copy = check_kwargs(kwargs)
    check_progress_callback(progress_callback)
    resolved, timeline, shown = timed(given, zone, default_zone)
    task = TaskEntry(
        id=new_id(),
        name=name,
        func=func,  # type: ignore[arg-type]  # checked callable
        is_async=is_async,
        injected=injected,
        args_blob=args_blob,
        kwargs_blob=kwargs_blob,
        args_copy=args_copy,
        kwargs_copy=kwargs_copy,
        given=given,
        zone=zone,
        trigger=resolved,
        timeline=timeline,
        display_zone=shown,
        fixed_interval=fixed_interval,
        run_once=run_once,
        policy=policy,
        progress_callback=progress_callback,  # type: ignore[arg-type]  # checked callable
        next_run_at=wall,
    )
    return task, wait
