"""Schedule arithmetic as pure functions.

Nothing here reads a clock: times come in as arguments (monotonic seconds), so
each rule can be property-tested on its own.

Two cadences exist:

* fixed (``fixed_interval=True``): runs are due at ``anchor + k * interval``,
  where the anchor is the start of the first run. Dispatch delay never
  accumulates, and slots missed while a run overran are skipped.
* relative (``fixed_interval=False``): the next run is due ``interval`` seconds
  after the previous run finished.
"""

from __future__ import annotations

import math
from numbers import Real

from ._exceptions import ConfigurationError

__all__ = [
    "MAX_SECONDS",
    "next_fixed_slot",
    "next_relative_run",
    "skipped_slots",
    "validate_delay",
    "validate_interval",
]


def next_fixed_slot(anchor: float, interval: float, previous: float, now: float) -> float:
    """The next due time on the cadence ``anchor + k * interval``.

    It is the first slot after ``previous`` (the slot just run) that is not
    already in the past at ``now``: when a run overran, the slots it covered are
    skipped rather than fired back to back.
    """
    first = math.floor((previous - anchor) / interval + 0.5) + 1  # the slot after previous
    k = max(first, math.ceil((now - anchor) / interval))
    # The division can round either way at an exact multiple; settle on the
    # earliest slot that is not in the past.
    while k > first and anchor + (k - 1) * interval >= now:
        k -= 1
    while anchor + k * interval < now:
        k += 1
    return anchor + k * interval


def skipped_slots(interval: float, previous: float, upcoming: float) -> int:
    """How many cadence slots lie strictly between ``previous`` and ``upcoming``."""
    return max(0, round((upcoming - previous) / interval) - 1)


def next_relative_run(finished: float, interval: float) -> float:
    """The next due time when the interval is measured from the end of a run."""
    return finished + interval


#: The longest interval or delay accepted: a century. Anything longer is a unit
#: mistake, and would overflow datetime arithmetic somewhere down the line.
MAX_SECONDS = 100 * 365.25 * 24 * 3600


def _finite_number(value: object, what: str) -> float:
    # bool is an int subclass; ``interval=True`` is a bug, not one second.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigurationError(f"{what} must be a number of seconds, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    if abs(number) > MAX_SECONDS:
        raise ConfigurationError(
            f"{what} must be at most {MAX_SECONDS:.0f} s (100 years), got {value!r}"
        )
    return number


def validate_interval(value: object) -> float:
    """Return ``value`` as seconds, or raise ``ConfigurationError`` unless finite and > 0."""
    seconds = _finite_number(value, "interval")
    if seconds <= 0:
        raise ConfigurationError(f"interval must be greater than 0, got {value!r}")
    return seconds


def validate_delay(value: object) -> float:
    """Return ``value`` as seconds, or raise ``ConfigurationError`` unless finite and >= 0."""
    seconds = _finite_number(value, "delay")
    if seconds < 0:
        raise ConfigurationError(f"delay must be 0 or more, got {value!r}")
    return seconds
