"""Type aliases shared by the public signatures."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

__all__ = ["UNSET", "Handler", "Listener", "ProgressCallback", "ProgressListener", "Unset"]

#: A task's function: sync or ``async def``, taking the task's args and kwargs plus
#: any of ``_job_id``, ``_stop_event`` and ``_progress_hook`` it declares.
Handler: TypeAlias = Callable[..., Any]

#: Called with the keyword payload a handler passed to ``_progress_hook``; may be async.
ProgressCallback: TypeAlias = Callable[..., "Awaitable[Any] | Any"]

#: ``listener(event, task)`` for task events, ``listener(event, task, job)`` for job
#: events; may be async.
Listener: TypeAlias = Callable[..., "Awaitable[Any] | Any"]

#: ``listener(task, job, payload)`` for every job's progress; may be async.
ProgressListener: TypeAlias = Callable[..., "Awaitable[Any] | Any"]


class Unset(enum.Enum):
    """The type of :data:`UNSET`: "leave this as it is", in ``update_task``."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: The default of ``update_task``'s parameters: the field keeps its value.
UNSET: Final = Unset.UNSET
