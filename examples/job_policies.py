"""Job policies: retries with backoff, timeouts, force cancel, waiting and stats.

Each function runs one small scenario and returns what happened, so the
documentation's claims are checked by ``tests/test_examples.py``::

    python examples/job_policies.py
"""

from __future__ import annotations

import subprocess
import sys
import threading

import anyio

import quiv
from quiv import AsyncQuiv, Job, JobStatus, Quiv


# --8<-- [start:retries]
class FlakyUpstream:
    """Fails twice, then answers: a service coming back up."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls < 3:
            raise ConnectionError(f"upstream not ready (call {self.calls})")


async def retried() -> list[Job]:
    async with AsyncQuiv() as scheduler:
        task_id = await scheduler.add_task(
            "sync-upstream",
            FlakyUpstream(),
            interval=3600,
            max_retries=3,  # up to three more attempts after a failure...
            retry_backoff=0.01,  # ...waiting up to 0.01 s, 0.02 s, 0.04 s (full jitter)
            retry_backoff_max=1.0,
        )
        first = await scheduler.wait_for_task(task_id, timeout=5)  # attempt 1 failed
        while True:  # follow the retries: each attempt is its own job
            jobs = await scheduler.get_all_jobs(task_id=task_id)
            last = await scheduler.wait_for_job(jobs[-1].id, timeout=5)
            if last.status is not JobStatus.FAILED or last.attempt > 3:
                break
        assert first.attempt == 1
        return await scheduler.get_all_jobs(task_id=task_id)


# --8<-- [end:retries]


# --8<-- [start:timeout]
async def timed_out() -> Job:
    async def stuck() -> None:
        await anyio.sleep_forever()  # never looks at a stop event

    # cancel_grace: how long a timed-out async handler may take to honour its
    # stop event before it is cancelled for real.
    async with AsyncQuiv(cancel_grace=0.05) as scheduler:
        task_id = await scheduler.add_task("stuck", stuck, interval=3600, timeout=0.1)
        return await scheduler.wait_for_task(task_id, timeout=5)


# --8<-- [end:timeout]


# --8<-- [start:force]
async def forced() -> Job:
    started = anyio.Event()

    async def oblivious() -> None:
        started.set()
        await anyio.sleep_forever()

    async with AsyncQuiv() as scheduler:
        task_id = await scheduler.add_task("oblivious", oblivious, interval=3600)
        await started.wait()
        (job,) = await scheduler.get_all_jobs(task_id=task_id, status="running")
        await scheduler.cancel_job(job.id, force=True)  # async handlers: cancelled at once
        return await scheduler.wait_for_job(job.id, timeout=5)


# --8<-- [end:force]


# --8<-- [start:subprocess]
def stop_a_child_process() -> Job:
    started = threading.Event()

    def convert(_stop_event: threading.Event) -> None:
        started.set()
        # cancel_job, a timeout or shutdown set the stop event: the child is
        # terminated (then killed after kill_grace) and the job ends cancelled.
        quiv.run_subprocess(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            stop_event=_stop_event,
            kill_grace=2.0,
            stdout=subprocess.DEVNULL,
        )

    with Quiv() as scheduler:  # wait_for_job blocks this thread, never the loop
        scheduler.add_task("convert", convert, interval=3600)
        started.wait(5)
        (job,) = scheduler.get_all_jobs(status="running")
        scheduler.cancel_job(job.id)
        return scheduler.wait_for_job(job.id, timeout=5)


# --8<-- [end:subprocess]


# --8<-- [start:call-on-main]
def report_from_a_thread() -> list[str]:
    messages: list[str] = []

    async def publish(text: str) -> str:  # runs on the main loop
        messages.append(text)
        return "sent"

    def crunch() -> None:  # a sync handler, in a worker thread
        answer = quiv.call_on_main(publish, "half way")
        messages.append(answer)

    with Quiv() as scheduler:
        # A delay, so that this thread waits before the job can end.
        task_id = scheduler.add_task("crunch", crunch, interval=3600, delay=0.2)
        scheduler.wait_for_task(task_id, timeout=5)
    return messages


# --8<-- [end:call-on-main]


# --8<-- [start:stats]
def busy_stats() -> quiv.Stats:
    release = threading.Event()

    def hold() -> None:
        release.wait(5)

    with Quiv(pool_size=2) as scheduler:
        for name in ("a", "b", "c"):
            scheduler.add_task(name, hold, interval=3600)
        while scheduler.stats().jobs_running < 2:
            release.wait(0.01)
        stats = scheduler.stats()  # 2 running, 1 queued for a slot
        release.set()
    return stats


# --8<-- [end:stats]


def main() -> None:
    print([(job.attempt, job.status.value) for job in anyio.run(retried)])
    job = anyio.run(timed_out)
    print(job.status.value, job.error_type, job.error_message)
    print(anyio.run(forced).error_message)
    # The sync facade from plain sync code: its main loop is its own private one.
    print(stop_a_child_process().status.value)
    print(report_from_a_thread())
    stats = busy_stats()
    print(stats.pool_in_use, stats.jobs_running, stats.jobs_queued)


if __name__ == "__main__":
    main()
