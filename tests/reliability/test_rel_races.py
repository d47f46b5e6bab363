"""Concurrent callers hammering the same tasks while their jobs run.

Threads (``Quiv``) or tasks (``AsyncQuiv``) add, pause, resume, run-now, cancel
and remove the same few tasks at random for about a second. Asserted:

* only documented exceptions escape: ``TaskNotFoundError`` (incl.
  ``HandlerNotRegisteredError``) for a task another caller removed or a run-once
  task that finished, ``TaskNotScheduledError`` for a run-once task whose run began;
* no task ever runs two jobs at once (handlers count themselves under a lock);
* every started job ends exactly once (listener counts), jobs that end without
  starting were cancelled while queued, and after quiescence and after shutdown
  no job or task is left ``running``.

Seeds are fixed, so a failure can be replayed; thread scheduling still varies.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
from rel_support import (
    DEADLINE,
    EventLog,
    assert_nothing_running,
    eventually,
    stop_requested,
    wait_until,
)

from quiv import (
    AsyncQuiv,
    Quiv,
    QuivError,
    SchedulerClosedError,
    SchedulerStateError,
    TaskNotFoundError,
    TaskNotScheduledError,
)

DOCUMENTED = (TaskNotFoundError, TaskNotScheduledError)
STRESS_SECONDS = 1.0
SLOTS = 6


class Concurrency:
    """Per-task running counters, filled in by the handlers themselves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = defaultdict(int)
        self.violations: list[str] = []
        self.runs = 0

    def enter(self, token: str) -> None:
        with self._lock:
            self._running[token] += 1
            self.runs += 1
            if self._running[token] > 1:
                self.violations.append(token)

    def leave(self, token: str) -> None:
        with self._lock:
            self._running[token] -= 1


CONCURRENCY = Concurrency()


def sync_handler(token: str, pause: float, _stop_event: threading.Event) -> None:
    CONCURRENCY.enter(token)
    try:
        _stop_event.wait(pause)
    finally:
        CONCURRENCY.leave(token)


async def async_handler(token: str, pause: float, _stop_event: threading.Event) -> None:
    CONCURRENCY.enter(token)
    try:
        await stop_requested(_stop_event, within=pause)
    finally:
        CONCURRENCY.leave(token)


