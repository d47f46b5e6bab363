"""Tasks another process added: rebuilt here from their stored definition.

With a durable store every process may run every task, including a one-off
added at run time by another process. A task this process did not add is
rebuilt from its row: the handler imported by ``module:qualname``, the
arguments loaded from JSON (a pickle only if this process, too, was given
``serializer="pickle"``: loading one runs code), the trigger and policies from
the stored definition, validated exactly as ``add_task`` validates them.
"""

from __future__ import annotations

import importlib
import json
import pickle
from datetime import datetime, tzinfo
from typing import Any

from ._exceptions import ConfigurationError
from ._jobpolicy import job_policy_of
from ._portable import Portable
from ._registry import TaskEntry
from ._triggers import RunPolicy
from ._validation import new_task_entry

__all__ = ["foreign_task", "load_handler"]


def load_handler(reference: str) -> Any:
    """Import ``module:qualname``; raise ``ConfigurationError`` if it is not there."""
    module_name, _, qualname = reference.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"the handler {reference} cannot be imported in this process: {exc}"
        ) from exc
    return found


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))  # Python 3.10 reads no "Z"


def foreign_task(
    row: tuple[Any, ...], default_zone: tzinfo, wall: datetime, allow_pickle: bool
) -> TaskEntry:
    """The task a stored row describes (``id, task_name, handler, serializer, args,
    kwargs, definition``); raise ``ConfigurationError`` if this process cannot run it."""
    task_id, name, handler, serializer, args_stored, kwargs_stored, definition = row
    if serializer == "pickle":
        if not allow_pickle:
            raise ConfigurationError(
                f"task {task_id!r} keeps pickled arguments, and this process was not given "
                "serializer='pickle', so it does not load them"
            )
        args, kwargs = pickle.loads(args_stored), pickle.loads(kwargs_stored)
    else:
        args, kwargs = json.loads(args_stored), json.loads(kwargs_stored)
    fields = json.loads(definition)
    interval = fields["interval_seconds"]
    task, _ = new_task_entry(
        name,
        load_handler(handler),
        interval,
        0,
        fields["run_once"],
        fields["fixed_interval"] if interval is not None else True,
        tuple(args),
        kwargs,
        None,
        cron=fields["cron"],
        run_at=_time(fields["run_at"]),
        timezone=fields["timezone"],
        policy=RunPolicy(
            fields["jitter"], fields["misfire_grace"], fields["coalesce"], fields["max_instances"]
        ),
        default_zone=default_zone,
        wall=wall,
    )
    task.job_policy = job_policy_of(
        fields["max_retries"],
        fields["retry_backoff"],
        fields["retry_backoff_max"],
        fields["timeout"],
    )
    task.id = task_id
    task.portable = Portable(handler, serializer, args_stored, kwargs_stored)
    return task
