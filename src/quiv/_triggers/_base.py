"""What every trigger shares, and the zone helpers the wall-clock kinds use."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, ClassVar

from quiv._config import resolve_timezone
from quiv._exceptions import ConfigurationError

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

__all__ = [
    "Moment",
    "Timeline",
    "WallTimeline",
    "Trigger",
    "optional_zone",
    "require_aware",
    "zone_name",
]

UTC = timezone.utc
#: Fire instants a wall-clock timeline steps through one ``next_after`` at a
#: time before it switches to one iterator (or jumps straight past now).
WALK_STEPS = 8


@dataclass(frozen=True, slots=True)
class Moment:
    """One instant read on both clocks: monotonic seconds and the aware UTC wall time.

    A due time is a ``Moment`` too. Its own clock (``mono`` for :class:`Every`,
    ``wall`` for the wall-clock kinds) is the truth; the other is derived from
    the ``now`` it was planned at, and re-derived if the wall clock jumps.
    """

    mono: float
    wall: datetime

    @classmethod
    def at_mono(cls, mono: float, now: Moment) -> Moment:
        return cls(mono, now.wall + timedelta(seconds=mono - now.mono))

    @classmethod
    def at_wall(cls, wall: datetime, now: Moment) -> Moment:
        return cls(now.mono + (wall - now.wall).total_seconds(), wall)


class Timeline(ABC):
    """One task's position on its trigger: the mutable half, owned by the scheduler.

    The scheduler asks only these questions, so a new kind of trigger is a new
    pair of classes and no new branch in the engine. ``cursor`` is the latest due
    time already accounted for (run, missed or folded into a run).
    """

    cursor: Moment | None = None

    @abstractmethod
    def start(self, now: Moment, delay: float) -> Moment | None:
        """Reset the position; return the first due, ``delay`` s after ``now`` at the earliest."""

    @abstractmethod
    def overdue(self, now: Moment, limit: int) -> tuple[list[Moment], int]:
        """Due times in ``(cursor, now]``, oldest first (the ``limit`` latest), and their count."""

    def started(self, slot: Moment, now: Moment) -> None:
        """A run for ``slot`` starts at ``now``: the cursor moves up to it."""
        self.advance(slot)

    @abstractmethod
    def advance(self, slot: Moment) -> None:
        """Move the cursor to ``slot`` if it is later."""

    @abstractmethod
    def upcoming(self, now: Moment) -> Moment | None:
        """The due time after the cursor, planned while a run is in flight (None: not yet known)."""

    @abstractmethod
    def after_run(self, now: Moment) -> Moment | None:
        """The next due time once a run ended at ``now``; ones already past are skipped."""

    @abstractmethod
    def late_by(self, slot: Moment, now: Moment) -> float:
        """Seconds ``now`` is past ``slot``, measured on the trigger's own clock."""

    @abstractmethod
    def rebase(self, slot: Moment, now: Moment) -> Moment:
        """``slot`` re-derived against ``now`` (after a wall-clock jump), its own clock kept."""


