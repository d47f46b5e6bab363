"""add_progress_listener: every job's progress, in order with its events, on both facades."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from quiv import AsyncQuiv, ConfigurationError, Event, Job, Quiv, Task


async def reporting(_progress_hook: Callable[..., None]) -> None:
    _progress_hook("positional", step=1)
    await anyio.lowlevel.checkpoint()
    _progress_hook(step=2)


def reporting_sync(_progress_hook: Callable[..., None]) -> None:
    _progress_hook(step=1)
    _progress_hook(step=2)


@pytest.mark.parametrize("handler", [reporting, reporting_sync], ids=["async", "sync"])
async def test_progress_listeners_hear_every_job_between_its_start_and_end(
    handler: Callable[..., Any],
) -> None:
    heard: list[tuple[str, ...]] = []
    done = anyio.Event()
    own: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def on_event(event: Event, task: Task, job: Job) -> None:
        heard.append((event.value, job.status.value))
        if event is Event.JOB_COMPLETED:
            done.set()

    def on_progress(task: Task, job: Job, payload: dict[str, Any]) -> None:
        heard.append(("progress", job.status.value, task.task_name, repr(payload)))

    async with AsyncQuiv() as scheduler:
        await scheduler.add_listener(Event.JOB_STARTED, on_event)
        await scheduler.add_listener(Event.JOB_COMPLETED, on_event)
        await scheduler.add_progress_listener(on_progress)
        await scheduler.add_task(
            "r",
            handler,
            interval=3600,
            progress_callback=lambda *a, **kw: own.append((a, kw)),
        )
        with anyio.fail_after(5):
            await done.wait()
    assert heard == [
        ("job_started", "running"),
        ("progress", "running", "r", "{'step': 1}"),
        ("progress", "running", "r", "{'step': 2}"),
        ("job_completed", "completed"),
    ]
    # The task's own callback still gets everything, positional arguments included.
    assert [kw for _, kw in own] == [{"step": 1}, {"step": 2}]


def test_the_sync_facade_adds_and_removes_progress_listeners() -> None:
    heard: list[dict[str, Any]] = []
    finished = threading.Event()

    def on_progress(task: Task, job: Job, payload: dict[str, Any]) -> None:
        heard.append(payload)

    with Quiv() as scheduler:
        scheduler.add_listener(Event.JOB_COMPLETED, lambda *_: finished.set())
        scheduler.add_progress_listener(on_progress)
        task_id = scheduler.add_task("r", reporting_sync, interval=3600)
        assert finished.wait(5)
        assert heard == [{"step": 1}, {"step": 2}]
        scheduler.remove_progress_listener(on_progress)
        scheduler.remove_progress_listener(on_progress)  # unknown now: ignored
        finished.clear()
        scheduler.run_task_immediately(task_id)
        assert finished.wait(5)
    assert heard == [{"step": 1}, {"step": 2}]


async def test_a_listener_added_while_a_job_runs_hears_the_rest_of_it() -> None:
    go_on, halfway = anyio.Event(), anyio.Event()
    heard: list[dict[str, Any]] = []
    done = anyio.Event()

    async def two_halves(_progress_hook: Callable[..., None]) -> None:
        _progress_hook(half=1)
        halfway.set()
        await go_on.wait()
        _progress_hook(half=2)

    async with AsyncQuiv() as scheduler:
        await scheduler.add_listener(Event.JOB_COMPLETED, lambda *_: done.set())
        await scheduler.add_task("h", two_halves, interval=3600)
        with anyio.fail_after(5):
            await halfway.wait()
        await scheduler.add_progress_listener(lambda task, job, payload: heard.append(payload))
        go_on.set()
        with anyio.fail_after(5):
            await done.wait()
    assert heard == [{"half": 2}]


async def test_add_progress_listener_refuses_what_is_not_callable() -> None:
    async with AsyncQuiv() as scheduler:
        with pytest.raises(ConfigurationError, match="callable"):
            await scheduler.add_progress_listener("nope")  # type: ignore[arg-type]