class Slots:
    """The few task ids the callers fight over; a slot is empty after a removal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[str | None] = [None] * SLOTS
        self._tokens = 0

    def pick(self, rng: random.Random) -> tuple[int, str | None]:
        index = rng.randrange(SLOTS)
        with self._lock:
            return index, self._ids[index]

    def token(self) -> str:
        with self._lock:
            self._tokens += 1
            return f"token-{self._tokens}"

    def fill(self, index: int, task_id: str) -> str | None:
        """Put ``task_id`` in the slot; return the id it replaced (to remove), if any."""
        with self._lock:
            previous, self._ids[index] = self._ids[index], task_id
            return previous

    def clear(self, index: int, task_id: str) -> None:
        with self._lock:
            if self._ids[index] == task_id:
                self._ids[index] = None

    def all(self) -> list[str]:
        with self._lock:
            return [i for i in self._ids if i is not None]


def _running_job_ids(log: EventLog) -> list[str]:
    finals = log.final_by_job()
    return [job_id for job_id in log.started_ids() if job_id not in finals]


def _add_options(rng: random.Random, token: str) -> dict[str, Any]:
    return {
        "interval": rng.choice([0.005, 0.01, 0.03]),
        "delay": rng.choice([0, 0, 0.01]),
        "run_once": rng.random() < 0.15,
        "fixed_interval": rng.random() < 0.5,
        "args": (token, rng.choice([0.0, 0.002, 0.01])),
    }


def _operation(rng: random.Random) -> str:
    return rng.choices(
        ["add", "pause", "resume", "run", "cancel", "remove", "read"],
        weights=[3, 3, 3, 3, 2, 1, 2],
    )[0]


# -- Quiv: threads ------------------------------------------------------------------------


def _hammer_sync(
    scheduler: Quiv,
    slots: Slots,
    log: EventLog,
    seed: int,
    until: float,
    unexpected: list[BaseException],
) -> None:
    rng = random.Random(seed)
    try:
        while time.monotonic() < until:
            index, task_id = slots.pick(rng)
            op = _operation(rng)
            try:
                if op == "add" or task_id is None:
                    token = slots.token()
                    handler = rng.choice([sync_handler, async_handler])
                    new = scheduler.add_task(token, handler, **_add_options(rng, token))
                    replaced = slots.fill(index, new)
                    if replaced is not None:
                        scheduler.remove_task(replaced)
                elif op == "pause":
                    scheduler.pause_task(task_id)
                elif op == "resume":
                    scheduler.resume_task(task_id, delay=rng.choice([0, 0, 1]))
                elif op == "run":
                    assert scheduler.run_task_immediately(task_id) == 1
                elif op == "cancel":
                    running = _running_job_ids(log)
                    if running:
                        scheduler.cancel_job(rng.choice(running))
                elif op == "remove":
                    scheduler.remove_task(task_id)
                    slots.clear(index, task_id)
                else:
                    scheduler.get_all_tasks(include_run_once=True)
                    scheduler.get_all_jobs("running")
                    scheduler.get_task(task_id)
            except DOCUMENTED:
                if task_id is not None:
                    slots.clear(index, task_id)
    except BaseException as exc:
        unexpected.append(exc)


def test_sync_facade_threads_stress() -> None:
    log = EventLog()
    slots = Slots()
    unexpected: list[BaseException] = []
    violations_before = len(CONCURRENCY.violations)
    runs_before = CONCURRENCY.runs
    with Quiv(pool_size=3, shutdown_timeout=DEADLINE) as scheduler:
        log.attach_sync(scheduler)
        until = time.monotonic() + STRESS_SECONDS
        threads = [
            threading.Thread(
                target=_hammer_sync, args=(scheduler, slots, log, seed, until, unexpected)
            )
            for seed in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(STRESS_SECONDS + DEADLINE)
            assert not thread.is_alive(), "a caller thread is stuck"
        assert unexpected == [], unexpected
        # Quiescence: remove what is left, then nothing may be running.
        for task_id in scheduler.get_all_tasks(include_run_once=True):
            try:
                scheduler.remove_task(task_id.id)
            except TaskNotFoundError:
                pass  # a run-once task that just finished
        wait_until(lambda: scheduler.get_all_jobs("running") == [], what="no running job")
        wait_until(lambda: not _running_job_ids(log), what="final events of started jobs")
        assert scheduler.get_all_jobs("scheduled") == []
        log.assert_lifecycles_consistent()
    log.assert_lifecycles_consistent()
    assert CONCURRENCY.violations[violations_before:] == []
    assert CONCURRENCY.runs - runs_before > 20, "the stress test ran too few jobs to mean much"
    assert len(log.started_ids()) == CONCURRENCY.runs - runs_before


# -- AsyncQuiv: tasks -----------------------------------------------------------------------


async def _hammer_async(
    scheduler: AsyncQuiv,
    slots: Slots,
    log: EventLog,
    seed: int,
    until: float,
    unexpected: list[BaseException],
) -> None:
    rng = random.Random(seed)
    try:
        while time.monotonic() < until:
            index, task_id = slots.pick(rng)
            op = _operation(rng)
            try:
                if op == "add" or task_id is None:
                    token = slots.token()
                    handler = rng.choice([sync_handler, async_handler])
                    new = await scheduler.add_task(token, handler, **_add_options(rng, token))
                    replaced = slots.fill(index, new)
                    if replaced is not None:
                        await scheduler.remove_task(replaced)
                elif op == "pause":
                    await scheduler.pause_task(task_id)
                elif op == "resume":
                    await scheduler.resume_task(task_id, delay=rng.choice([0, 0, 1]))
                elif op == "run":
                    assert await scheduler.run_task_immediately(task_id) == 1
                elif op == "cancel":
                    running = _running_job_ids(log)
                    if running:
                        await scheduler.cancel_job(rng.choice(running))
                elif op == "remove":
                    await scheduler.remove_task(task_id)
                    slots.clear(index, task_id)
                else:
                    await scheduler.get_all_tasks(include_run_once=True)
                    await scheduler.get_all_jobs("running")
                    await scheduler.get_task(task_id)
            except DOCUMENTED:
                if task_id is not None:
                    slots.clear(index, task_id)
            await anyio.sleep(rng.choice([0, 0, 0.001]))
    except BaseException as exc:
        unexpected.append(exc)


async def test_async_core_concurrent_tasks_stress() -> None:
    log = EventLog()
    slots = Slots()
    unexpected: list[BaseException] = []
    violations_before = len(CONCURRENCY.violations)
    runs_before = CONCURRENCY.runs
    async with AsyncQuiv(pool_size=3, shutdown_timeout=DEADLINE) as scheduler:
        await log.attach_async(scheduler)
        until = time.monotonic() + STRESS_SECONDS
        with anyio.fail_after(STRESS_SECONDS + DEADLINE):
            async with anyio.create_task_group() as group:
                for seed in range(6):
                    group.start_soon(_hammer_async, scheduler, slots, log, seed, until, unexpected)
        assert unexpected == [], unexpected
        for task in await scheduler.get_all_tasks(include_run_once=True):
            try:
                await scheduler.remove_task(task.id)
            except TaskNotFoundError:
                pass
        await assert_nothing_running(scheduler)
        await eventually(lambda: not _running_job_ids(log))
        assert await scheduler.get_all_jobs("scheduled") == []
        log.assert_lifecycles_consistent()
    log.assert_lifecycles_consistent()
    assert CONCURRENCY.violations[violations_before:] == []
    assert CONCURRENCY.runs - runs_before > 20
    assert len(log.started_ids()) == CONCURRENCY.runs - runs_before


# -- calls racing shutdown ----------------------------------------------------------------------

CLOSING_ERRORS = (SchedulerClosedError, SchedulerStateError)


def _call_across_shutdown(
    calls: list[Callable[[], Any]],
    seed: int,
    made: list[int],
    shut_down: threading.Event,
    unexpected: list[BaseException],
) -> None:
    """Keep calling before, during and after shutdown, until told it has returned.

    Before: calls succeed (or raise a QuivError such as TaskNotFoundError). During
    and after: SchedulerStateError / SchedulerClosedError. Anything else is a bug.
    """
    rng = random.Random(seed)
    deadline = time.monotonic() + DEADLINE
    after = 0
    while time.monotonic() < deadline and after < 20:
        if shut_down.is_set():
            after += 1
        try:
            rng.choice(calls)()
        except QuivError:
            pass  # closing errors, or the task another call just removed
        except BaseException as exc:
            unexpected.append(exc)
            return
        made.append(1)


def _sync_round(round_number: int) -> None:
    unexpected: list[BaseException] = []
    made: list[int] = []
    shut_down = threading.Event()
    scheduler = Quiv(pool_size=2, shutdown_timeout=1)
    scheduler.start()
    tid = scheduler.add_task("t", sync_handler, interval=0.005, args=("race", 0.001))
    calls: list[Callable[[], Any]] = [
        lambda: scheduler.get_all_tasks(),
        lambda: scheduler.get_all_jobs(),
        lambda: scheduler.get_task(tid),
        lambda: scheduler.pause_task(tid),
        lambda: scheduler.resume_task(tid),
        lambda: scheduler.run_task_immediately(tid),
        lambda: scheduler.add_task("more", sync_handler, 0.01, args=("race-2", 0.0)),
    ]
    threads = [
        threading.Thread(
            target=_call_across_shutdown, args=(calls, seed, made, shut_down, unexpected)
        )
        for seed in range(3)
    ]
    for thread in threads:
        thread.start()
    target = 20 * (round_number + 1)  # shut down at a different point each round
    wait_until(lambda: len(made) >= target, what="calls before shutdown")
    scheduler.shutdown()
    shut_down.set()
    for thread in threads:
        thread.join(DEADLINE)
        assert not thread.is_alive(), "a caller hung across shutdown"
    assert unexpected == [], f"round {round_number}: {unexpected!r}"


def test_sync_facade_calls_racing_shutdown() -> None:
    """Callers in other threads see SchedulerStateError/SchedulerClosedError, nothing else."""
    for round_number in range(8):
        _sync_round(round_number)


async def _async_round() -> None:
    some_id = "00000000-0000-0000-0000-000000000000"
    unexpected: list[BaseException] = []
    made: list[int] = []
    scheduler = AsyncQuiv(pool_size=2, shutdown_timeout=1)

    async def caller(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            made.append(1)
            try:
                if rng.random() < 0.5:
                    await scheduler.get_all_tasks()
                elif rng.random() < 0.5:
                    await scheduler.add_task("more", async_handler, 0.01, args=("a", 0.0))
                else:
                    await scheduler.pause_task(some_id)
            except CLOSING_ERRORS:
                return
            except TaskNotFoundError:
                pass
            except BaseException as exc:
                unexpected.append(exc)
                return
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group, scheduler:
            await scheduler.add_task("t", async_handler, 0.005, args=("b", 0.001))
            for seed in range(3):
                group.start_soon(caller, seed)
            await eventually(lambda: len(made) >= 30)
    assert unexpected == [], unexpected


async def test_async_core_calls_racing_shutdown() -> None:
    """Tasks calling while the scheduler exits see only the closing errors."""
    for _ in range(4):
        await _async_round()
