"""Run policies that apply to any trigger: jitter, misfire grace, coalescing.

All pure: due times, "now" and the random source come in as arguments. Times
are either monotonic seconds (``float``, for :class:`Every`) or aware
datetimes (for :class:`Cron` and :class:`At`); a call uses one kind throughout.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from quiv._exceptions import ConfigurationError
from quiv._schedule import _finite_number

__all__ = [
    "Overdue",
    "RunPolicy",
    "is_missed",
    "jitter_delay",
    "settle_overdue",
    "validate_coalesce",
    "validate_jitter",
    "validate_max_instances",
    "validate_misfire_grace",
]

T = TypeVar("T", float, datetime)


def validate_jitter(value: object) -> float:
    """``value`` as seconds, or ``ConfigurationError`` unless finite and >= 0."""
    seconds = _finite_number(value, "jitter")
    if seconds < 0:
        raise ConfigurationError(f"jitter must be 0 or more, got {value!r}")
    return seconds


def validate_misfire_grace(value: object) -> float | None:
    """``None`` (late runs always run) or seconds, finite and >= 0."""
    if value is None:
        return None
    seconds = _finite_number(value, "misfire_grace")
    if seconds < 0:
        raise ConfigurationError(f"misfire_grace must be 0 or more (or None), got {value!r}")
    return seconds


def validate_coalesce(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"coalesce must be True or False, got {value!r}")
    return value


def validate_max_instances(value: object) -> int:
    # bool is an int subclass; max_instances=True is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"max_instances must be an int, got {value!r}")
    if value < 1:
        raise ConfigurationError(f"max_instances must be at least 1, got {value!r}")
    return value


@dataclass(frozen=True)
class RunPolicy:
    """How a task's due times turn into runs, whatever its trigger.

    Raises:
        ConfigurationError: if a value is out of range (see the validators).
    """

    jitter: float = 0.0
    misfire_grace: float | None = None
    coalesce: bool = True
    max_instances: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "jitter", validate_jitter(self.jitter))
        object.__setattr__(self, "misfire_grace", validate_misfire_grace(self.misfire_grace))
        object.__setattr__(self, "coalesce", validate_coalesce(self.coalesce))
        object.__setattr__(self, "max_instances", validate_max_instances(self.max_instances))


def jitter_delay(jitter: float, rng: random.Random) -> float:
    """A random delay in ``[0, jitter]`` to add to one run's start.

    Only that run's start moves: the caller keeps computing the next due time
    from the undelayed due time, so the cadence never drifts.
    """
    return rng.uniform(0.0, jitter) if jitter > 0 else 0.0


def _late_by(due: T, now: T) -> float:
    if isinstance(due, datetime) and isinstance(now, datetime):
        return (now - due).total_seconds()
    if isinstance(due, float | int) and isinstance(now, float | int):
        return float(now - due)
    raise TypeError(f"due and now must both be seconds or both datetimes: {due!r}, {now!r}")


def is_missed(due: T, now: T, misfire_grace: float | None) -> bool:
    """Whether a run due at ``due`` that could start only at ``now`` is missed.

    ``None`` grace never misses; starting exactly ``misfire_grace`` late still runs.
    """
    return misfire_grace is not None and _late_by(due, now) > misfire_grace


@dataclass(frozen=True)
class Overdue(Generic[T]):
    """What to do with the runs of one task that became due since it was last checked."""

    run: tuple[T, ...]  # start these now, oldest first (their due times)
    missed: tuple[T, ...]  # record these as missed (JobStatus.MISSED, Event.JOB_MISSED)
    coalesced: int  # due times folded into a run or a missed record, with none of their own


def settle_overdue(
    due: Sequence[T], now: T, *, misfire_grace: float | None, coalesce: bool
) -> Overdue[T]:
    """Split the due times of one task (all at or before ``now``) into runs and misses.

    ``coalesce=True``: the latest due time stands for all of them, and runs
    unless it is itself past grace, in which case it is the one missed record;
    the older ones are counted in ``coalesced``. ``coalesce=False``: each due
    time runs if within grace and is missed otherwise.
    """
    ordered = sorted(due)
    if not ordered:
        return Overdue((), (), 0)
    if coalesce:
        latest = ordered[-1]
        folded = len(ordered) - 1
        if is_missed(latest, now, misfire_grace):
            return Overdue((), (latest,), folded)
        return Overdue((latest,), (), folded)
    run = tuple(d for d in ordered if not is_missed(d, now, misfire_grace))
    missed = tuple(d for d in ordered if is_missed(d, now, misfire_grace))
    return Overdue(run, missed, 0)
