"""Cron, run_at and the run policies, end to end on the virtual clock.

Each test drives an ``AsyncQuiv`` with a ``VirtualClock`` and asserts the exact
events or start times. The 2030 transition days: Europe/Berlin springs forward
on 31 March and falls back on 27 October; America/New_York on 10 March and
3 November.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _support import AsyncRecorder, noop
from quiv import (
    AsyncQuiv,
    At,
    ConfigurationError,
    Cron,
    Event,
    Every,
    InvalidTimezoneError,
    JobStatus,
    Quiv,
    TaskNotFoundError,
    VirtualClock,
)

UTC = timezone.utc
DONE = Event.JOB_COMPLETED


async def tick() -> None:
    await checkpoint()


async def starts_until(
    scheduler: AsyncQuiv, clock: VirtualClock, recorder: AsyncRecorder, task_id: str, end: datetime
) -> list[datetime]:
    """Step the clock to each ``next_run_at`` before ``end``; the start times of the runs."""
    starts: list[datetime] = []
    while True:
        due = (await scheduler.get_task(task_id)).next_run_at
        if due >= end:
            return starts
        clock.advance(max(0.0, (due - clock.now()).total_seconds()) + 1e-4)
        await recorder.wait_for(DONE, len(starts) + 1)
        starts.append(recorder.jobs[-1].started_at)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)


# -- daylight saving, through the scheduler --------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "expression", "expected"),
    [
        ("Europe/Berlin", date(2030, 3, 31), "30 2 * * *", ["03:00+02:00"]),
        ("Europe/Berlin", date(2030, 10, 27), "30 2 * * *", ["02:30+02:00"]),
        ("America/New_York", date(2030, 3, 10), "30 2 * * *", ["03:00-04:00"]),
        ("America/New_York", date(2030, 11, 3), "30 1 * * *", ["01:30-04:00"]),
    ],
)
async def test_daily_run_in_a_gap_or_a_repeated_hour_runs_once(
    zone: str, day: date, expression: str, expected: list[str]
) -> None:
    tz = ZoneInfo(zone)
    start = local_midnight(day, tz) - timedelta(hours=1)
    clock = VirtualClock(start)
    async with AsyncQuiv(clock=clock, timezone=zone) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("daily", tick, cron=expression)
        end = local_midnight(day + timedelta(days=1), tz)
        starts = await starts_until(scheduler, clock, recorder, task_id, end)
    assert [s.astimezone(tz).isoformat(timespec="minutes")[11:] for s in starts] == expected


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
async def test_hourly_cron_runs_23_times_in_spring_and_25_in_autumn(zone: str) -> None:
    tz = ZoneInfo(zone)
    spring = {"Europe/Berlin": date(2030, 3, 31), "America/New_York": date(2030, 3, 10)}[zone]
    autumn = {"Europe/Berlin": date(2030, 10, 27), "America/New_York": date(2030, 11, 3)}[zone]
    for day, count in ((spring, 23), (autumn, 25)):
        clock = VirtualClock(local_midnight(day, tz) - timedelta(minutes=1))
        async with AsyncQuiv(clock=clock) as scheduler:
            recorder = AsyncRecorder()
            await recorder.attach(scheduler)
            task_id = await scheduler.add_task("hourly", tick, cron="0 * * * *", timezone=zone)
            end = local_midnight(day + timedelta(days=1), tz)
            starts = await starts_until(scheduler, clock, recorder, task_id, end)
        assert len(starts) == count
        assert len(set(starts)) == count  # nothing ran twice
        assert all(b - a == timedelta(hours=1) for a, b in pairwise(starts))


async def test_run_at_in_a_gap_is_moved_past_it_and_the_task_is_removed() -> None:
    clock = VirtualClock(datetime(2030, 3, 30, 23, 0, tzinfo=UTC))
    async with AsyncQuiv(clock=clock, timezone="Europe/Berlin") as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("once", tick, run_at=datetime(2030, 3, 31, 2, 30))
        task = await scheduler.get_task(task_id)
        assert task.run_at == datetime(2030, 3, 31, 1, 30, tzinfo=UTC)  # 03:30 CEST
        assert task.next_run_at == task.run_at
        assert (task.interval_seconds, task.cron, task.run_once) == (None, None, True)
        assert task.timezone == "Europe/Berlin"
        clock.advance((task.run_at - clock.now()).total_seconds())
        await recorder.wait_for(Event.TASK_REMOVED)
    assert recorder.records == [
        ("task_added", "once", None),
        ("job_started", "once", "running"),
        ("job_completed", "once", "completed"),
        ("task_removed", "once", None),
    ]


async def test_run_at_in_the_past_runs_at_once() -> None:
    clock = VirtualClock()
    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("late", tick, run_at=clock.now() - timedelta(days=1))
        await recorder.wait_for(Event.TASK_REMOVED)
    assert recorder.count(DONE) == 1


async def test_task_fields_describe_the_trigger_and_policies() -> None:
    async with AsyncQuiv(timezone="Europe/Berlin") as scheduler:
        cron_id = await scheduler.add_task(
            "weekdays", noop, cron="0 3 * * 1-5", jitter=2, misfire_grace=30, max_instances=2
        )
        every_id = await scheduler.add_task("every", noop, trigger=Every(60, fixed=False))
        cron = await scheduler.get_task(cron_id)
        every = await scheduler.get_task(every_id)
        await scheduler._store.flush()
        rows = {row["id"]: row for row in await scheduler._store.read_rows("tasks")}
    assert cron.trigger == "cron '0 3 * * 1-5' (Europe/Berlin)"
    assert (cron.cron, cron.interval_seconds, cron.run_at) == ("0 3 * * 1-5", None, None)
    assert (cron.jitter, cron.misfire_grace, cron.coalesce, cron.max_instances) == (
        2.0,
        30.0,
        True,
        2,
    )
    assert cron.next_run_at.astimezone(ZoneInfo("Europe/Berlin")).hour == 3
    assert every.trigger == "every 60s (relative)"
    assert (every.interval_seconds, every.fixed_interval, every.cron) == (60.0, False, None)
    assert rows[cron_id]["cron"] == "0 3 * * 1-5"
    assert rows[cron_id]["max_instances"] == 2
    assert rows[every_id]["trigger"] == "every 60s (relative)"


# -- a full pool: misfire grace and coalescing -----------------------------------


async def _held_pool(
    coalesce: bool, misfire_grace: float | None, runs: int
) -> list[tuple[str, str, str | None]]:
    """A pool of one held by a blocker from 0 to 35 s while a cron fires at 10, 20 and 30 s.

    Returns the events once the cron task has completed ``runs`` runs, by 40 s.
    """
    clock = VirtualClock()
    release = anyio.Event()

    async def blocker() -> None:
        await release.wait()

    async with AsyncQuiv(clock=clock, pool_size=1) as scheduler:
        recorder = AsyncRecorder()
        await scheduler.add_task("blocker", blocker, interval=3600, run_once=True)
        await recorder.attach(scheduler)
        await scheduler.add_task(
            "cron",
            tick,
            cron="*/10 * * * * *",
            coalesce=coalesce,
            misfire_grace=misfire_grace,
        )
        for _ in range(3):
            clock.advance(10)
            await wait_all_tasks_blocked()
        clock.advance(5)  # t = 35
        release.set()
        await recorder.wait_for(Event.TASK_REMOVED)  # the blocker
        await wait_all_tasks_blocked()
        clock.advance(5)  # t = 40: the cadence carries on
        await recorder.wait_until(
            lambda: recorder.records.count(("job_completed", "cron", "completed")) == runs
        )
        await wait_all_tasks_blocked()
        jobs = await scheduler.get_all_jobs()
        missed = await scheduler.get_all_jobs("missed")
        await scheduler._store.flush()
        rows = await scheduler._store.read_rows("jobs")
    assert len([r for r in rows if r["status"] == "missed"]) == len(missed)
    assert all(j.status is JobStatus.MISSED for j in missed)
    assert len(jobs) == len(rows)
    return [r for r in recorder.records if r[0] != "task_added"]


async def test_coalesce_runs_one_for_three_overdue_runs() -> None:
    records = await _held_pool(coalesce=True, misfire_grace=None, runs=2)
    assert records == [
        ("job_completed", "blocker", "completed"),
        ("task_removed", "blocker", None),
        ("job_started", "cron", "running"),
        ("job_completed", "cron", "completed"),
        ("job_started", "cron", "running"),  # t = 40
        ("job_completed", "cron", "completed"),
    ]


async def test_without_coalesce_each_overdue_run_runs() -> None:
    records = await _held_pool(coalesce=False, misfire_grace=None, runs=4)
    assert records == [
        ("job_completed", "blocker", "completed"),
        ("task_removed", "blocker", None),
        *[("job_started", "cron", "running"), ("job_completed", "cron", "completed")] * 4,
    ]


async def test_runs_past_misfire_grace_are_missed() -> None:
    # At 35 s: the 10 s run is 25 s late, the 20 s one 15 s: past a 12 s grace.
    records = await _held_pool(coalesce=False, misfire_grace=12, runs=2)
    assert records == [
        ("job_completed", "blocker", "completed"),
        ("task_removed", "blocker", None),
        ("job_missed", "cron", "missed"),
        ("job_missed", "cron", "missed"),
        ("job_started", "cron", "running"),
        ("job_completed", "cron", "completed"),
        ("job_started", "cron", "running"),
        ("job_completed", "cron", "completed"),
    ]


async def test_coalesced_run_past_grace_is_one_missed_record() -> None:
    records = await _held_pool(coalesce=True, misfire_grace=2, runs=1)
    assert records == [
        ("job_completed", "blocker", "completed"),
        ("task_removed", "blocker", None),
        ("job_missed", "cron", "missed"),
        ("job_started", "cron", "running"),  # t = 40, on time
        ("job_completed", "cron", "completed"),
    ]


# -- overlap -----------------------------------------------------------------------


@pytest.mark.parametrize(("max_instances", "peak_expected"), [(1, 1), (2, 2)])
async def test_max_instances_lets_a_slow_task_overlap_that_often_and_no_more(
    max_instances: int, peak_expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    clock = VirtualClock()
    gates: list[anyio.Event] = []
    starts: list[float] = []
    active = peak = 0

    async def slow() -> None:
        nonlocal active, peak
        gate = anyio.Event()
        gates.append(gate)
        starts.append(clock.monotonic())
        active += 1
        peak = max(peak, active)
        await gate.wait()
        active -= 1

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("slow", slow, interval=10, max_instances=max_instances)
        for _ in range(2):  # t = 10, 20: the first run is still going
            await wait_all_tasks_blocked()
            clock.advance(10)
        await wait_all_tasks_blocked()
        clock.advance(5)  # t = 25: the first run ends
        gates[0].set()
        await recorder.wait_for(DONE)
        await wait_all_tasks_blocked()
        clock.advance(5)  # t = 30
        await wait_all_tasks_blocked()
        for gate in gates:
            gate.set()
        await recorder.wait_for(DONE, len(gates))
    assert peak == peak_expected
    if max_instances == 2:
        assert starts == [0.0, 10.0, 30.0]  # 20 came while two ran: skipped
    else:
        assert starts == [0.0, 30.0]  # 10 and 20 came while it ran: skipped
    assert any("slot(s) skipped" in m for m in caplog.messages)


# -- wall-clock jumps ----------------------------------------------------------------


@pytest.mark.parametrize(("coalesce", "runs"), [(True, 1), (False, 3)])
async def test_a_wall_clock_jump_runs_what_became_due_once(coalesce: bool, runs: int) -> None:
    clock = VirtualClock(datetime(2030, 1, 1, 0, 30, tzinfo=UTC))
    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        cron_id = await scheduler.add_task("hourly", tick, cron="0 * * * *", coalesce=coalesce)
        every_id = await scheduler.add_task("every", tick, interval=3600, delay=1800)
        clock.jump(3 * 3600)  # 03:30: 01:00, 02:00 and 03:00 became due
        await recorder.wait_for(DONE, runs)
        await wait_all_tasks_blocked()
        assert recorder.count(DONE) == runs
        cron = await scheduler.get_task(cron_id)
        assert cron.next_run_at == datetime(2030, 1, 1, 4, 0, tzinfo=UTC)
        every = await scheduler.get_task(every_id)  # elapsed time: not due before 30 min pass
        assert every.next_run_at == datetime(2030, 1, 1, 4, 0, tzinfo=UTC)
        clock.jump(-3600)  # back to 02:30: nothing runs again
        await wait_all_tasks_blocked()
        assert recorder.count(DONE) == runs
        cron = await scheduler.get_task(cron_id)
        assert cron.next_run_at == datetime(2030, 1, 1, 4, 0, tzinfo=UTC)
        clock.advance(1800)  # 03:00 on the wall: the interval task runs, the cron does not
        await recorder.wait_for(DONE, runs + 1)
        await wait_all_tasks_blocked()
        assert [r[1] for r in recorder.records if r[0] == "job_completed"][-1] == "every"
        assert recorder.count(DONE) == runs + 1


# -- jitter ---------------------------------------------------------------------------


async def test_jitter_delays_each_start_but_never_moves_the_cadence() -> None:
    clock = VirtualClock()
    starts: list[float] = []

    async def record() -> None:
        starts.append(clock.monotonic())

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("jittery", record, interval=10, jitter=4)
        for _ in range(200):  # 0.25 s steps through 50 s
            clock.advance(0.25)
            await wait_all_tasks_blocked()
    assert len(starts) == 5
    anchor = starts[0]
    assert 0 <= anchor <= 4.25
    for k, start in enumerate(starts[1:], 1):
        slot = 10 * k  # the grid is anchored on the first due time, not its jittered start
        assert slot <= start <= slot + 4.25, (k, start)


# -- update_task -----------------------------------------------------------------------


async def test_update_task_changes_the_trigger_in_place() -> None:
    clock = VirtualClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("job", tick, 60)
        await recorder.wait_for(DONE)
        updated = await scheduler.update_task(task_id, cron="0 3 * * *", timezone="Europe/Berlin")
        assert updated.id == task_id
        assert updated.trigger == "cron '0 3 * * *' (Europe/Berlin)"
        assert updated.next_run_at == datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
        assert updated.interval_seconds is None
        assert await scheduler.get_task(task_id) == updated
        assert len(await scheduler.get_all_jobs()) == 1  # history kept
        renamed = await scheduler.update_task(task_id, task_name="nightly", max_instances=3)
        assert (renamed.task_name, renamed.max_instances) == ("nightly", 3)
        assert renamed.next_run_at == updated.next_run_at  # no new trigger: plan unchanged
        before = await scheduler.get_task(task_id)
        with pytest.raises(ConfigurationError, match="exactly one"):
            await scheduler.update_task(task_id, interval=5, cron="* * * * *")
        with pytest.raises(ConfigurationError, match="max_instances"):
            await scheduler.update_task(task_id, task_name="x", max_instances=0)
        with pytest.raises(InvalidTimezoneError):
            await scheduler.update_task(task_id, timezone="Mars/Olympus")
        assert await scheduler.get_task(task_id) == before
        with pytest.raises(TaskNotFoundError):
            await scheduler.update_task("no-such-task", task_name="x")
        back = await scheduler.update_task(task_id, trigger=Every(30))
        assert back.interval_seconds == 30.0
        clock.advance(30)
        await recorder.wait_for(DONE, 2)


async def test_update_task_leaves_a_running_job_alone() -> None:
    clock = VirtualClock()
    release = anyio.Event()

    async def slow() -> None:
        await release.wait()

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("slow", slow, interval=10)
        await recorder.wait_for(Event.JOB_STARTED)
        await scheduler.update_task(task_id, interval=100)
        release.set()
        await recorder.wait_for(DONE)
        await wait_all_tasks_blocked()
        task = await scheduler.get_task(task_id)
    assert recorder.records[-2:] == [
        ("job_started", "slow", "running"),
        ("job_completed", "slow", "completed"),
    ]
    assert task.interval_seconds == 100.0
    assert task.next_run_at == clock.now() + timedelta(seconds=100)


# -- event order --------------------------------------------------------------------------


async def test_the_final_event_of_a_run_comes_before_the_run_it_lets_start() -> None:
    clock = VirtualClock()
    release = anyio.Event()

    async def slow() -> None:
        await release.wait()

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("slow", slow, interval=3600)
        await recorder.wait_for(Event.JOB_STARTED)
        await scheduler.run_task_immediately(task_id)
        release.set()
        await recorder.wait_for(DONE, 2)
    assert recorder.records == [
        ("task_added", "slow", None),
        ("job_started", "slow", "running"),
        ("job_completed", "slow", "completed"),
        ("job_started", "slow", "running"),
        ("job_completed", "slow", "completed"),
    ]


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cron": "61 * * * *"}, ConfigurationError, "minute"),
        ({"cron": "0 25 * * *"}, ConfigurationError, "hour"),
        ({"interval": 5, "cron": "* * * * *"}, ConfigurationError, "interval, cron"),
        ({}, ConfigurationError, "none"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, InvalidTimezoneError, "Mars"),
        ({"interval": 5, "jitter": -1}, ConfigurationError, "jitter"),
        ({"interval": 5, "misfire_grace": -1}, ConfigurationError, "misfire_grace"),
        ({"interval": 5, "max_instances": 0}, ConfigurationError, "max_instances"),
        ({"run_at": "2030-01-01"}, ConfigurationError, "run_at must be a datetime"),
        ({"trigger": "daily"}, ConfigurationError, "trigger must be"),
        (
            {"trigger": Cron("0 3 * * *", "Europe/Berlin"), "timezone": "UTC"},
            ConfigurationError,
            "timezone",
        ),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_scheduled(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    async with AsyncQuiv() as scheduler:
        with pytest.raises(error, match=match):
            await scheduler.add_task("bad", noop, **kwargs)  # type: ignore[arg-type]
        assert await scheduler.get_all_tasks(include_run_once=True) == []


def test_the_sync_facade_takes_the_same_triggers() -> None:
    with Quiv() as scheduler:
        task_id = scheduler.add_task("noon", noop, trigger=Cron("0 12 * * *"))
        once = scheduler.add_task("once", noop, trigger=At(datetime(2999, 1, 1)))
        assert scheduler.get_task(task_id).cron == "0 12 * * *"
        assert scheduler.update_task(once, task_name="later").task_name == "later"
        assert scheduler.get_task(once).run_once


def test_virtual_clock_started_in_a_zone_counts_real_seconds() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    clock = VirtualClock(datetime(2030, 3, 31, 1, 30, tzinfo=berlin))
    clock.advance(3600)  # 01:30 CET + 1 h is 03:30 CEST: the gap has no 02:30
    assert clock.now().astimezone(berlin).isoformat() == "2030-03-31T03:30:00+02:00"
    clock.jump(-60)
    assert clock.monotonic() == 3600
    assert clock.now().astimezone(berlin).isoformat() == "2030-03-31T03:29:00+02:00"
    with pytest.raises(ValueError, match="aware"):
        VirtualClock(datetime(2030, 1, 1))


# -- gaps the first round of tests left open ----------------------------------------------


async def test_update_task_with_only_a_timezone_replans_in_the_new_zone() -> None:
    clock = VirtualClock(datetime(2030, 1, 1, 0, 0, tzinfo=UTC))
    async with AsyncQuiv(clock=clock, timezone="Europe/Berlin") as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("nightly", tick, cron="0 3 * * *")
        before = await scheduler.get_task(task_id)
        assert before.next_run_at == datetime(2030, 1, 1, 2, 0, tzinfo=UTC)  # 03:00 CET
        after = await scheduler.update_task(task_id, timezone="America/New_York")
        assert after.next_run_at == datetime(2030, 1, 1, 8, 0, tzinfo=UTC)  # 03:00 EST
        assert (after.timezone, after.cron) == ("America/New_York", "0 3 * * *")
        assert after.trigger == "cron '0 3 * * *' (America/New_York)"
        assert await scheduler.get_task(task_id) == after
        clock.advance(2 * 3600)  # 03:00 in Berlin: no longer this task's time
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 0
        clock.advance(6 * 3600)  # 03:00 in New York
        await recorder.wait_for(DONE)
        assert recorder.jobs[-1].started_at == datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
        # A trigger with a zone of its own refuses another one, and nothing changes.
        own = await scheduler.add_task("own", tick, trigger=Cron("0 3 * * *", "Asia/Tokyo"))
        planned = await scheduler.get_task(own)
        with pytest.raises(ConfigurationError, match="timezone of its own"):
            await scheduler.update_task(own, timezone="Europe/Berlin")
        assert await scheduler.get_task(own) == planned


async def test_run_now_below_max_instances_starts_beside_the_running_job() -> None:
    clock = VirtualClock()
    gates: list[anyio.Event] = []
    starts: list[float] = []

    async def slow() -> None:
        gate = anyio.Event()
        gates.append(gate)
        starts.append(clock.monotonic())
        await gate.wait()

    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("slow", slow, interval=60, max_instances=2)
        await recorder.wait_for(Event.JOB_STARTED)
        await wait_all_tasks_blocked()
        clock.advance(5)
        assert await scheduler.run_task_immediately(task_id) == 1
        await recorder.wait_for(Event.JOB_STARTED, 2)  # at once: the first still runs
        await wait_all_tasks_blocked()
        assert recorder.count(DONE) == 0
        # At max_instances now: a third run waits for one of the two to end.
        assert await scheduler.run_task_immediately(task_id) == 1
        await wait_all_tasks_blocked()
        assert recorder.count(Event.JOB_STARTED) == 2
        clock.advance(5)  # t = 10
        gates[0].set()
        await recorder.wait_for(Event.JOB_STARTED, 3)
        await wait_all_tasks_blocked()
        for gate in gates:
            gate.set()
        await recorder.wait_for(DONE, 3)
        await wait_all_tasks_blocked()
        clock.advance(50)  # t = 60: the cadence was kept through the extra runs
        await recorder.wait_for(Event.JOB_STARTED, 4)
        await wait_all_tasks_blocked()
        gates[-1].set()
        await recorder.wait_for(DONE, 4)
    assert starts == [0.0, 5.0, 10.0, 60.0]
    assert recorder.records[1:5] == [
        ("job_started", "slow", "running"),
        ("job_started", "slow", "running"),
        ("job_completed", "slow", "completed"),
        ("job_started", "slow", "running"),
    ]


async def test_jitter_on_a_cron_task_delays_each_start_but_never_moves_the_cadence() -> None:
    clock = VirtualClock()  # 2030-01-01 00:00:00 UTC
    starts: list[float] = []

    async def record() -> None:
        starts.append(clock.monotonic())

    async with AsyncQuiv(clock=clock) as scheduler:
        scheduler._engine._random().seed(7)  # reproducible draws
        await scheduler.add_task("jittery", record, cron="*/10 * * * * *", jitter=4)
        for _ in range(232):  # 0.25 s steps through 58 s
            clock.advance(0.25)
            await wait_all_tasks_blocked()
    assert len(starts) == 5  # the fires at 10, 20, 30, 40 and 50 s
    lateness = [start - 10 * k for k, start in enumerate(starts, 1)]
    assert all(0 <= late <= 4.25 for late in lateness), lateness
    assert len(set(lateness)) > 1  # each start drew its own delay


class _UnannouncedJumps(VirtualClock):
    """A virtual clock whose wall-clock jumps wake nobody, as the system clock's do."""

    wall_recheck = 30.0

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.unannounced = 0.0

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self.unannounced)


