"""One way for the dashboard to call either scheduler without blocking the app's loop.

``AsyncQuiv``'s methods are awaited where they are. ``Quiv``'s are blocking
(each waits for its private loop), so they run in a worker thread; a page that
needs several answers gets them in one trip to that thread. Everything goes
through the public API, so a scheduler whose history lives elsewhere (a
durable store) is shown without change here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from quiv import AsyncQuiv, Event, Job, JobStatus, Quiv, Stats, Task

__all__ = ["Backend"]


class Backend:
    """The calls the pages and the JSON API make, for an ``AsyncQuiv`` or a ``Quiv``."""

    def __init__(self, scheduler: AsyncQuiv | Quiv) -> None:
        if not isinstance(scheduler, (AsyncQuiv, Quiv)):
            raise TypeError(f"dashboard() needs an AsyncQuiv or a Quiv, got {scheduler!r}")
        self.scheduler = scheduler

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.scheduler, name)
        if isinstance(self.scheduler, AsyncQuiv):
            return await method(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))

    async def _call_all(
        self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
    ) -> list[Any]:
        """Make several calls in order; for a ``Quiv``, in one trip to a worker thread."""
        scheduler = self.scheduler
        if isinstance(scheduler, AsyncQuiv):
            return [await getattr(scheduler, name)(*args, **kw) for name, args, kw in calls]

        def blocking() -> list[Any]:
            return [getattr(scheduler, name)(*args, **kw) for name, args, kw in calls]

        return await anyio.to_thread.run_sync(blocking)

    # -- reads ----------------------------------------------------------------

    async def tasks_with_last_job(self) -> list[tuple[Task, Job | None]]:
        """Every task (run-once ones too), each with its newest job."""
        tasks: list[Task] = await self._call("get_all_tasks", True)
        newest = {"limit": 1, "newest_first": True}
        found = await self._call_all(
            [("get_all_jobs", (), {"task_id": task.id, **newest}) for task in tasks]
        )
        return [(task, jobs[0] if jobs else None) for task, jobs in zip(tasks, found, strict=True)]

    async def last_job(self, task_id: str) -> Job | None:
        jobs: list[Job] = await self._call(
            "get_all_jobs", task_id=task_id, limit=1, newest_first=True
        )
        return jobs[0] if jobs else None

    async def jobs(
        self, status: JobStatus | None, task_id: str | None, limit: int, offset: int
    ) -> list[Job]:
        """A page of the history, newest first."""
        result: list[Job] = await self._call(
            "get_all_jobs",
            status,
            task_id=task_id,
            limit=limit,
            offset=offset,
            newest_first=True,
        )
        return result

    async def task(self, task_id: str) -> Task:
        result: Task = await self._call("get_task", task_id)
        return result

    async def job(self, job_id: str) -> Job:
        result: Job = await self._call("get_job", job_id)
        return result

    async def stats(self) -> Stats:
        result: Stats = await self._call("stats")
        return result

    # -- actions --------------------------------------------------------------

    async def run_now(self, task_id: str) -> None:
        await self._call("run_task_immediately", task_id)

    async def pause(self, task_id: str) -> None:
        await self._call("pause_task", task_id)

    async def resume(self, task_id: str) -> None:
        await self._call("resume_task", task_id)

    async def remove(self, task_id: str) -> None:
        await self._call("remove_task", task_id)

    async def cancel(self, job_id: str) -> bool:
        result: bool = await self._call("cancel_job", job_id)
        return result

    # -- live updates -----------------------------------------------------------

    async def listen(self, on_event: Callable[..., Any], on_progress: Callable[..., Any]) -> None:
        await self._call_all(
            [("add_listener", (event, on_event), {}) for event in Event]
            + [("add_progress_listener", (on_progress,), {})]
        )

    async def unlisten(self, on_event: Callable[..., Any], on_progress: Callable[..., Any]) -> None:
        await self._call_all(
            [("remove_listener", (event, on_event), {}) for event in Event]
            + [("remove_progress_listener", (on_progress,), {})]
        )