class WallTimeline(Timeline):
    """The position on a wall-clock rule, given as its sequence of fire instants.

    ``first(after)`` is the first due time for a task scheduled at ``after``;
    ``next_after(after)`` is the first fire instant strictly after ``after``
    (``None``: the rule fires no more); ``fire_times(after)`` lists them all.

    The first fire instant after the cursor is kept, so what is asked around
    every run (is another run overdue? when is the next one?) costs a
    comparison; the rule is consulted again only once the cursor reaches it.
    """

    def __init__(
        self,
        first: Callable[[datetime], datetime | None],
        next_after: Callable[[datetime], datetime | None],
        fire_times: Callable[[datetime], Iterator[datetime]],
    ) -> None:
        self._first = first
        self._next_after = next_after
        self._fire_times = fire_times
        self.cursor = None
        self._next: datetime | None = None  # the first fire instant after the cursor...
        self._known = False  # ...once computed for the cursor as it is now

    def _after_cursor(self, cursor: Moment) -> datetime | None:
        if not self._known:
            self._next = self._next_after(cursor.wall)
            self._known = True
        return self._next

    def start(self, now: Moment, delay: float) -> Moment | None:
        earliest = now.wall + timedelta(seconds=delay)
        self.cursor = Moment.at_wall(earliest, now)  # nothing before this is owed
        self._known = False
        due = self._first(earliest)
        return None if due is None else Moment.at_wall(due, now)

    def overdue(self, now: Moment, limit: int) -> tuple[list[Moment], int]:
        cursor = self.cursor
        if cursor is None:
            return [], 0
        first = self._after_cursor(cursor)
        if first is None or first > now.wall:
            return [], 0  # the common case: nothing else is due
        kept: deque[datetime] = deque(maxlen=limit)
        count = 0
        for instant in self._fires_through(first, now.wall):
            kept.append(instant)
            count += 1
        return [Moment.at_wall(instant, now) for instant in kept], count

    def _fires_through(self, first: datetime, until: datetime) -> Iterator[datetime]:
        """The fire instants from ``first`` (one of them) through ``until``, oldest first.

        The first few come from ``next_after`` one by one: a rule may memoize
        it, and tasks that share a rule fall behind together. A longer walk
        (a long suspend) goes on with one iterator.
        """
        instant: datetime | None = first
        steps = 0
        while instant is not None and instant <= until:
            yield instant
            steps += 1
            if steps == WALK_STEPS:
                for later in self._fire_times(instant):
                    if later > until:
                        return
                    yield later
                return
            instant = self._next_after(instant)

    def advance(self, slot: Moment) -> None:
        cursor = self.cursor
        if cursor is None or slot.wall > cursor.wall:
            self.cursor = slot
            if self._next is not None and slot.wall >= self._next:
                self._known = False  # the cursor reached it: look further

    def upcoming(self, now: Moment) -> Moment | None:
        cursor = self.cursor
        due = self._next_after(now.wall) if cursor is None else self._after_cursor(cursor)
        return None if due is None else Moment.at_wall(due, now)

    def after_run(self, now: Moment) -> Moment | None:
        cursor = self.cursor
        if cursor is None:
            due = self._next_after(now.wall)
        else:
            due = self._after_cursor(cursor)
            steps = 0
            while due is not None and due <= now.wall:  # the run overran it
                steps += 1
                # A few steps along the rule (memoized, shared), then straight past now.
                due = self._next_after(due if steps < WALK_STEPS else now.wall)
        return None if due is None else Moment.at_wall(due, now)

    def late_by(self, slot: Moment, now: Moment) -> float:
        return (now.wall - slot.wall).total_seconds()

    def rebase(self, slot: Moment, now: Moment) -> Moment:
        return Moment.at_wall(slot.wall, now)


class Trigger(ABC):
    """A rule saying when a task's runs are due; immutable, validated when built.

    ``wall_clock`` tells the scheduler which clock the rule speaks: monotonic
    seconds (:class:`Every`) or aware UTC datetimes (:class:`Cron`, :class:`At`).
    ``repeats`` is False for a rule that fires once (:class:`At`): its task is
    removed after that run, as with ``run_once``.
    """

    wall_clock: ClassVar[bool]
    repeats: ClassVar[bool] = True

    @abstractmethod
    def timeline(self) -> Timeline:
        """A fresh position on this rule, for one task."""

    @abstractmethod
    def fields(self) -> dict[str, Any]:
        """This rule's own ``Task`` fields: ``interval_seconds``, ``cron``, ``run_at``."""

    @abstractmethod
    def describe(self) -> str:
        """The readable form shown as ``Task.trigger``."""

    @property
    def needs_zone(self) -> bool:
        """True while the rule still waits for the scheduler's zone to mean anything."""
        return False

    def with_default_zone(self, zone: str | tzinfo) -> Self:
        """This trigger, with ``zone`` filled in where no zone was given (else unchanged).

        Raises:
            InvalidTimezoneError: if ``zone`` is unknown.
        """
        return self

    def __str__(self) -> str:
        return self.describe()


def optional_zone(value: str | tzinfo | None) -> tzinfo | None:
    """Resolve an IANA name or ``tzinfo``; ``None`` stays ``None`` (the scheduler's zone)."""
    return None if value is None else resolve_timezone(value)


def zone_name(zone: tzinfo) -> str:
    """The name to show for ``zone``: the IANA key when it has one."""
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else str(zone)


def require_aware(value: object, what: str) -> datetime:
    """``value`` as an aware datetime, or ``ConfigurationError`` naming ``what``."""
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be timezone-aware, got {value!r}")
    return value