def test_the_system_clock_asks_for_a_wall_recheck() -> None:
    from quiv._clock import SystemClock

    assert SystemClock.wall_recheck > 0  # the engine reads this attribute


async def test_wall_recheck_caps_the_sleep_only_while_wall_clock_tasks_exist() -> None:
    clock = _UnannouncedJumps(datetime(2030, 1, 1, 0, 0, tzinfo=UTC))
    async with AsyncQuiv(clock=clock) as scheduler:
        engine = scheduler._engine
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        hourly_id = await scheduler.add_task("hourly", tick, interval=3600, delay=3600)
        await wait_all_tasks_blocked()
        assert engine._sleeping_until == 3600.0  # elapsed time needs no look at the wall
        cron_id = await scheduler.add_task("nightly", tick, cron="0 3 * * *")
        await wait_all_tasks_blocked()
        assert engine._sleeping_until == 30.0  # 03:00 is far: look again within 30 s
        clock.unannounced = 3 * 3600 + 5  # the wall clock steps past 03:00, silently
        clock.advance(29.9)
        await wait_all_tasks_blocked()
        assert recorder.count(DONE) == 0  # nobody looked yet
        clock.advance(0.1)  # the recheck: the jump is seen and 03:00 runs
        await recorder.wait_for(DONE)
        await wait_all_tasks_blocked()
        assert engine._sleeping_until == 60.0
        await scheduler.remove_task(cron_id)
        clock.advance(30)  # the last capped wake-up; none after it
        await wait_all_tasks_blocked()
        assert engine._sleeping_until == 3600.0
        # Retimed to a wall-clock trigger (05:00, due after 3600 s): the cap is back at once.
        await scheduler.update_task(hourly_id, cron="0 5 * * *")
        await wait_all_tasks_blocked()
        assert engine._sleeping_until == 90.0


