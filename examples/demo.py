"""A short guided tour of quiv, run by ``make demo``.

It uses the blocking facade ``Quiv`` from an ordinary script and, in about ten
seconds, shows:

* a sync handler on an interval (it runs in a worker thread);
* an async handler on an interval (it runs on the scheduler's event loop);
* a run-once job that reports progress to a callback;
* a long job that is cancelled while it runs, through ``cancel_job``.

Every line is stamped with the seconds since start and the thread that printed
it. Pass ``--seconds N`` (or set ``QUIV_DEMO_SECONDS``) to speed it up or slow it
down; every delay and interval scales with it. The script exits 1 if the tour
did not go as described, so its test can rely on the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

import anyio

from quiv import Event, Job, Quiv, Task

DEFAULT_SECONDS = 10.0


class Console:
    """Prints one line at a time, from any thread, with a time stamp."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def say(self, message: str) -> None:
        thread = threading.current_thread().name
        with self._lock:
            print(f"{self.elapsed():5.1f}s  [{thread:<12.12}]  {message}", flush=True)


console = Console()


# --8<-- [start:handlers]
def heartbeat(_job_id: str) -> None:
    """A plain function: quiv runs it in a worker thread."""
    console.say(f"heartbeat (job {_job_id[:8]})")


async def poll_feed(feed: str, pause: float) -> None:
    """A coroutine function: quiv awaits it on the scheduler's own loop."""
    await anyio.sleep(pause)  # stands in for an HTTP call
    console.say(f"polled the {feed!r} feed")


def build_report(pages: int, pause: float, _progress_hook: Any) -> None:
    """Reports each finished page; the callback turns that into a line."""
    for page in range(1, pages + 1):
        time.sleep(pause)  # stands in for real work
        _progress_hook(page=page, pages=pages)


def export_archive(pause: float, _stop_event: threading.Event) -> None:
    """Runs until asked to stop, checking its stop event between chunks."""
    chunks = 0
    while not _stop_event.wait(pause):
        chunks += 1
    console.say(f"export: stop requested after {chunks} chunk(s), cleaning up")


# --8<-- [end:handlers]


def show_progress(**payload: Any) -> None:
    console.say(f"report page {payload['page']}/{payload['pages']}")


def run_demo(seconds: float) -> int:
    """Run the tour for about ``seconds`` seconds; return the exit code."""
    scale = seconds / DEFAULT_SECONDS
    export_jobs: list[str] = []
    export_started = threading.Event()
    export_cancelled = threading.Event()
    report_done = threading.Event()

    def on_job_event(event: Event, task: Task, job: Job) -> None:
        if task.task_name not in ("report", "export"):
            return  # the interval tasks speak for themselves
        took = "" if job.duration_seconds is None else f" after {job.duration_seconds:.2f}s"
        console.say(f"{event}: {task.task_name} (job {job.id[:8]}){took}")
        if task.task_name == "export" and event is Event.JOB_STARTED:
            export_jobs.append(job.id)
            export_started.set()
        elif task.task_name == "export" and event is Event.JOB_CANCELLED:
            export_cancelled.set()
        elif task.task_name == "report" and event is Event.JOB_COMPLETED:
            report_done.set()

    console.say(f"starting quiv for about {seconds:g}s")
    # --8<-- [start:scheduler]
    with Quiv(pool_size=4) as scheduler:
        for event in (Event.JOB_STARTED, Event.JOB_COMPLETED, Event.JOB_CANCELLED):
            scheduler.add_listener(event, on_job_event)
        scheduler.add_task("heartbeat", heartbeat, interval=1.0 * scale)
        scheduler.add_task(
            "poll-feed", poll_feed, interval=2.0 * scale, kwargs={"feed": "news", "pause": 0.05}
        )
        scheduler.add_task(
            "report",
            build_report,
            interval=1.0,
            delay=1.0 * scale,
            run_once=True,
            kwargs={"pages": 5, "pause": 0.3 * scale},
            progress_callback=show_progress,
        )
        scheduler.add_task(
            "export",
            export_archive,
            interval=1.0,
            delay=3.0 * scale,
            run_once=True,
            kwargs={"pause": 0.1 * scale},
        )
        # --8<-- [end:scheduler]
        ok = export_started.wait(timeout=30)
        time.sleep(max(0.0, 6.0 * scale - console.elapsed()))
        if ok:
            # --8<-- [start:cancel]
            console.say(f"cancelling export (job {export_jobs[0][:8]})")
            accepted = scheduler.cancel_job(export_jobs[0])
            console.say(f"cancel_job returned {accepted}")
            # --8<-- [end:cancel]
            ok = accepted and export_cancelled.wait(timeout=30) and report_done.wait(timeout=30)
        time.sleep(max(0.0, seconds - console.elapsed()))
        counts = Counter(job.status.value for job in scheduler.get_all_jobs())
        console.say("jobs by status: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    console.say("scheduler shut down")
    if not ok:
        console.say("the tour did not go as planned")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("QUIV_DEMO_SECONDS", DEFAULT_SECONDS)),
        help="roughly how long the tour lasts (default: $QUIV_DEMO_SECONDS or 10)",
    )
    options = parser.parse_args(argv)
    if options.seconds <= 0:
        parser.error("--seconds must be greater than 0")
    return run_demo(options.seconds)


if __name__ == "__main__":
    sys.exit(main())
