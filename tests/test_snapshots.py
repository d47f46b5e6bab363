"""Task snapshots made ahead of reads: new repeating tasks, and read ones after each change."""

from __future__ import annotations

import anyio
import pytest

from _support import noop
from quiv import AsyncQuiv, TaskStatus, _snapshots


async def test_snapshots_are_made_ahead_for_new_and_read_tasks_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_snapshots, "SNAPSHOT_DELAY", 0)
    async with AsyncQuiv() as scheduler:
        registry = scheduler._engine.registry
        idle = await scheduler.add_task("idle", noop, 60, delay=60)
        once = await scheduler.add_task("once", noop, 60, delay=60, run_once=True)
        await anyio.wait_all_tasks_blocked()
        assert registry.tasks[idle].snapshot is not None  # a new repeating task: made ahead
        assert registry.tasks[once].snapshot is None  # run-once: not ahead of time

        await scheduler.pause_task(idle)
        await anyio.wait_all_tasks_blocked()
        assert registry.tasks[idle].snapshot is None  # nobody read it: not made again

        assert (await scheduler.get_task(idle)).status is TaskStatus.PAUSED
        await scheduler.resume_task(idle, delay=60)
        assert registry.tasks[idle].snapshot is None  # the change dropped it...
        await anyio.wait_all_tasks_blocked()
        made = registry.tasks[idle].snapshot
        assert made is not None and made.status is TaskStatus.ACTIVE  # ...and it was made again

        listed = await scheduler.get_all_tasks(include_run_once=True)
        assert [task.id for task in listed] == [idle, once]
        await scheduler.pause_task(once)
        await anyio.wait_all_tasks_blocked()
        again = registry.tasks[once].snapshot  # listed, so read: kept made as well
        assert again is not None and again.status is TaskStatus.PAUSED


async def test_task_values_come_in_column_order_for_every_kind_of_trigger() -> None:
    """Rows and snapshots are built from ``values()`` in ``TASK_COLUMNS`` order."""
    from datetime import datetime, timedelta, timezone

    from quiv import Cron
    from quiv._registry import TASK_COLUMNS

    async with AsyncQuiv() as scheduler:
        ids = [
            await scheduler.add_task("every", noop, 60, delay=60),
            await scheduler.add_task("cron", noop, trigger=Cron("0 * * * *")),
            await scheduler.add_task(
                "at", noop, run_at=datetime.now(timezone.utc) + timedelta(hours=1)
            ),
        ]
        for task_id in ids:
            entry = scheduler._engine.registry.tasks[task_id]
            assert tuple(entry.values()) == TASK_COLUMNS
            assert entry.values() == (await scheduler.get_task(task_id)).model_dump()
