"""quiv next to other async libraries: ``sniffio`` installed, and trio.

With ``sniffio`` installed, anyio asks it which library runs the current task,
and it answers only inside a task: every anyio call quiv makes on behalf of
another thread (a facade call, a worker thread's report that starts the next
job) must run inside one. These tests only mean something with ``sniffio``
installed; CI runs the suite once with it (and trio) installed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from quiv import AsyncQuiv, Event, Job, JobStatus, Quiv, SchedulerStateError, Task

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 10.0


def _need_sniffio() -> None:
    pytest.importorskip("sniffio", reason="only sniffio makes anyio need a current task")


def test_readme_example_runs_with_sniffio() -> None:
    _need_sniffio()
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["remaining: 3", "remaining: 2", "remaining: 1"]
    assert "Error" not in done.stderr and "never awaited" not in done.stderr, done.stderr


def _sync_handler(_progress_hook: object) -> None:
    assert callable(_progress_hook)
    _progress_hook(step=1)


async def _async_handler() -> None:
    await anyio.lowlevel.checkpoint()


def test_sync_facade_round_trip_with_sniffio() -> None:
    """Sync and async jobs, one pool slot: the second sync job is started by the first
    one's report from its worker thread; calls come from this thread and a handler."""
    _need_sniffio()
    ended: list[tuple[str, JobStatus]] = []
    progress: list[dict[str, object]] = []
    all_done = threading.Event()
    seen_from_handler: list[Task] = []

    with Quiv(pool_size=1) as scheduler:

        def on_end(event: Event, task: Task, job: Job) -> None:
            ended.append((task.task_name, job.status))
            if len(ended) == 4:
                all_done.set()

        def calls_back() -> None:  # a facade call from a worker thread
            seen_from_handler.append(scheduler.get_task(recurring))

        scheduler.add_listener(Event.JOB_COMPLETED, on_end)
        scheduler.add_listener(Event.JOB_FAILED, on_end)
        recurring = scheduler.add_task("again", _async_handler, interval=60, delay=60)
        scheduler.add_task(
            "sync-1",
            _sync_handler,
            interval=60,
            run_once=True,
            progress_callback=lambda **payload: progress.append(payload),
        )
        scheduler.add_task("sync-2", calls_back, interval=60, run_once=True)
        scheduler.add_task("async", _async_handler, interval=60, run_once=True)
        scheduler.run_task_immediately(recurring)
        assert all_done.wait(DEADLINE), ended
        assert scheduler.get_task(recurring).task_name == "again"
    assert sorted(ended) == [
        ("again", JobStatus.COMPLETED),
        ("async", JobStatus.COMPLETED),
        ("sync-1", JobStatus.COMPLETED),
        ("sync-2", JobStatus.COMPLETED),
    ]
    assert progress == [{"step": 1}]
    assert [task.task_name for task in seen_from_handler] == ["again"]


async def test_async_core_round_trip_with_sniffio() -> None:
    """A worker thread's report (which starts the next queued job) runs in a task."""
    _need_sniffio()
    ended: list[str] = []
    all_done = anyio.Event()

    def on_end(event: Event, task: Task, job: Job) -> None:
        ended.append(task.task_name)
        if len(ended) == 4:
            all_done.set()

    async with AsyncQuiv(pool_size=1) as scheduler:
        await scheduler.add_listener(Event.JOB_COMPLETED, on_end)
        for name in ("a", "b", "c"):
            await scheduler.add_task(name, lambda: None, interval=60, run_once=True)
        await scheduler.add_task("d", _async_handler, interval=60, run_once=True)
        with anyio.fail_after(DEADLINE):
            await all_done.wait()
    assert ended == ["a", "b", "c", "d"]


# -- trio ------------------------------------------------------------------------------


def test_trio_is_refused_at_entry_and_nothing_is_started() -> None:
    pytest.importorskip("trio", reason="trio is not installed")
    scheduler = AsyncQuiv()
    errors: list[BaseException] = []

    async def enter() -> None:
        try:
            async with scheduler:
                pass
        except SchedulerStateError as exc:
            errors.append(exc)

    async def serve() -> None:
        try:
            await scheduler.serve()
        except SchedulerStateError as exc:
            errors.append(exc)

    async def lifespan() -> None:
        try:
            async with scheduler.lifespan(object()):
                pass
        except SchedulerStateError as exc:
            errors.append(exc)

    for entry in (enter, serve, lifespan):
        anyio.run(entry, backend="trio")
    assert len(errors) == 3
    for error in errors:
        assert "asyncio" in str(error) and "aiosqlite" in str(error), error

    # Refused before anything changed: the same scheduler still starts under asyncio.
    async def on_asyncio() -> str:
        async with scheduler:
            task_id = await scheduler.add_task("t", lambda: None, interval=60)
            return (await scheduler.get_task(task_id)).task_name

    assert anyio.run(on_asyncio) == "t"
