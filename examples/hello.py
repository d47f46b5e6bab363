"""A first quiv program: a task that reports its progress, run from a plain script."""

import threading
from collections.abc import Callable

from quiv import Event, Quiv


def count_down(start: int, _progress_hook: Callable[..., None]) -> None:
    for remaining in range(start, 0, -1):
        _progress_hook(remaining=remaining)  # quiv passes the hook in, by its name


finished = threading.Event()
with Quiv() as scheduler:  # the scheduler runs on a background thread
    scheduler.add_listener(Event.JOB_COMPLETED, lambda event, task, job: finished.set())
    scheduler.add_task(
        "count-down",
        count_down,
        interval=60,  # seconds between runs; the first run starts right away
        args=(3,),
        progress_callback=lambda **payload: print("remaining:", payload["remaining"]),
    )
    finished.wait(timeout=10)
# Leaving the block shut the scheduler down.
