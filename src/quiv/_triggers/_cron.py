"""``Cron``: wall-clock runs from a cron expression, evaluated by ``cronsim``.

Syntax (what cronsim accepts, case-insensitive):

* 5 fields ``minute hour day-of-month month day-of-week``, or 6 with a leading
  ``second`` field;
* ``*``, lists ``1,15``, ranges ``1-5``, steps ``*/15`` and ``10-50/20``;
  month names ``JAN``-``DEC``, day names ``SUN``-``SAT`` (0 and 7 are Sunday);
* day-of-month ``L`` (last day) and ``LW`` (last weekday); day-of-week ``5L``
  (last Friday of the month) and ``MON#2`` (second Monday);
* as in Debian cron, when both day fields are restricted (neither starts with
  ``*``) a day matching either one fires;
* quiv adds the shorthands ``@yearly`` (``@annually``), ``@monthly``,
  ``@weekly``, ``@daily`` (``@midnight``) and ``@hourly``.

Daylight saving follows cronsim, which follows Debian cron:

* A 5-field expression with a fixed minute and hour (neither starts with
  ``*``), such as ``30 2 * * *``, names a wall-clock time. If that time falls in
  the spring-forward gap it runs once, at the first minute after the gap
  (03:00 in Berlin); in the repeated autumn hour it runs once, on the first
  occurrence.
* Any other expression (``0 * * * *``, ``*/30 2 * * *``, 6-field ones) follows
  real instants: ``0 * * * *`` fires 23 times on the spring-forward day and 25
  times on the autumn day; times inside the gap do not exist and are skipped;
  times in the repeated hour fire on both occurrences.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import lru_cache
from itertools import islice
from typing import Any

from cronsim import CronSim, CronSimError

from quiv._exceptions import ConfigurationError

from ._base import UTC, Timeline, Trigger, WallTimeline, optional_zone, require_aware, zone_name

__all__ = ["Cron"]

_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
# Where the validity check starts looking for a first fire time (naive: no DST).
_PARSE_AT = datetime(2000, 1, 1)


@dataclass(frozen=True, init=False, repr=False)
class Cron(Trigger):
    """Run whenever the wall clock in ``timezone`` matches a cron ``expression``.

    See the module docstring for the syntax and the daylight-saving rules.

    Args:
        expression: 5 fields, 6 with seconds first, or an ``@`` shorthand.
        timezone: IANA name or ``tzinfo`` whose wall clock the expression reads;
            ``None`` means the scheduler's ``timezone``.

    Raises:
        ConfigurationError: if the expression is invalid (the message names the
            field) or never fires (no date matches its day fields together).
        InvalidTimezoneError: if ``timezone`` is unknown.
    """

    expression: str
    timezone: tzinfo | None
    _evaluated: str = field(compare=False)  # the expression handed to cronsim

    wall_clock = True

    def __init__(self, expression: str, timezone: str | tzinfo | None = None) -> None:
        normalized, evaluated = _parse(expression)
        object.__setattr__(self, "expression", normalized)
        object.__setattr__(self, "timezone", optional_zone(timezone))
        object.__setattr__(self, "_evaluated", evaluated)

    @property
    def needs_zone(self) -> bool:
        return self.timezone is None

    def with_default_zone(self, zone: str | tzinfo) -> Cron:
        return self if self.timezone is not None else Cron(self.expression, zone)

    def describe(self) -> str:
        where = "" if self.timezone is None else f" ({zone_name(self.timezone)})"
        return f"cron {self.expression!r}{where}"

    def __repr__(self) -> str:
        where = "" if self.timezone is None else f", timezone={zone_name(self.timezone)!r}"
        return f"Cron({self.expression!r}{where})"

    def timeline(self) -> Timeline:
        return WallTimeline(self._next_utc, self._next_utc, self.fire_times)

    def fields(self) -> dict[str, Any]:
        return {"interval_seconds": None, "cron": self.expression, "run_at": None}

    @property
    def zone(self) -> tzinfo:
        """The zone the expression is read in; an error until one is known."""
        if self.timezone is None:
            raise ConfigurationError(
                f"{self.describe()} has no timezone yet; call with_default_zone() first"
            )
        return self.timezone

    def fire_times(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after aware ``after``, as aware UTC datetimes, increasing.

        Lazy and endless (it stops only if nothing matches for 50 years), so a
        caller can keep one open instead of re-parsing for every run.
        """
        start = require_aware(after, "after").astimezone(UTC)
        return _fire_times(self._evaluated, self.zone, start)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (UTC), or ``None`` if none comes."""
        return self._next_utc(require_aware(after, "after").astimezone(UTC))

    def _next_utc(self, start: datetime) -> datetime | None:
        """``next_after`` for an aware UTC ``start``, unchecked: the timeline's hot path."""
        zone = self.zone
        try:
            return _next_fire(self._evaluated, zone, start)
        except TypeError:  # a tzinfo that cannot be hashed: not memoized
            return next(_fire_times(self._evaluated, zone, start), None)

    def due_between(
        self, after: datetime, until: datetime, limit: int | None = None
    ) -> list[datetime]:
        """Fire times in ``(after, until]``, oldest first: the runs that became due.

        ``limit`` caps the list (a long suspend under a per-second expression
        would otherwise list every second); the earliest are kept.
        """
        end = require_aware(until, "until")
        due: list[datetime] = []
        for instant in islice(self.fire_times(after), limit):
            if instant > end:
                break
            due.append(instant)
        return due

    def count_between(self, after: datetime, until: datetime) -> int:
        """How many fire times lie in ``(after, until]``."""
        end = require_aware(until, "until")
        count = 0
        for instant in self.fire_times(after):
            if instant > end:
                break
            count += 1
        return count


