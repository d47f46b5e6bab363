"""``Every``: runs measured in elapsed seconds, the seed's ``interval``.

The cadence arithmetic lives in :mod:`quiv._schedule`; this class only binds it
to a validated interval, so the rules are written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from quiv._exceptions import ConfigurationError
from quiv._schedule import next_fixed_slot, next_relative_run, skipped_slots, validate_interval

from ._base import Trigger

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


def _seconds(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
