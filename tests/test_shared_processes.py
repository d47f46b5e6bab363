"""Several real processes sharing one SQLite store: each due run executed exactly once.

Every process adds the same tasks with the same ids; each handler appends the
wall time of its run to its task's file. The runs of one task must then fall
on one cadence, one run per due time: the k-th run is ``k`` intervals after the
first (give or take its own lateness), no ``k`` twice (a duplicate), none
skipped (a miss), counted within the span all processes were running.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from _stores_support import query

#: Real processes take most of their time waiting: CI runs these once (see .ci/run).
pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the worker lives in benchmarks/, beside src/
    sys.path.insert(0, str(ROOT))

from benchmarks._process_worker import read_runs, spawn  # noqa: E402

PROCESSES = 4
TASKS = 25
INTERVAL = 0.3
RUN_SECONDS = 4.0
#: Seconds the processes get to import quiv and add their tasks before ``go``.
START_UP = 3.0


def _occurrences(times: list[float], interval: float) -> list[int]:
    """The index of each run on its task's cadence, counted from the first run."""
    first = times[0]
    return [round((when - first) / interval) for when in times]


def test_four_processes_run_each_due_occurrence_exactly_once(store: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    go = time.time() + START_UP
    stop = go + RUN_SECONDS
    options = {
        "store": store,
        "out": str(out),
        "tasks": TASKS,
        "interval": INTERVAL,
        "go": go,
        "stop": stop,
    }
    processes = [spawn(options, stdout=subprocess.PIPE) for _ in range(PROCESSES)]
    errors = []
    for process in processes:
        _, stderr = process.communicate(timeout=START_UP + RUN_SECONDS + 30)
        if process.returncode != 0:
            errors.append(stderr)
    assert errors == []
    pids: set[int] = set()
    for number in range(TASKS):
        runs = read_runs(out / f"task-{number}.txt")
        # Only the span in which all four processes were surely running counts.
        window = [(when, pid) for when, pid in runs if go + 0.5 <= when <= stop - 1.0]
        assert len(window) >= (RUN_SECONDS - 1.5) / INTERVAL - 1, (number, len(window))
        times = [when for when, _ in window]
        indexes = _occurrences(times, INTERVAL)
        assert indexes == list(range(len(indexes))), (number, times)  # no duplicate, no gap
        pids.update(pid for _, pid in window)
    assert len(pids) > 1  # the load spread over the processes


LEASE = 1.5
RENEWAL = 0.5


def test_a_killed_workers_job_is_recorded_abandoned_and_retried_on_a_survivor(
    store: str, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    go = time.time() + START_UP
    options = {
        "store": store,
        "out": str(out),
        "tasks": 1,
        "interval": INTERVAL,
        "go": go,
        "stop": go + 60,
        "long": 60,
        "long_retries": 1,
        "lease_seconds": LEASE,
        "lease_renewal": RENEWAL,
    }
    processes = {
        process.pid: process
        for process in (spawn(options, stdout=subprocess.PIPE) for _ in range(2))
    }
    try:
        deadline = go + 10
        while not read_runs(out / "long.txt"):
            assert time.time() < deadline, "the long job never started"
            time.sleep(0.02)
        [(_, holder)] = read_runs(out / "long.txt")
        processes[holder].kill()  # SIGKILL: no clean-up of any kind
        killed_at = time.time()
        processes[holder].wait()
        while len(read_runs(out / "long.txt")) < 2:
            assert time.time() < killed_at + LEASE + 5, "the job was not retried"
            time.sleep(0.02)
        [survivor] = [pid for _, pid in read_runs(out / "long.txt") if pid != holder]
        jobs = "SELECT attempt, status, error_message, ended_at, worker FROM quiv_jobs "
        jobs += "WHERE task_id = 'long' ORDER BY attempt"
        rows = query(store, jobs)
        while [row[:2] for row in rows] != [(1, "failed"), (2, "running")]:
            assert time.time() < killed_at + LEASE + 5, rows  # the survivor writes behind
            time.sleep(0.02)
            rows = query(store, jobs)
        [(_, status, message, ended_at, _), (_, retry_status, _, _, retry_worker)] = rows
        assert status == "failed"
        assert message == f"abandoned: worker {socket.gethostname()}/{holder} stopped"
        assert isinstance(ended_at, str)
        recorded = datetime.fromisoformat(ended_at).timestamp()
        assert recorded - killed_at <= LEASE + 1.0
        assert (retry_status, retry_worker) == ("running", f"{socket.gethostname()}/{survivor}")
        # The schedule goes on in the survivor.
        time.sleep(3 * INTERVAL)
        after = [pid for when, pid in read_runs(out / "task-0.txt") if when > killed_at]
        assert after and set(after) == {survivor}
    finally:
        for process in processes.values():
            process.kill()
            process.communicate()


def _run_all(options: dict[str, object], count: int) -> set[int]:
    """Run ``count`` processes until they exit; their pids."""
    processes = [spawn(options, stdout=subprocess.PIPE) for _ in range(count)]
    errors = [process.communicate(timeout=60)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * count, errors
    return {process.pid for process in processes}


def test_stop_all_and_restart_all_goes_on_from_the_stored_schedule(
    store: str, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    tasks, interval = 5, 0.3
    first_go = time.time() + START_UP
    first_stop = first_go + 2.0
    options = {"store": store, "out": str(out), "tasks": tasks, "interval": interval}
    first_life = _run_all({**options, "go": first_go, "stop": first_stop}, 2)
    time.sleep(4 * interval)  # everything down: due times pass with nobody to run them
    restarted = time.time() + START_UP
    _run_all({**options, "go": restarted, "stop": restarted + 2.0}, 2)
    for number in range(tasks):
        runs = read_runs(out / f"task-{number}.txt")
        before = [when for when, pid in runs if pid in first_life]
        after = [when for when, pid in runs if pid not in first_life]
        assert before and after, number
        # Down time: the due times missed are coalesced into one run at the restart,
        # not replayed, and from then on the runs keep the first life's cadence.
        assert after[0] - before[-1] >= 4 * interval
        grid = [round((when - before[0]) / interval) for when in before + after[1:]]
        assert len(grid) == len(set(grid)), (number, runs)  # none twice
        assert all(
            abs(when - before[0] - step * interval) < 0.4 * interval
            for when, step in zip(before + after[1:], grid, strict=True)
        ), runs
