"""Listeners hear a run end before anything that run's end makes start."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

from quiv import AsyncQuiv, Event, Job, Quiv, Task

JOB_EVENTS = (Event.JOB_STARTED, Event.JOB_COMPLETED, Event.JOB_FAILED, Event.JOB_CANCELLED)
TRIGGERS = ["run_task_immediately", "pause_then_resume"]


class _JobLog:
    """Records ``(event, job id)`` for every job event, thread-safely."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self._condition = threading.Condition()

    def listener(self, event: Event, task: Task, job: Job) -> None:
        with self._condition:
            self.entries.append((event.value, job.id))
            self._condition.notify_all()

    def wait_for(self, count: int, within: float = 5) -> list[tuple[str, str]]:
        with self._condition:
            reached = self._condition.wait_for(lambda: len(self.entries) >= count, within)
            assert reached, f"timed out at {self.entries}"
            return list(self.entries)


def _expected(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    first, second = entries[0][1], entries[2][1]
    assert first != second
    return [
        ("job_started", first),
        ("job_completed", first),
        ("job_started", second),
        ("job_completed", second),
    ]


def _gated_handler(gate: threading.Event, started: threading.Event) -> Any:
    """The first run holds until ``gate`` opens; later runs return at once."""
    runs = 0

    def handler() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            started.set()
            assert gate.wait(5)

    return handler


@pytest.mark.parametrize("trigger", TRIGGERS)
async def test_async_run_made_due_by_a_running_one_starts_after_its_end(trigger: str) -> None:
    log, gate, started = _JobLog(), threading.Event(), threading.Event()
    async with AsyncQuiv() as scheduler:
        for event in JOB_EVENTS:
            await scheduler.add_listener(event, log.listener)
        tid = await scheduler.add_task("t", _gated_handler(gate, started), interval=3600)
        assert await anyio.to_thread.run_sync(started.wait, 5)
        if trigger == "run_task_immediately":
            await scheduler.run_task_immediately(tid)
        else:
            await scheduler.pause_task(tid)
            await scheduler.resume_task(tid, 0)
        gate.set()
        entries = await anyio.to_thread.run_sync(log.wait_for, 4)
    assert entries == _expected(entries)
    assert log.entries == entries  # nothing else followed before shutdown


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_sync_run_made_due_by_a_running_one_starts_after_its_end(trigger: str) -> None:
    log, gate, started = _JobLog(), threading.Event(), threading.Event()
    with Quiv() as scheduler:
        for event in JOB_EVENTS:
            scheduler.add_listener(event, log.listener)
        tid = scheduler.add_task("t", _gated_handler(gate, started), interval=3600)
        assert started.wait(5)
        if trigger == "run_task_immediately":
            scheduler.run_task_immediately(tid)
        else:
            scheduler.pause_task(tid)
            scheduler.resume_task(tid, 0)
        gate.set()
        entries = log.wait_for(4)
    assert entries == _expected(entries)
    assert log.entries == entries  # nothing else followed before shutdown


async def test_a_queued_job_starts_after_the_end_that_freed_its_slot() -> None:
    log, gate, started = _JobLog(), threading.Event(), threading.Event()
    async with AsyncQuiv(pool_size=1) as scheduler:
        for event in JOB_EVENTS:
            await scheduler.add_listener(event, log.listener)
        await scheduler.add_task("a", _gated_handler(gate, started), interval=3600)
        assert await anyio.to_thread.run_sync(started.wait, 5)
        await scheduler.add_task("b", lambda: None, interval=3600)  # waits for the slot
        gate.set()
        entries = await anyio.to_thread.run_sync(log.wait_for, 4)
    assert entries == _expected(entries)
