"""Paged history (a pure filter, checked against brute force) and the handler helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _support import AsyncRecorder
from quiv import (
    AsyncQuiv,
    Event,
    Job,
    JobCancelledError,
    JobStatus,
    Quiv,
    SchedulerStateError,
    call_on_main,
    run_subprocess,
)
from quiv._history import HistoryQuery, select

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
WITHIN = 5.0

jobs_strategy = st.lists(
    st.builds(
        lambda n, status, task, minute: Job(
            id=f"j{n}",
            task_id=task,
            task_name="t",
            status=status,
            started_at=T0 + timedelta(minutes=minute),
        ),
        st.integers(0, 10**6),
        st.sampled_from(list(JobStatus)),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 50),
    ),
    max_size=40,
)
times = st.none() | st.integers(0, 50).map(lambda m: T0 + timedelta(minutes=m))


@given(
    jobs=jobs_strategy,
    status=st.none() | st.sampled_from(list(JobStatus)),
    task_id=st.none() | st.sampled_from(["a", "b", "c", "zzz"]),
    since=times,
    until=times,
    limit=st.none() | st.integers(0, 45),
    offset=st.integers(0, 45),
    newest_first=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_history_filter_matches_brute_force(
    jobs: list[Job],
    status: JobStatus | None,
    task_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    offset: int,
    newest_first: bool,
) -> None:
    query = HistoryQuery.of(status, task_id, since, until, limit, offset, newest_first)
    got = select(jobs, query, lambda j: (j.status, j.task_id, j.started_at))
    expected = [
        j
        for j in jobs
        if (status is None or j.status == status)
        and (task_id is None or j.task_id == task_id)
        and (since is None or j.started_at >= since)
        and (until is None or j.started_at < until)
    ]
    if newest_first:
        expected.reverse()
    expected = expected[offset:]
    if limit is not None:
        expected = expected[:limit]
    assert got == expected


async def test_get_all_jobs_pages_through_live_history() -> None:
    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        a = await scheduler.add_task("a", lambda: None, interval=0.01)
        b = await scheduler.add_task("b", lambda: None, interval=HOUR_S)
        await recorder.wait_for(Event.JOB_COMPLETED, 6)
        await scheduler.pause_task(a)
        everything = await scheduler.get_all_jobs()
        only_a = await scheduler.get_all_jobs(task_id=a)
        page = await scheduler.get_all_jobs(task_id=a, limit=2, offset=1, newest_first=True)
        since = await scheduler.get_all_jobs(since=everything[2].started_at)
        tasks_b = await scheduler.get_all_tasks(task_name="b")
    assert only_a == [j for j in everything if j.task_id == a]
    assert page == list(reversed(only_a))[1:3]
    assert since == [j for j in everything if j.started_at >= everything[2].started_at]
    assert [t.id for t in tasks_b] == [b]


HOUR_S = 3600

CHILD = (
    "import os, signal, sys, time\n"
    "if sys.argv[2] == 'deaf': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "time.sleep(60)\n"
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("child", ["polite", "deaf"])
def test_cancel_job_stops_the_child_process_within_kill_grace(tmp_path: Path, child: str) -> None:
    pid_file = tmp_path / "pid"
    kill_grace = 0.5
    outcome: list[BaseException] = []

    def handler(_stop_event: threading.Event) -> None:
        try:
            run_subprocess(
                [sys.executable, "-c", CHILD, str(pid_file), child],
                stop_event=_stop_event,
                kill_grace=kill_grace,
            )
        except BaseException as exc:
            outcome.append(exc)
            raise

    with Quiv() as scheduler:
        scheduler.add_task("child", handler, interval=HOUR_S)
        deadline = time.monotonic() + WITHIN
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = int(pid_file.read_text())
        (job,) = scheduler.get_all_jobs()
        began = time.monotonic()
        assert scheduler.cancel_job(job.id)
        ended = scheduler.wait_for_job(job.id, timeout=WITHIN)
        took = time.monotonic() - began
    assert ended.status is JobStatus.CANCELLED
    assert isinstance(outcome[0], JobCancelledError)
    assert _gone(pid)
    if child == "deaf":  # SIGTERM ignored: killed once kill_grace is over
        assert kill_grace <= took < kill_grace + 2.0
    else:
        assert took < kill_grace


def test_run_subprocess_returns_the_finished_process_and_times_out() -> None:
    done = run_subprocess(
        [sys.executable, "-c", "print('hi')"],
        stop_event=threading.Event(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert (done.returncode, done.stdout) == (0, "hi\n")
    with pytest.raises(subprocess.TimeoutExpired):
        run_subprocess(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            stop_event=threading.Event(),
            timeout=0.1,
            kill_grace=1,
        )


async def test_call_on_main_runs_on_the_main_loop_and_gives_up_when_stopped() -> None:
    loop_thread = threading.get_ident()
    seen: list[object] = []

    async def on_loop(x: int) -> tuple[int, bool]:
        return x * 2, threading.get_ident() == loop_thread

    async def never() -> None:
        await anyio.sleep_forever()

    def uses_loop() -> None:
        seen.append(call_on_main(on_loop, 21))

    def waits_forever() -> None:
        call_on_main(never)

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("uses", uses_loop, interval=HOUR_S)
        await recorder.wait_for(Event.JOB_COMPLETED)
        tid = await scheduler.add_task("forever", waits_forever, interval=HOUR_S)
        await recorder.wait_for(Event.JOB_STARTED, 2)
        (job,) = await scheduler.get_all_jobs(task_id=tid)
        await scheduler.cancel_job(job.id)
        ended = await scheduler.wait_for_job(job.id, timeout=WITHIN)
    assert seen == [(42, True)]
    assert ended.status is JobStatus.CANCELLED
    with pytest.raises(SchedulerStateError):
        call_on_main(on_loop, 1)  # not inside a sync handler
