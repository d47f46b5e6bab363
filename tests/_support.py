"""Helpers shared by the tests: event recorders that wait under a deadline, and
a driver that runs one scenario on either facade."""

from __future__ import annotations

import functools
import gc
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from quiv import AsyncQuiv, Event, Job, Quiv, Stats, Task, VirtualClock
from quiv._engine import Engine

Record = tuple[str, str, str | None]  # (event, task name, job status or None)


def _record(event: Event, task: Task, job: Job | None) -> Record:
    return (event.value, task.task_name, None if job is None else job.status.value)


class AsyncRecorder:
    """Listens to every event on an AsyncQuiv; lets a test await a condition."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.jobs: list[Job] = []
        self._changed = anyio.Event()

    async def attach(self, scheduler: AsyncQuiv | Driver) -> None:
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


FACADES = ["AsyncQuiv", "Quiv"]


class Driver:
    """Either facade behind one awaitable API, so a scenario is written once and run on both.

    ``Quiv``'s blocking methods are called from a worker thread, as an app's own
    threads call them. It is started from the test's loop, so its listeners run
    there and an :class:`AsyncRecorder` hears both facades alike.
    """

    def __init__(self, scheduler: AsyncQuiv | Quiv) -> None:
        self.scheduler = scheduler
        core = scheduler if isinstance(scheduler, AsyncQuiv) else scheduler._core
        self.engine: Engine = core._engine

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.scheduler, name)
        if isinstance(self.scheduler, AsyncQuiv):
            return await method(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))

    async def advance(self, seconds: float) -> None:
        """Move the scheduler's VirtualClock on the scheduler's loop (it is not thread-safe)."""
        clock = self.engine.clock
        assert isinstance(clock, VirtualClock)
        if isinstance(self.scheduler, AsyncQuiv):
            clock.advance(seconds)
            return
        portal = self.scheduler._portal
        assert portal is not None
        await anyio.to_thread.run_sync(portal.call, clock.advance, seconds)

    async def add_listener(self, event: Event, callback: Callable[..., None]) -> None:
        await self._call("add_listener", event, callback)

    async def add_task(self, name: str, func: Callable[..., Any], **options: Any) -> str:
        task_id: str = await self._call("add_task", name, func, **options)
        return task_id

    async def update_task(self, task_id: str, **changes: Any) -> Task:
        task: Task = await self._call("update_task", task_id, **changes)
        return task

    async def pause_task(self, task_id: str) -> None:
        await self._call("pause_task", task_id)

    async def resume_task(self, task_id: str, delay: float = 0) -> None:
        await self._call("resume_task", task_id, delay)

    async def remove_task(self, task_id: str) -> None:
        await self._call("remove_task", task_id)

    async def cancel_job(self, job_id: str, *, force: bool = False) -> bool:
        cancelled: bool = await self._call("cancel_job", job_id, force=force)
        return cancelled

    async def get_job(self, job_id: str) -> Job:
        job: Job = await self._call("get_job", job_id)
        return job

    async def get_all_jobs(self, **filters: Any) -> list[Job]:
        jobs: list[Job] = await self._call("get_all_jobs", **filters)
        return jobs

    async def stats(self) -> Stats:
        stats: Stats = await self._call("stats")
        return stats

    async def wait_for_job(self, job_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109 - the API's name
        job: Job = await self._call("wait_for_job", job_id, timeout)
        return job

    async def wait_for_task(self, task_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109 - the API's name
        job: Job = await self._call("wait_for_task", task_id, timeout)
        return job


@asynccontextmanager
async def driven(facade: str, **options: Any) -> AsyncIterator[Driver]:
    """A running scheduler of ``facade`` ("AsyncQuiv" or "Quiv"), closed on exit."""
    if facade == "AsyncQuiv":
        async with AsyncQuiv(**options) as scheduler:
            yield Driver(scheduler)
        return
    sync = Quiv(**options)
    sync.start()  # from the test's loop: listeners are delivered on it
    try:
        yield Driver(sync)
    finally:
        await anyio.to_thread.run_sync(sync.shutdown)


def open_database_files(path: Path) -> int:
    """How many descriptors of this process are open on the database file."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc")
    count = 0
    for fd in fds.iterdir():
        try:
            count += fd.readlink() == path
        except OSError:  # closed meanwhile
            pass
    return count


def read_from_short_lived_threads(path: Path, read: Callable[[], int], rounds: int) -> list[int]:
    """What ``read`` returns, called 5 times in each of 4 threads, ``rounds`` times over.

    Then waits until the threads' connections to the database at ``path`` are
    closed again (the threads have ended); fails if they stay open. SQLite keeps
    a closed connection's descriptor for the next one to reuse while another
    connection holds its locks: as many as were open at once, never one per thread.
    """
    files_before = open_database_files(path)
    results: list[int] = []

    def reader() -> None:
        results.extend(read() for _ in range(5))

    for _ in range(rounds):
        threads = [threading.Thread(target=reader) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    deadline = time.monotonic() + 10
    while open_database_files(path) > files_before + 4:
        assert time.monotonic() < deadline, "connections of ended threads left open"
        gc.collect()
        time.sleep(0.01)
    return results