# -- a property of the whole engine: cron through random advances and jumps ---------------

_SIMPLE_CRONS = st.sampled_from(
    ["*/5 * * * * *", "*/7 * * * * *", "0,30 * * * * *", "15 */2 * * * *", "*/20 * * * * *"]
)
# A step moves both clocks forward (advance) or the wall clock alone (jump, either way,
# by a whole second or more: anything under JUMP_TOLERANCE is not a jump but drift).
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 160).map(lambda q: q / 4)),
        st.tuples(st.just("jump"), st.integers(-90, 150).filter(lambda s: s != 0).map(float)),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=_SIMPLE_CRONS, steps=_STEPS)
async def test_every_fire_time_runs_once_through_advances_and_jumps(
    expression: str, steps: list[tuple[str, float]]
) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock = VirtualClock(start)
    latest = start  # the latest wall time the clock has shown
    async with AsyncQuiv(clock=clock, history_retention_seconds=10**6) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        task_id = await scheduler.add_task("cron", tick, cron=expression, coalesce=False)
        expected = 0
        for kind, seconds in steps:
            if kind == "advance":
                clock.advance(seconds)
            else:
                clock.jump(seconds)
            latest = max(latest, clock.now())
            expected = Cron(expression, "UTC").count_between(start, latest)
            await recorder.wait_for(DONE, expected)
            await wait_all_tasks_blocked()
        jobs = [j for j in scheduler._engine.registry.jobs.values() if j.task.id == task_id]
    jobs.sort(key=lambda job: job.number)
    dues = [job.slot.wall for job in jobs]
    fires = Cron(expression, "UTC").due_between(start, latest)
    assert dues == fires  # each fire time up to the latest wall time, in order, once
    assert all(a < b for a, b in pairwise(dues))
    assert all(job.status is JobStatus.COMPLETED for job in jobs)
    assert recorder.count(DONE) == len(fires)
