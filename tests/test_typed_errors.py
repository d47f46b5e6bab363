"""Only quiv's typed errors leave the API, and the log lines tell the truth."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone, tzinfo

import pytest

from _support import AsyncRecorder, noop
from quiv import (
    AsyncQuiv,
    ConfigurationError,
    Event,
    InvalidTimezoneError,
    Quiv,
    QuivConfig,
    VirtualClock,
)

START = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _first_run_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "first run at" in r.getMessage()]


@pytest.mark.parametrize(
    ("delay", "shown"),
    [(0, "2030-01-01T00:00:00.000+00:00"), (5.5, "2030-01-01T00:00:05.500+00:00")],
)
async def test_first_run_log_line_shows_when_the_first_run_is_due(
    caplog: pytest.LogCaptureFixture, delay: float, shown: str
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    async with AsyncQuiv(clock=VirtualClock(START)) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task("t60", noop, interval=60, delay=delay)
        if delay == 0:  # it has started already, which is what the line must say
            await recorder.wait_for(Event.JOB_STARTED)
    assert _first_run_lines(caplog) == [f"quiv task 't60' ({tid}) added; first run at {shown}"]


async def test_first_run_log_line_is_shown_in_the_configured_zone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="Quiv")
    clock = VirtualClock(START)
    async with AsyncQuiv(timezone="Europe/Paris", clock=clock) as scheduler:
        await scheduler.add_task("t", noop, interval=60)
    assert [line.rsplit(" ", 1)[1] for line in _first_run_lines(caplog)] == [
        "2030-01-01T01:00:00.000+01:00"
    ]


class BrokenZone(tzinfo):
    """A ``tzinfo`` whose offset cannot be computed."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset")

    def tzname(self, dt: datetime | None) -> str:
        return "broken"

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class FailsAfter2000(tzinfo):
    """Passes any check made on an early date, then fails: a zone with a data gap."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        if dt is not None and dt.year > 2000:
            raise RuntimeError("no data after 2000")
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "gap"

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def fromutc(self, dt: datetime) -> datetime:
        return dt + self.utcoffset(dt)


@pytest.mark.parametrize("make", [QuivConfig, AsyncQuiv, Quiv])
def test_a_tzinfo_that_cannot_convert_is_refused_when_given(make: type) -> None:
    with pytest.raises(InvalidTimezoneError, match="no offset") as caught:
        make(timezone=BrokenZone())
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_a_zone_failing_on_a_later_date_does_not_fail_add_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Logging is never why a call fails: the time is shown in UTC instead."""
    caplog.set_level(logging.INFO, logger="Quiv")
    async with AsyncQuiv(timezone=FailsAfter2000(), clock=VirtualClock(START)) as scheduler:
        tid = await scheduler.add_task("t", noop, interval=60, delay=60)
        assert [t.id for t in await scheduler.get_all_tasks()] == [tid]
    assert _first_run_lines(caplog)[0].endswith("first run at 2030-01-01T00:01:00.000+00:00")


def test_huge_integer_shutdown_timeout_means_wait_as_long_as_it_takes() -> None:
    scheduler = AsyncQuiv(shutdown_timeout=10**400)
    assert scheduler._shutdown_timeout == float("inf")


async def test_resume_accepts_fractional_seconds() -> None:
    clock = VirtualClock(START)
    async with AsyncQuiv(clock=clock) as scheduler:
        tid = await scheduler.add_task("t", noop, interval=60, delay=60)
        await scheduler.pause_task(tid)
        await scheduler.resume_task(tid, 0.5)  # typed float: mypy checks this line
        assert (await scheduler.get_task(tid)).next_run_at == START + timedelta(seconds=0.5)


def test_resume_accepts_fractional_seconds_on_the_facade() -> None:
    with Quiv() as scheduler:
        tid = scheduler.add_task("t", noop, interval=60, delay=60)
        scheduler.pause_task(tid)
        before = datetime.now(timezone.utc)
        scheduler.resume_task(tid, 30.5)
        due = scheduler.get_task(tid).next_run_at
        assert timedelta(seconds=30.5) <= due - before < timedelta(seconds=35)


@pytest.mark.parametrize("interval", [1e-300, 5e-324, 0.000999])
async def test_tiny_intervals_are_refused_naming_the_bound(interval: float) -> None:
    async with AsyncQuiv() as scheduler:
        with pytest.raises(ConfigurationError, match=r"at least 0\.001 s"):
            await scheduler.add_task("t", noop, interval=interval)
        assert await scheduler.get_all_tasks(include_run_once=True) == []


async def test_the_shortest_interval_runs_on_its_cadence() -> None:
    clock = VirtualClock(START)
    async with AsyncQuiv(clock=clock) as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        tid = await scheduler.add_task("fast", noop, interval=0.001)
        for runs in range(1, 4):
            await recorder.wait_for(Event.JOB_COMPLETED, runs)
            clock.advance(0.001)
        await recorder.wait_for(Event.JOB_COMPLETED, 4)
        await scheduler.pause_task(tid)
    assert recorder.count(Event.JOB_STARTED) == 4
