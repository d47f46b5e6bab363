"""Quiv's writes from an ordinary thread: decided at once, applied on the loop in order.

A write whose result the caller can know (a new task's id, a refusal) returns
without waiting for the loop; the loop applies it later, through the bounded
inbox. These tests pin what that must not change: a thread's reads see its
own writes, each thread's writes keep their order, a burst is held back rather
than queued without bound, and nothing is lost.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import anyio.lowlevel
import pytest

from _support import noop
from quiv import Event, Job, JobStatus, Quiv, Task, TaskNotFoundError, TaskStatus, _engine
from quiv import _inbox as inbox_module
from quiv._inbox import Inbox

LONG = 3600
DEADLINE = 10.0


def test_a_read_after_a_write_in_the_same_thread_sees_it() -> None:
    with Quiv() as scheduler:
        for i in range(200):
            task_id = scheduler.add_task(f"t{i}", noop, interval=LONG, delay=LONG)
            assert scheduler.get_task(task_id).status is TaskStatus.ACTIVE
            scheduler.pause_task(task_id)
            assert scheduler.get_task(task_id).status is TaskStatus.PAUSED
            scheduler.resume_task(task_id, delay=LONG)
            assert scheduler.get_task(task_id).status is TaskStatus.ACTIVE
            scheduler.remove_task(task_id)
            with pytest.raises(TaskNotFoundError):
                scheduler.get_task(task_id)
        task_id = scheduler.add_task("last", noop, interval=LONG, delay=LONG)
        assert [task.id for task in scheduler.get_all_tasks()] == [task_id]


def test_a_write_sees_the_writes_before_it_still_queued() -> None:
    """pause/resume/remove right after add find the task; after remove they do not."""
    with Quiv() as scheduler:
        for i in range(200):
            task_id = scheduler.add_task(f"t{i}", noop, interval=LONG, delay=LONG)
            scheduler.pause_task(task_id)
            scheduler.resume_task(task_id, delay=LONG)
            scheduler.remove_task(task_id)
            with pytest.raises(TaskNotFoundError):
                scheduler.pause_task(task_id)
            with pytest.raises(TaskNotFoundError):
                scheduler.remove_task(task_id)
        assert scheduler.get_all_tasks() == []


def test_writes_from_two_threads_each_keep_their_order() -> None:
    rounds = 50
    events: dict[str, list[Event]] = defaultdict(list)
    lock = threading.Lock()

    def record(event: Event, task: Task) -> None:
        with lock:
            events[task.id].append(event)

    ids: dict[str, str] = {}
    with Quiv() as scheduler:
        for event in (Event.TASK_ADDED, Event.TASK_PAUSED, Event.TASK_RESUMED, Event.TASK_REMOVED):
            scheduler.add_listener(event, record)
        start = threading.Barrier(2)

        def writer(name: str) -> None:
            start.wait(DEADLINE)
            task_id = scheduler.add_task(name, noop, interval=LONG, delay=LONG)
            ids[name] = task_id
            for _ in range(rounds):
                scheduler.pause_task(task_id)
                scheduler.resume_task(task_id, delay=LONG)
            scheduler.remove_task(task_id)

        threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
        expected = [
            Event.TASK_ADDED,
            *[Event.TASK_PAUSED, Event.TASK_RESUMED] * rounds,
            Event.TASK_REMOVED,
        ]
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            with lock:
                if all(len(events[task_id]) >= len(expected) for task_id in ids.values()):
                    break
            time.sleep(0.01)
    assert sorted(ids) == ["a", "b"]
    for task_id in ids.values():
        assert events[task_id] == expected


def test_a_write_returns_while_the_loop_is_busy_and_is_applied_after() -> None:
    loop_busy = threading.Event()

    async def hog_the_loop() -> None:
        loop_busy.set()
        time.sleep(0.5)  # noqa: ASYNC251 - blocks the scheduler's loop on purpose

    with Quiv() as scheduler:
        task_id = scheduler.add_task("t", noop, interval=LONG, delay=LONG)
        scheduler.add_task("hog", hog_the_loop, interval=LONG)
        assert loop_busy.wait(DEADLINE)
        began = time.monotonic()
        scheduler.pause_task(task_id)
        added = scheduler.add_task("u", noop, interval=LONG, delay=LONG)
        took = time.monotonic() - began
        assert took < 0.25, f"the calls waited {took:.3f}s for the busy loop"
        assert scheduler.get_task(task_id).status is TaskStatus.PAUSED  # waits: applied
        assert scheduler.get_task(added).task_name == "u"


def test_inbox_holds_a_fast_producer_back_and_loses_nothing() -> None:
    limit, total = 8, 400
    ran: list[int] = []
    longest: list[int] = []

    async def main() -> None:
        inbox = Inbox(logging.getLogger("test"), limit=limit)
        all_ran = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(inbox.run)
            await anyio.lowlevel.checkpoint()  # let it adopt the loop

            def slow(i: int) -> None:
                time.sleep(0.0005)  # the consumer is slower than the producer
                ran.append(i)
                if len(ran) == total:
                    all_ran.set()

            def produce() -> None:
                for i in range(total):
                    assert inbox.submit(functools.partial(slow, i))
                    longest.append(len(inbox._queue))

            began = time.monotonic()
            await anyio.to_thread.run_sync(produce)
            produced = time.monotonic() - began
            with anyio.fail_after(DEADLINE):
                await all_ran.wait()
            group.cancel_scope.cancel()
        # Held back: producing took about as long as consuming all but the last batch.
        assert produced >= (total - limit) * 0.0005
        assert max(longest) <= limit

    anyio.run(main)
    assert ran == list(range(total))


def test_a_burst_of_add_task_is_held_back_by_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox_module, "INBOX_LIMIT", 16)
    loop_busy = threading.Event()

    async def hog_the_loop() -> None:
        loop_busy.set()
        time.sleep(0.3)  # noqa: ASYNC251 - blocks the scheduler's loop on purpose

    added: list[str] = []
    with Quiv() as scheduler:
        inbox = scheduler._core._engine.inbox
        scheduler.add_task("hog", hog_the_loop, interval=LONG)
        assert loop_busy.wait(DEADLINE)
        began = time.monotonic()
        longest = 0
        for i in range(200):
            added.append(scheduler.add_task(f"t{i}", noop, interval=LONG, delay=LONG))
            longest = max(longest, len(inbox._queue))
        took = time.monotonic() - began
        assert longest <= 16
        assert took >= 0.1, "the burst was not held back while the loop was busy"
        assert [task.id for task in scheduler.get_all_tasks()][1:] == added


@contextmanager
def _loop_held(scheduler: Quiv) -> Iterator[Callable[[], bool]]:
    """Block the scheduler's loop with a run-once async handler until the block
    ends; yields a check that the loop was still held (a watchdog lets it go
    after ``DEADLINE``, so a read that waits for the loop fails instead of hanging)."""
    loop_busy, release = threading.Event(), threading.Event()
    watchdog = threading.Timer(DEADLINE, release.set)

    async def hog_the_loop() -> None:
        loop_busy.set()
        release.wait()  # blocks the scheduler's loop on purpose

    # Run-once: get_all_tasks() leaves it out (its snapshot changed when it started).
    scheduler.add_task("hog", hog_the_loop, interval=LONG, run_once=True)
    assert loop_busy.wait(DEADLINE)
    watchdog.start()
    try:
        yield lambda: not release.is_set()
    finally:
        release.set()
        watchdog.cancel()


def test_get_job_of_an_ended_job_is_answered_while_the_loop_is_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ended job's record is final, so ``get_job`` reads it in the calling
    thread, from memory or from the store, without waiting for the loop."""
    monkeypatch.setattr(_engine, "HISTORY_WINDOW", 2)
    with Quiv() as scheduler:
        ended: list[str] = []
        done = threading.Event()

        def on_end(_event: Event, _task: Task, job: Job) -> None:
            ended.append(job.id)
            if len(ended) == 5:
                done.set()

        scheduler.add_listener(Event.JOB_COMPLETED, on_end)
        for i in range(5):
            scheduler.add_task(f"j{i}", noop, interval=LONG, run_once=True)
        assert done.wait(DEADLINE)
        registry = scheduler._core._engine.registry
        deadline = time.monotonic() + DEADLINE
        while ended[0] in registry.jobs and time.monotonic() < deadline:
            time.sleep(0.005)  # the writer commits, then memory lets the oldest go
        assert ended[0] not in registry.jobs and ended[-1] in registry.jobs
        wanted = list(ended)
        with _loop_held(scheduler) as still_held:
            jobs = [scheduler.get_job(job_id) for job_id in wanted]
            answered_first = still_held()
    assert answered_first, "get_job waited for the busy loop"
    assert [job.id for job in jobs] == wanted
    assert all(job.status is JobStatus.COMPLETED and job.ended_at for job in jobs)


def test_get_task_and_get_all_tasks_are_answered_while_the_loop_is_busy() -> None:
    """Snapshots of new repeating tasks are made ahead, so reads from other
    threads need not wait for the loop."""
    with Quiv() as scheduler:
        ids = [scheduler.add_task(f"t{i}", noop, interval=LONG, delay=LONG) for i in range(50)]
        registry = scheduler._core._engine.registry
        deadline = time.monotonic() + DEADLINE

        def made() -> bool:
            return all(
                task_id in registry.tasks and registry.tasks[task_id].snapshot is not None
                for task_id in ids
            )

        while not made() and time.monotonic() < deadline:
            time.sleep(0.001)  # the snapshots are made a few milliseconds after the adds
        assert made()
        with _loop_held(scheduler) as still_held:
            one = scheduler.get_task(ids[0])
            every = scheduler.get_all_tasks()
            answered_first = still_held()
    assert answered_first, "the reads waited for the busy loop"
    assert one.id == ids[0] and one.status is TaskStatus.ACTIVE
    assert [task.id for task in every] == ids
