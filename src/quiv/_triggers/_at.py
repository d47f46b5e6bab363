"""``At``: one run at one wall-clock instant.

A naive ``when`` is a wall-clock time in ``timezone`` and is mapped to an
instant as :mod:`zoneinfo` does (PEP 495):

* inside the spring-forward gap (a time that never shows on the clock) it is
  read with the offset in force before the change, which moves it forward by
  the gap: Berlin's 02:30 on 31 March 2030 runs at 03:30 CEST;
* inside the repeated autumn hour it means the first occurrence (02:30 CEST on
  27 October 2030 in Berlin), unless the datetime has ``fold=1``, which picks
  the second (02:30 CET).

An aware ``when`` is already an instant; ``timezone`` then only chooses how it
is shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from quiv._exceptions import ConfigurationError

from ._base import UTC, Timeline, Trigger, WallTimeline, optional_zone, zone_name

__all__ = ["At"]


@dataclass(frozen=True, init=False, repr=False)
class At(Trigger):
    """Run once, at ``when``; a ``when`` already past when scheduled runs at once.

    Args:
        when: a ``datetime``; naive means wall-clock time in ``timezone``.
        timezone: IANA name or ``tzinfo`` for a naive ``when`` (and for showing
            it); ``None`` means the scheduler's ``timezone``.

    Raises:
        ConfigurationError: if ``when`` is not a datetime.
        InvalidTimezoneError: if ``timezone`` is unknown.
    """

    when: datetime  # aware (in ``timezone`` when given) once resolvable, else naive
    timezone: tzinfo | None

    wall_clock = True
    repeats = False

    def __init__(self, when: datetime, timezone: str | tzinfo | None = None) -> None:
        if not isinstance(when, datetime):
            raise ConfigurationError(f"run_at must be a datetime, got {when!r}")
        zone = optional_zone(timezone)
        if when.tzinfo is not None and when.utcoffset() is None:
            raise ConfigurationError(f"run_at has a tzinfo that gives no UTC offset: {when!r}")
        object.__setattr__(self, "when", _localize(when, zone))
        object.__setattr__(self, "timezone", zone)

    @property
    def needs_zone(self) -> bool:
        return self.when.tzinfo is None

    def with_default_zone(self, zone: str | tzinfo) -> At:
        return At(self.when, zone) if self.needs_zone else self

    def describe(self) -> str:
        pending = " (scheduler's zone)" if self.needs_zone else ""
        return f"at {self.when.isoformat()}{pending}"

    def __repr__(self) -> str:
        where = "" if self.timezone is None else f", timezone={zone_name(self.timezone)!r}"
        return f"At({self.when!r}{where})"

    def timeline(self) -> Timeline:
        return WallTimeline(self.first_due, self.next_after, self.fire_times)

    def fields(self) -> dict[str, Any]:
        return {"interval_seconds": None, "cron": None, "run_at": self.instant}

    @property
    def instant(self) -> datetime:
        """The run's instant as an aware UTC datetime; an error until a zone is known."""
        if self.needs_zone:
            raise ConfigurationError(
                f"{self.describe()} has no timezone yet; call with_default_zone() first"
            )
        return self.when.astimezone(UTC)

    def first_due(self, now: datetime) -> datetime:
        """When the run is due if scheduled at ``now``: a past instant means ``now``.

        A ``run_at`` that is already past when the task is added is not late
        (so no misfire grace applies to it); one that passes while the
        scheduler was suspended is, and is judged by its own instant.
        """
        return max(self.instant, now)

    def next_after(self, after: datetime) -> datetime | None:
        """The instant if it is strictly after ``after``, else ``None``."""
        instant = self.instant
        return instant if instant > after else None

    def fire_times(self, after: datetime) -> Iterator[datetime]:
        """The instant, if it is strictly after ``after``."""
        instant = self.instant
        if instant > after:
            yield instant

    def due_between(self, after: datetime, until: datetime) -> list[datetime]:
        """``[instant]`` if it lies in ``(after, until]``, else ``[]``."""
        instant = self.instant
        return [instant] if after < instant <= until else []


def _localize(when: datetime, zone: tzinfo | None) -> datetime:
    if when.tzinfo is not None:
        return when if zone is None else when.astimezone(zone)
    if zone is None:
        return when  # resolved by with_default_zone
    # Attach the zone (keeping ``fold``), then round-trip through UTC so a time
    # in a gap becomes the wall-clock time that actually occurs at that instant.
    return when.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
