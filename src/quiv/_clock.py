"""Time, read through one injectable object.

The scheduler reads two clocks: a monotonic one for arithmetic on due times
(immune to wall-clock jumps) and the UTC wall clock for the timestamps it
records. Waiting goes through the clock too, so a test can swap in
:class:`VirtualClock` and step time forward instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

import anyio

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    """What the scheduler needs from time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; used for due times."""
        ...

    def now(self) -> datetime:
        """The current UTC-aware wall-clock time; used for records."""
        ...

    async def wait(self, wakeup: anyio.Event, deadline: float | None) -> None:
        """Return once ``wakeup`` is set or ``monotonic()`` reaches ``deadline``."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` (asyncio's loop clock) and UTC now.

    Nothing announces a step of the system's wall clock (an NTP correction, a
    resume from suspend) to a sleeping process, so while wall-clock tasks
    (cron, ``run_at``) exist the scheduler looks again at most every
    ``wall_recheck`` seconds; a jump is then handled within that long.
    """

    #: Seconds between looks at the wall clock while wall-clock tasks exist.
    wall_recheck: float = 60.0

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def wait(self, wakeup: anyio.Event, deadline: float | None) -> None:
        if deadline is None:
            await wakeup.wait()
            return
        # A loop timer that sets the event costs far less than a cancel scope, and
        # asyncio's loop.time() is time.monotonic(), so the deadline needs no conversion.
        timer = asyncio.get_running_loop().call_at(deadline, wakeup.set)
        try:
            await wakeup.wait()
        finally:
            timer.cancel()


class VirtualClock:
    """A clock that moves only when told to, for deterministic tests.

    Use it on the scheduler's event loop: ``advance`` wakes every sleeper whose
    deadline it passes; ``jump`` moves the wall clock alone, as a suspend or an
    NTP step does, and wakes every sleeper so the scheduler notices at once.
    Handlers still run for real; only the scheduler's notion of "now" is virtual.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2030, 1, 1, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start")
        # In UTC: adding seconds to a zoned datetime adds wall-clock time, which
        # is wrong across a daylight-saving change.
        self._start = start.astimezone(timezone.utc)
        self._elapsed = 0.0
        self._wall_shift = 0.0
        self._sleepers: dict[anyio.Event, float] = {}

    def monotonic(self) -> float:
        return self._elapsed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed + self._wall_shift)

    def jump(self, seconds: float) -> None:
        """Move the wall clock alone by ``seconds`` (either way); monotonic time stays.

        This is what a resume from suspend (forward) or an NTP step looks like.
        """
        self._wall_shift += seconds
        for wakeup in list(self._sleepers):
            wakeup.set()

    async def wait(self, wakeup: anyio.Event, deadline: float | None) -> None:
        if deadline is not None:
            if deadline <= self._elapsed:
                return
            self._sleepers[wakeup] = deadline
        try:
            await wakeup.wait()
        finally:
            self._sleepers.pop(wakeup, None)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers now due."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._elapsed += seconds
        for wakeup, deadline in list(self._sleepers.items()):
            if deadline <= self._elapsed:
                wakeup.set()
