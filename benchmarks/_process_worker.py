"""One process of an app sharing a durable store; run by W14 and the multi-process tests.

``python _shared_worker.py '<json>'`` adds the same tasks as every other
process (same ``task_id``s), runs from ``go`` until ``stop`` (wall times), and
exits. Each handler appends the wall time of its run to its task's own file,
so the tests count runs from the handlers' records, not from quiv's history.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from quiv import AsyncQuiv

#: The probe task's period: a probe job runs until another process cancels it.
PROBE_INTERVAL = 1.0


def _append(path: str, line: str) -> None:
    """One ``write`` of ``O_APPEND``: atomic, whatever the other processes write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def record(path: str) -> None:
    """Append this run's wall time and pid."""
    _append(path, f"{time.time():.6f} {os.getpid()}")


async def probe(path: str, _job_id: str, _stop_event: threading.Event) -> None:
    """Run until told to stop, looking every millisecond; note when the stop was seen."""
    while not _stop_event.is_set():  # noqa: ASYNC110 - a threading.Event, as handlers get
        await anyio.sleep(0.001)
    _append(path, f"stopped {_job_id} {time.time():.6f}")


async def cancel_others(scheduler: AsyncQuiv, path: str, until: float) -> None:
    """Cancel every probe job another process runs, as soon as the store shows it."""
    asked: set[str] = set()
    mine = f"/{os.getpid()}"
    while time.time() < until:
        for job in await scheduler.get_all_jobs("running"):
            if job.task_id != "probe" or job.id in asked or not job.worker:
                continue
            if job.worker.endswith(mine):
                continue  # ours: the other process cancels it, through the store
            asked.add(job.id)
            sent = time.time()
            await scheduler.cancel_job(job.id)
            _append(path, f"cancel {job.id} {sent:.6f}")
        await anyio.sleep(0.01)


def long_run(path: str, seconds: float) -> None:
    """Record the start, then keep running (a job to kill the process under)."""
    record(path)
    time.sleep(seconds)


async def main(options: dict[str, Any]) -> None:
    out = Path(options["out"])
    scheduler = AsyncQuiv(
        store=options["store"],
        pool_size=options.get("pool_size", 10),
        lease_seconds=options.get("lease_seconds", 30.0),
        lease_renewal=options.get("lease_renewal", 10.0),
        shutdown_timeout=0.5,
    )
    delay = max(0.0, options["go"] - time.time())
    for number in range(options["tasks"]):
        await scheduler.add_task(
            f"task-{number}",
            record,
            interval=options["interval"],
            delay=delay,
            args=(str(out / f"task-{number}.txt"),),
            task_id=f"task-{number}",
        )
    if options.get("long"):
        await scheduler.add_task(
            "long",
            long_run,
            interval=3600,
            delay=delay,
            args=(str(out / "long.txt"), options["long"]),
            task_id="long",
            max_retries=options.get("long_retries", 0),
            retry_backoff=0,
        )
    if options.get("probe"):
        await scheduler.add_task(
            "probe",
            probe,
            interval=PROBE_INTERVAL,
            delay=delay,
            args=(options["probe"],),
            task_id="probe",
        )
    async with scheduler:
        print("READY", os.getpid(), flush=True)
        if options.get("probe"):
            # The last cancel leaves time to arrive before the processes stop.
            await cancel_others(scheduler, options["probe"], options["stop"] - 1.5)
        await anyio.sleep(max(0.0, options["stop"] - time.time()))


def spawn(options: dict[str, Any], *, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """Start one process running this file with ``options`` (quiv from this tree's src)."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent / "src"), environment.get("PYTHONPATH", "")]
    )
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), json.dumps(options)],
        env=environment,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_runs(path: Path) -> list[tuple[float, int]]:
    """The (wall time, pid) of every run ``record`` noted in ``path``, in time order."""
    if not path.exists():
        return []
    return sorted(
        (float(when), int(pid))
        for when, pid in (line.split() for line in path.read_text().splitlines())
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    anyio.run(main, json.loads(sys.argv[1]), backend="asyncio")
