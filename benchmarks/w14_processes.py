"""W14 several processes: one schedule shared through a durable store, each run once.

``w14_processes`` processes (``_process_worker``) share one store and add the
same ``w14_tasks`` tasks every ``w14_interval`` seconds; they run for
``w14_seconds``. Each handler appends the wall time of its run to its task's
file, and the figures come from those files, not from quiv: runs per second
executed; duplicates (a due time run twice) and missed due times (both must
be 0), counted on each task's cadence while every process was up; lateness
p99 against the cadence. Then the fail-over time: two processes, a long job,
``kill -9`` of the one running it; seconds until a survivor starts its retry
(the lease is 3 s, renewed every second; half that at the quick sizes).
Last, how fast control travels: two processes, a probe task each runs in
turn until the other process's ``cancel_job`` reaches it; seconds from that
call to the handler seeing its stop event (targets: 1 s on SQLite, which
polls every 0.5 s; 100 ms on PostgreSQL, which notifies).

Units: ``sqlite`` always; ``postgresql`` when ``QUIV_TEST_POSTGRES_URL`` names
a server (its ``quiv_*`` tables are dropped first).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ._harness import Metric, Sizes, distribution
from ._process_worker import read_runs, spawn

TITLE = "several processes sharing one durable store"
ISOLATE = False

ROOT = Path(__file__).resolve().parent.parent
#: Seconds the processes get to start before the run (fewer at the quick sizes).
_START_UP = {False: 4.0, True: 2.0}
#: The lease and its renewal for the fail-over run (shorter at the quick sizes).
_LEASE = {False: 3.0, True: 1.5}
_RENEWAL = {False: 1.0, True: 0.5}
_TABLES = "quiv_claims, quiv_jobs, quiv_tasks, quiv_meta"
#: Seconds the cancel probes run (fewer at the quick sizes), and the bound per backend.
_PROBING = {False: 12.0, True: 4.0}
_REACH = {"sqlite": 1.0, "postgresql": 0.1}


def units(sizes: Sizes) -> list[str]:
    names = ["sqlite"]
    if os.environ.get("QUIV_TEST_POSTGRES_URL"):
        names.append("postgresql")
    return names


def _store(unit: str, directory: Path) -> str:
    if unit == "sqlite":
        return f"sqlite:///{directory / 'quiv.db'}"
    url = os.environ["QUIV_TEST_POSTGRES_URL"]
    import asyncio

    import asyncpg

    async def empty() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {_TABLES}")
        finally:
            await connection.close()

    asyncio.run(empty())
    return url


def _cadence(
    times: list[float], interval: float, origin: float, window: tuple[float, float]
) -> dict[str, Any]:
    """Duplicates, missed due times and lateness of one task's runs on its cadence.

    Every process adds the task with its first due time at ``origin``, so the due
    times are ``origin + k * interval``; a run belongs to the last due time at or
    before its start (a run is never early). Two runs of one due time are a
    duplicate; a due time inside ``window`` (with a whole interval to spare at its
    end) that no run belongs to is missed. A run more than an interval late
    counts against the next due time, so it shows as both.
    """
    steps = [math.floor((when - origin) / interval + 1e-6) for when in times]
    seen = set(steps)
    first = math.ceil((window[0] - origin) / interval)
    last = math.floor((window[1] - interval - origin) / interval)
    return {
        "duplicates": len(steps) - len(seen),
        "missed": sum(1 for step in range(first, last + 1) if step not in seen),
        "lateness": [
            when - origin - step * interval for when, step in zip(times, steps, strict=True)
        ],
    }


def _shared_schedule(unit: str, sizes: Sizes, directory: Path) -> dict[str, Any]:
    out = directory / "runs"
    out.mkdir()
    go = time.time() + _START_UP[sizes.quick]
    stop = go + sizes.w14_seconds
    options = {
        "store": _store(unit, directory),
        "out": str(out),
        "tasks": sizes.w14_tasks,
        "interval": sizes.w14_interval,
        "go": go,
        "stop": stop,
    }
    processes = [spawn(options) for _ in range(sizes.w14_processes)]
    errors = [process.communicate(timeout=sizes.w14_seconds + 70)[1] for process in processes]
    window = (go + 0.5, stop - 0.5)  # every process up and not yet stopping
    duplicates = missed = runs = 0
    lateness: list[float] = []
    for number in range(sizes.w14_tasks):
        times = [
            when
            for when, _ in read_runs(out / f"task-{number}.txt")
            if window[0] <= when <= window[1]
        ]
        found = _cadence(times, sizes.w14_interval, go, window)
        duplicates += found["duplicates"]
        missed += found["missed"]
        lateness += found["lateness"]
        runs += len(times)
    span = max(window[1] - window[0], 1e-9)
    return {
        "runs_per_second": runs / span,
        "duplicates": duplicates,
        "missed": missed,
        "lateness": distribution(lateness),
        "exit_codes": [process.returncode for process in processes],
        "stderr_tail": [error[-500:] for error in errors if error],
    }


def _no_tasks(unit: str, directory: Path, out: Path, quick: bool, seconds: float) -> dict[str, Any]:
    """Options for processes adding none of the cadence tasks, up for ``seconds`` after ``go``."""
    go = time.time() + _START_UP[quick]
    store = _store(unit, directory)
    return {
        "store": store,
        "out": str(out),
        "tasks": 0,
        "interval": 1.0,
        "go": go,
        "stop": go + seconds,
    }


def _fail_over(unit: str, directory: Path, quick: bool) -> dict[str, Any]:
    out = directory / "fail-over"
    out.mkdir()
    options = {
        **_no_tasks(unit, directory, out, quick, 60),
        "long": 60,
        "long_retries": 1,
        "lease_seconds": _LEASE[quick],
        "lease_renewal": _RENEWAL[quick],
    }
    processes = {process.pid: process for process in (spawn(options) for _ in range(2))}
    record = out / "long.txt"
    try:
        deadline = options["go"] + 20
        while not read_runs(record) and time.time() < deadline:
            time.sleep(0.01)
        if not read_runs(record):
            return {"fail_over_seconds": math.nan, "fail_over_error": "the long job never started"}
        holder = read_runs(record)[0][1]
        processes[holder].kill()
        killed = time.time()
        while len(read_runs(record)) < 2 and time.time() < killed + _LEASE[quick] + 20:
            time.sleep(0.01)
        retried = [when for when, pid in read_runs(record) if pid != holder]
        if not retried:
            return {"fail_over_seconds": math.nan, "fail_over_runs": read_runs(record)}
        return {"fail_over_seconds": retried[0] - killed}
    finally:
        for process in processes.values():
            process.kill()
            process.communicate()


def _cancel_reach(unit: str, directory: Path, quick: bool) -> dict[str, Any]:
    """Seconds from ``cancel_job`` in one process to the job's handler stopping in another."""
    notes = directory / "probe.txt"
    options = {**_no_tasks(unit, directory, directory, quick, _PROBING[quick]), "probe": str(notes)}
    processes = [spawn(options) for _ in range(2)]
    for process in processes:
        process.communicate(timeout=_PROBING[quick] + 70)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    lines = notes.read_text().splitlines() if notes.exists() else []
    for kind, job_id, when in (line.split() for line in lines):
        (sent if kind == "cancel" else seen)[job_id] = float(when)
    reach = [seen[job_id] - sent[job_id] for job_id in sent if job_id in seen]
    return {
        "cancel_reach": distribution(reach),
        "cancels_unanswered": len(sent.keys() - seen.keys()),
    }


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="quiv-w14-") as name:
        directory = Path(name)  # mkdtemp: mode 0700, as the store requires
        data = _shared_schedule(unit, sizes, directory)
        data.update(_fail_over(unit, _fresh(directory, "fail-over"), sizes.quick))
        data.update(_cancel_reach(unit, _fresh(directory, "probe"), sizes.quick))
        return data