def _fire_times(evaluated: str, zone: tzinfo, start: datetime) -> Iterator[datetime]:
    previous = start
    for local in CronSim(evaluated, start.astimezone(zone)):
        instant = local.astimezone(UTC)
        # cronsim evaluates fixed-time expressions on the naive wall clock, so
        # starting inside the second pass of a repeated hour can yield that
        # hour's first pass, which is already past. Such a time already fired
        # (or was never due after ``start``): drop it, so nothing runs twice.
        if instant > previous:
            previous = instant
            yield instant


# Tasks that share a rule fire together, and then each asks for the same next
# fire time: one of them computes it (a cronsim parse and walk), the rest look it up.
@lru_cache(maxsize=4096)
def _next_fire(evaluated: str, zone: tzinfo, start: datetime) -> datetime | None:
    return next(_fire_times(evaluated, zone, start), None)


def _parse(expression: object) -> tuple[str, str]:
    """Validate ``expression``; return its normalized form and the form cronsim reads."""
    if not isinstance(expression, str):
        raise ConfigurationError(f"cron expression must be a string, got {expression!r}")
    return _parse_text(expression)


@lru_cache(maxsize=1024)  # many tasks share a few expressions
def _parse_text(expression: str) -> tuple[str, str]:
    normalized = " ".join(expression.split())
    evaluated = _SHORTHANDS.get(normalized.lower(), normalized)
    parts = evaluated.split()
    if len(parts) not in (5, 6):
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week) or 6 with seconds first, "
            f"got {len(parts)}"
        )
    try:
        first = next(CronSim(evaluated, _PARSE_AT), None)
    except CronSimError as exc:
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: {_which_field(str(exc), parts)}"
        ) from None
    except (ValueError, IndexError) as exc:  # defensive: never leak a parser's own error
        raise ConfigurationError(f"invalid cron expression {expression!r}: {exc}") from None
    if first is None:  # cronsim looks 50 years ahead; the calendar repeats well within that
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: it never fires, no date matches "
            "its day-of-month, month and day-of-week fields together"
        )
    return normalized, evaluated


def _which_field(message: str, parts: list[str]) -> str:
    names = _FIELDS if len(parts) == 6 else _FIELDS[1:]
    for name, part in zip(names, parts, strict=False):
        if message == f"Bad {name}":
            return f"bad {name} field {part!r}"
    return message
