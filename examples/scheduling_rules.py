"""The scheduling rules, observed on a virtual clock.

Each function builds a tiny scenario, runs it against a
:class:`quiv.VirtualClock` and returns what happened, so the timelines drawn in
the documentation are checked by a test rather than asserted by prose::

    python examples/scheduling_rules.py

A handler "takes" virtual time by advancing the clock itself; the driver then
moves the clock one virtual second at a time and lets the scheduler react
(``anyio.wait_all_tasks_blocked``) after each step.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from quiv import AsyncQuiv, Event, Job, Task, VirtualClock


# --8<-- [start:cadence]
async def start_times(
    fixed_interval: bool, durations: Sequence[float], interval: float = 10, until: float = 60
) -> list[float]:
    """When each run starts, if run ``n`` takes ``durations[n]`` seconds (then 1 s each)."""
    clock = VirtualClock()
    starts: list[float] = []

    async def work() -> None:
        starts.append(clock.monotonic())
        run = len(starts) - 1
        clock.advance(durations[run] if run < len(durations) else 1)  # "takes" that long

    async with AsyncQuiv(clock=clock) as scheduler:
        await scheduler.add_task("work", work, interval=interval, fixed_interval=fixed_interval)
        await anyio.wait_all_tasks_blocked()
        while clock.monotonic() < until:
            clock.advance(1)
            await anyio.wait_all_tasks_blocked()
    return starts


# --8<-- [end:cadence]


# --8<-- [start:run_now]
async def run_now_while_running() -> list[str]:
    """Two run-now calls during a run queue exactly one extra run, right after it."""
    clock = VirtualClock()
    release = anyio.Event()
    log: list[str] = []
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        log.append(f"run {runs} starts at {clock.monotonic():g}s")
        await release.wait()  # run 1 holds here until released; later runs pass through

    async def on_job(event: Event, task: Task, job: Job) -> None:
        log.append(str(event))

    async with AsyncQuiv(clock=clock) as scheduler:
        await scheduler.add_listener(Event.JOB_COMPLETED, on_job)
        task_id = await scheduler.add_task("work", work, interval=60)
        await anyio.wait_all_tasks_blocked()  # run 1 is in progress
        for _ in range(2):
            log.append(f"run_task_immediately -> {await scheduler.run_task_immediately(task_id)}")
        release.set()
        await anyio.wait_all_tasks_blocked()  # run 1 ends, the extra run starts and ends
        clock.advance(59)
        await anyio.wait_all_tasks_blocked()  # nothing else is due before 60 s
        log.append(f"next run at {(await scheduler.get_task(task_id)).next_run_at:%H:%M:%S}")
    return log


# --8<-- [end:run_now]


# --8<-- [start:pause_queued]
async def pause_cancels_a_waiting_job() -> list[str]:
    """With the pool full, a due job waits; pausing its task cancels it."""
    release = anyio.Event()
    log: list[str] = []

    async def hog() -> None:
        await release.wait()

    async def report() -> None:
        log.append("report ran")  # never happens

    async def on_job(event: Event, task: Task, job: Job) -> None:
        log.append(f"{event}: {task.task_name} ({job.error_message or job.status})")

    async with AsyncQuiv(pool_size=1) as scheduler:
        for event in (Event.JOB_STARTED, Event.JOB_COMPLETED, Event.JOB_CANCELLED):
            await scheduler.add_listener(event, on_job)
        await scheduler.add_task("hog", hog, interval=60)
        await anyio.wait_all_tasks_blocked()
        report_id = await scheduler.add_task("report", report, interval=60)
        await anyio.wait_all_tasks_blocked()
        waiting = [job.task_name for job in await scheduler.get_all_jobs("scheduled")]
        log.append(f"waiting for a pool slot: {waiting}")
        await scheduler.pause_task(report_id)
        release.set()
        await anyio.wait_all_tasks_blocked()
    return log


# --8<-- [end:pause_queued]


async def main() -> None:
    print("fixed_interval=True: ", await start_times(True, [3, 25]))
    print("fixed_interval=False:", await start_times(False, [3, 25]))
    for line in await run_now_while_running():
        print(line)
    for line in await pause_cancels_a_waiting_job():
        print(line)


if __name__ == "__main__":
    anyio.run(main)
