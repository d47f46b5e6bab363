"""Type aliases shared by the public signatures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

__all__ = ["Handler", "Listener", "ProgressCallback"]

#: A task's function: sync or ``async def``, taking the task's args and kwargs plus
#: any of ``_job_id``, ``_stop_event`` and ``_progress_hook`` it declares.
Handler: TypeAlias = Callable[..., Any]

#: Called with the keyword payload a handler passed to ``_progress_hook``; may be async.
ProgressCallback: TypeAlias = Callable[..., "Awaitable[Any] | Any"]

#: ``listener(event, task)`` for task events, ``listener(event, task, job)`` for job
#: events; may be async.
Listener: TypeAlias = Callable[..., "Awaitable[Any] | Any"]
