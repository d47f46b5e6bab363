"""Helpers shared by the tests: event recorders that wait under a deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio

from quiv import AsyncQuiv, Event, Job, Quiv, Task

Record = tuple[str, str, str | None]  # (event, task name, job status or None)


def _record(event: Event, task: Task, job: Job | None) -> Record:
    return (event.value, task.task_name, None if job is None else job.status.value)


class AsyncRecorder:
    """Listens to every event on an AsyncQuiv; lets a test await a condition."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.jobs: list[Job] = []
        self._changed = anyio.Event()

    async def attach(self, scheduler: AsyncQuiv) -> None:
        for event in Event:
            await scheduler.add_listener(event, self._listener)

    def _listener(self, event: Event, task: Task, job: Job | None = None) -> None:
        self.records.append(_record(event, task, job))
        if job is not None:
            self.jobs.append(job)
        self._changed.set()
        self._changed = anyio.Event()

    def count(self, event: Event) -> int:
        return sum(1 for record in self.records if record[0] == event.value)

    async def wait_until(self, condition: Callable[[], bool], within: float = 5) -> None:
        with anyio.fail_after(within):
            while not condition():
                await self._changed.wait()

    async def wait_for(self, event: Event, count: int = 1, within: float = 5) -> None:
        await self.wait_until(lambda: self.count(event) >= count, within)


class SyncRecorder:
    """Listens to every event on a Quiv; lets a test block until a condition holds."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.threads: set[str] = set()
        self._condition = threading.Condition()

    def attach(self, scheduler: Quiv) -> None:
        for event in Event:
            scheduler.add_listener(event, self._listener)

    def _listener(self, event: Event, task: Task, job: Job | None = None) -> None:
        with self._condition:
            self.records.append(_record(event, task, job))
            self.threads.add(threading.current_thread().name)
            self._condition.notify_all()

    def count(self, event: Event) -> int:
        with self._condition:
            return sum(1 for record in self.records if record[0] == event.value)

    def wait_for(self, event: Event, count: int = 1, within: float = 5) -> None:
        with self._condition:
            reached = self._condition.wait_for(
                lambda: sum(1 for r in self.records if r[0] == event.value) >= count, within
            )
        assert reached, f"timed out waiting for {count} x {event.value}: {self.records}"


def noop(*_args: Any, **_kwargs: Any) -> None:
    """A picklable do-nothing handler."""