def _fresh(directory: Path, name: str) -> Path:
    """Another private directory, for a run with its own store and records."""
    second = directory / name
    second.mkdir(mode=0o700)
    return second


def _worst_reach(found: dict[str, Any]) -> float:
    """The slowest cancel, in seconds; infinite if one never reached its job."""
    if found["cancels_unanswered"]:
        return math.inf
    return _number(found["cancel_reach"].get("max_ms")) / 1000


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    metrics: list[Metric] = []
    shape = (
        f"{sizes.w14_processes} processes, {sizes.w14_tasks} tasks every {sizes.w14_interval:g}s"
    )
    for unit, found in data.items():
        details = {
            key: value for key, value in found.items() if key not in ("lateness", "cancel_reach")
        }
        metrics += [
            Metric(
                "W14",
                unit,
                "runs/s executed",
                found["runs_per_second"],
                "runs/s",
                "higher",
                note=shape,
                details=details,
            ),
            Metric(
                "W14",
                unit,
                "duplicate runs",
                float(found["duplicates"]),
                "runs",
                "lower",
                target=0.0,
            ),
            Metric(
                "W14", unit, "missed due times", float(found["missed"]), "runs", "lower", target=0.0
            ),
            Metric(
                "W14",
                unit,
                "lateness p99",
                _number(found["lateness"].get("p99_ms")),
                "ms",
                "lower",
                details={"lateness": found["lateness"]},
            ),
            Metric(
                "W14",
                unit,
                "fail-over after kill -9",
                float(found["fail_over_seconds"]),
                "s",
                "lower",
                target=_LEASE[sizes.quick] + 1.0,
                note=f"lease {_LEASE[sizes.quick]:g}s, renewed every {_RENEWAL[sizes.quick]:g}s",
            ),
            Metric(
                "W14",
                unit,
                "cancel reach, worst",
                _worst_reach(found),
                "s",
                "lower",
                target=_REACH[unit],
                note=f"{found['cancel_reach'].get('n', 0)} cancels from the other process",
                details={
                    "cancel_reach": found["cancel_reach"],
                    "unanswered": found["cancels_unanswered"],
                },
            ),
        ]
    return metrics
