"""``Every``: runs measured in elapsed seconds, the seed's ``interval``.

The cadence arithmetic lives in :mod:`quiv._schedule`; this class only binds it
to a validated interval, so the rules are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quiv._exceptions import ConfigurationError
from quiv._schedule import next_fixed_slot, next_relative_run, skipped_slots, validate_interval

from ._base import Moment, Timeline, Trigger

__all__ = ["Every"]


@dataclass(frozen=True, repr=False)
class Every(Trigger):
    """Run every ``seconds``, timed on the monotonic clock.

    Elapsed time is immune to wall-clock jumps and daylight-saving changes: an
    hourly ``Every(3600)`` stays 3600 s apart across a clock change, unlike
    ``Cron('0 * * * *')``.

    Args:
        seconds: the interval, finite and greater than 0.
        fixed: ``True`` keeps runs on the cadence ``anchor + k * seconds``
            (anchor: the start of the first run), skipping slots a run overran;
            ``False`` waits ``seconds`` after each run ends.

    Raises:
        ConfigurationError: if ``seconds`` is not a positive finite number or
            ``fixed`` is not a bool.
    """

    seconds: float
    fixed: bool = True

    wall_clock = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", validate_interval(self.seconds))
        if not isinstance(self.fixed, bool):
            raise ConfigurationError(f"fixed must be True or False, got {self.fixed!r}")

    def describe(self) -> str:
        return f"every {_seconds(self.seconds)}s ({'fixed' if self.fixed else 'relative'})"

    def __repr__(self) -> str:
        return f"Every({_seconds(self.seconds)}, fixed={self.fixed})"

    def timeline(self) -> Timeline:
        return _EveryTimeline(self)

    def fields(self) -> dict[str, Any]:
        return {
            "interval_seconds": self.seconds,
            "fixed_interval": self.fixed,
            "cron": None,
            "run_at": None,
        }

    def next_due(self, *, anchor: float, last_slot: float, ended: float) -> float:
        """When the run after the one on ``last_slot`` is due; it ended at ``ended``.

        Fixed: the first cadence slot after ``last_slot`` that is not already
        past at ``ended``. Relative: ``seconds`` after ``ended``.
        """
        if self.fixed:
            return next_fixed_slot(anchor, self.seconds, last_slot, ended)
        return next_relative_run(ended, self.seconds)

    def skipped(self, last_slot: float, upcoming: float) -> int:
        """How many slots a fixed cadence skips between ``last_slot`` and ``upcoming``."""
        return skipped_slots(self.seconds, last_slot, upcoming) if self.fixed else 0

    def overdue_slots(self, *, anchor: float, last_slot: float, now: float) -> list[float]:
        """The fixed-cadence slots after ``last_slot`` that are due at ``now``, oldest first.

        This is what ``coalesce=False`` runs one by one (and ``misfire_grace``
        judges one by one). A relative cadence has no slots to fall behind on,
        so it has none.
        """
        if not self.fixed:
            return []
        upcoming = next_fixed_slot(anchor, self.seconds, last_slot, now)
        between = skipped_slots(self.seconds, last_slot, upcoming)
        slots = [upcoming - (between + 1 - i) * self.seconds for i in range(1, between + 1)]
        if upcoming <= now:
            slots.append(upcoming)
        return slots


class _EveryTimeline(Timeline):
    """The position on an ``Every``: the anchor of its grid and the last slot run."""

    def __init__(self, every: Every) -> None:
        self.every = every
        self.anchor: float | None = None
        self.cursor = None

    def start(self, now: Moment, delay: float) -> Moment | None:
        self.anchor = None  # the grid anchors on the first run's actual start
        self.cursor = None
        return Moment.at_mono(now.mono + delay, now)

    def overdue(self, now: Moment, limit: int) -> tuple[list[Moment], int]:
        if self.anchor is None or self.cursor is None:
            return [], 0
        slots = self.every.overdue_slots(
            anchor=self.anchor, last_slot=self.cursor.mono, now=now.mono
        )
        kept = slots[len(slots) - limit :] if limit else []
        return [Moment.at_mono(slot, now) for slot in kept], len(slots)

    def started(self, slot: Moment, now: Moment) -> None:
        if self.every.fixed and self.anchor is None:
            self.anchor = now.mono
            self.cursor = now
        else:
            self.advance(slot)

    def advance(self, slot: Moment) -> None:
        if self.cursor is None or slot.mono > self.cursor.mono:
            self.cursor = slot

    def upcoming(self, now: Moment) -> Moment | None:
        if not self.every.fixed or self.anchor is None or self.cursor is None:
            return None  # relative: known only once the run ends
        return Moment.at_mono(
            self.every.next_due(anchor=self.anchor, last_slot=self.cursor.mono, ended=now.mono), now
        )

    def after_run(self, now: Moment) -> Moment | None:
        if not self.every.fixed or self.anchor is None or self.cursor is None:
            return Moment.at_mono(now.mono + self.every.seconds, now)
        return self.upcoming(now)

    def late_by(self, slot: Moment, now: Moment) -> float:
        return now.mono - slot.mono

    def rebase(self, slot: Moment, now: Moment) -> Moment:
        return Moment.at_mono(slot.mono, now)


def _seconds(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
