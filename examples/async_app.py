"""quiv in an async program: ``async with AsyncQuiv() as scheduler:``.

The script refreshes a price board on a fixed cadence with an async handler,
pauses that task while a one-off sync export runs in a worker thread, then
resumes it. It waits for each step with listeners and ``anyio.Event``s, never
with sleeps, and prints what happened::

    python examples/async_app.py

:func:`serve_in_task_group` shows the other way in: an app that owns a task
group starts the scheduler with ``await task_group.start(scheduler.serve)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio

from quiv import AsyncQuiv, Event, Job, Task

PRICES = {"ACME": 101.5, "GLOBEX": 47.25, "INITECH": 12.0}


# --8<-- [start:handlers]
async def refresh_prices(symbols: list[str], _progress_hook: Callable[..., None]) -> None:
    """Async: runs on this program's event loop, next to everything else."""
    for symbol in symbols:
        await anyio.sleep(0.01)  # stands in for an HTTP request
        _progress_hook(symbol=symbol, price=PRICES[symbol])


def export_history(path: str, _stop_event: threading.Event) -> None:
    """Sync and blocking: quiv runs it in a worker thread, so the loop stays free."""
    for _ in range(3):
        if _stop_event.is_set():
            return
        time.sleep(0.02)  # stands in for writing a file


# --8<-- [end:handlers]


async def main(refreshes: int = 2, interval: float = 0.2) -> list[str]:
    """Run the scenario and return the lines it printed."""
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    # --8<-- [start:main]
    finished: dict[str, anyio.Event] = {"refresh": anyio.Event(), "export": anyio.Event()}
    completed = {"refresh": 0}

    async def on_finished(event: Event, task: Task, job: Job) -> None:
        say(f"{event}: {task.task_name}")
        if task.task_name == "refresh":
            completed["refresh"] += 1
            if completed["refresh"] == refreshes:
                finished["refresh"].set()
        elif task.task_name == "export":
            finished["export"].set()

    async def on_price(**payload: Any) -> None:
        say(f"  {payload['symbol']}: {payload['price']}")

    async with AsyncQuiv(pool_size=4) as scheduler:
        await scheduler.add_listener(Event.JOB_COMPLETED, on_finished)
        refresh_id = await scheduler.add_task(
            "refresh",
            refresh_prices,
            interval=interval,
            args=(sorted(PRICES),),
            progress_callback=on_price,
        )
        with anyio.fail_after(10):
            await finished["refresh"].wait()  # the first `refreshes` runs are done

        await scheduler.pause_task(refresh_id)
        say(f"refresh is {(await scheduler.get_task(refresh_id)).status}")
        await scheduler.add_task(
            "export", export_history, interval=1, run_once=True, args=("history.csv",)
        )
        with anyio.fail_after(10):
            await finished["export"].wait()

        finished["refresh"] = anyio.Event()
        completed["refresh"] = refreshes - 1  # wait for one more refresh
        await scheduler.resume_task(refresh_id)  # delay=0: runs again right away
        with anyio.fail_after(10):
            await finished["refresh"].wait()
        jobs = await scheduler.get_all_jobs("completed")
        say(f"{len(jobs)} jobs completed")
    # Leaving the block shut the scheduler down: jobs stopped, database deleted.
    # --8<-- [end:main]
    return lines


# --8<-- [start:serve]
async def serve_in_task_group() -> str:
    """Run the scheduler as one service among others in your own task group."""
    scheduler = AsyncQuiv()
    done = anyio.Event()
    statuses: list[str] = []

    async def on_completed(event: Event, task: Task, job: Job) -> None:
        statuses.append(job.status.value)
        done.set()

    async with anyio.create_task_group() as task_group:
        await task_group.start(scheduler.serve)  # returns once calls are accepted
        await scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        await scheduler.add_task("hello", refresh_prices, interval=60, args=(["ACME"],))
        with anyio.fail_after(10):
            await done.wait()
        task_group.cancel_scope.cancel()  # shuts the scheduler down gracefully
    return statuses[0]


# --8<-- [end:serve]


if __name__ == "__main__":
    anyio.run(main)
    print("serve_in_task_group:", anyio.run(serve_in_task_group))
