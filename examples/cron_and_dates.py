"""Cron, one-off dates and the run policies, observed on a virtual clock.

Each function runs a small scenario against a :class:`quiv.VirtualClock` and
returns what happened, so the daylight-saving examples in the documentation
are checked by a test rather than asserted by prose::

    python examples/cron_and_dates.py
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio

from quiv import AsyncQuiv, Cron, Event, Job, Task, VirtualClock


async def _runs_during(day: date, zone: str, **when: object) -> list[str]:
    """The local start times of a task's runs during ``day`` in ``zone``."""
    tz = ZoneInfo(zone)
    midnight = datetime.combine(day, datetime.min.time(), tz)
    clock = VirtualClock(midnight - timedelta(minutes=1))
    starts: list[str] = []

    def record(_event: Event, _task: Task, job: Job) -> None:
        starts.append(job.started_at.astimezone(tz).strftime("%H:%M %Z"))

    async with AsyncQuiv(clock=clock, timezone=zone) as scheduler:
        await scheduler.add_listener(Event.JOB_STARTED, record)
        task_id = await scheduler.add_task("job", anyio.lowlevel.checkpoint, **when)  # type: ignore[arg-type]
        end = (midnight + timedelta(days=1)).astimezone(clock.now().tzinfo)
        while (due := (await scheduler.get_task(task_id)).next_run_at) < end:
            clock.advance((due - clock.now()).total_seconds() + 0.001)
            await anyio.wait_all_tasks_blocked()
    return starts


# --8<-- [start:dst]
async def dst_examples() -> dict[str, list[str]]:
    """Daily and hourly cron tasks on Berlin's 2030 transition days."""
    spring, autumn = date(2030, 3, 31), date(2030, 10, 27)
    return {
        # 02:30 does not exist on 31 March: the run moves to the end of the gap.
        "30 2 * * * on 31 March": await _runs_during(spring, "Europe/Berlin", cron="30 2 * * *"),
        # 02:30 happens twice on 27 October: it runs on the first pass only.
        "30 2 * * * on 27 October": await _runs_during(autumn, "Europe/Berlin", cron="30 2 * * *"),
        # An hourly expression follows real hours: 23 runs, then 25.
        "0 * * * * on 31 March": await _runs_during(spring, "Europe/Berlin", cron="0 * * * *"),
        "0 * * * * on 27 October": await _runs_during(autumn, "Europe/Berlin", cron="0 * * * *"),
    }


# --8<-- [end:dst]


# --8<-- [start:api]
async def weekday_report_and_a_reminder() -> list[Task]:
    """A cron task, a one-off date and a trigger object, as the API takes them."""
    clock = VirtualClock(datetime(2030, 2, 27, 12, 0, tzinfo=ZoneInfo("UTC")))
    async with AsyncQuiv(clock=clock, timezone="Europe/Berlin") as scheduler:
        report = await scheduler.add_task(
            "weekday report",
            anyio.lowlevel.checkpoint,
            cron="0 3 * * 1-5",  # 03:00 Berlin time, Monday to Friday
            misfire_grace=600,  # not run at all if it cannot start by 03:10
            jitter=30,  # starts up to 30 s late, at random
        )
        reminder = await scheduler.add_task(
            "reminder", anyio.lowlevel.checkpoint, run_at=datetime(2030, 3, 1, 9, 0)
        )
        nightly = await scheduler.add_task(
            "nightly", anyio.lowlevel.checkpoint, trigger=Cron("@daily", "America/New_York")
        )
        await scheduler.update_task(nightly, max_instances=2)
        return [await scheduler.get_task(t) for t in (report, reminder, nightly)]


# --8<-- [end:api]


async def main() -> None:
    for label, starts in (await dst_examples()).items():
        print(f"{label}: {len(starts)} run(s): {', '.join(starts[:3])}{' ...' * (len(starts) > 3)}")
    for task in await weekday_report_and_a_reminder():
        print(f"{task.task_name}: {task.trigger}, next run {task.next_run_at.isoformat()}")


if __name__ == "__main__":
    anyio.run(main)
