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
from typing import cast

from ._exceptions import ConfigurationError

__all__ = [
    "MAX_SECONDS",
    "MIN_INTERVAL",
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

    Total for finite inputs: it returns a finite time no earlier than ``now``,
    in a bounded number of steps, even where floats are too coarse to tell
    one slot from the next (then it falls back to ``now``).
    """
    done = (previous - anchor) / interval  # slots from the anchor to the one just run
    ahead = (now - anchor) / interval
    if not (math.isfinite(done) and math.isfinite(ahead)):
        return now
    first = math.floor(done + 0.5) + 1  # the slot after previous
    k = max(first, math.ceil(ahead))
    # The division can round either way at an exact multiple, by one slot at
    # most: settle on the earliest slot that is not in the past.
    if k > first and anchor + (k - 1) * interval >= now:
        k -= 1
    elif anchor + k * interval < now:
        k += 1
    slot = anchor + k * interval
    return slot if now <= slot < math.inf else now


def skipped_slots(interval: float, previous: float, upcoming: float) -> int:
    """How many cadence slots lie strictly between ``previous`` and ``upcoming``."""
    gap = (upcoming - previous) / interval
    if not math.isfinite(gap):
        return 0
    return max(0, round(gap) - 1)


def next_relative_run(finished: float, interval: float) -> float:
    """The next due time when the interval is measured from the end of a run."""
    return finished + interval


#: The longest interval or delay accepted: a century. Anything longer is a unit
#: mistake, and would overflow datetime arithmetic somewhere down the line.
MAX_SECONDS = 100 * 365.25 * 24 * 3600

#: The shortest interval accepted: a millisecond. Nothing runs more often than
#: a loop round trip anyway, and a shorter period only turns the cadence into
#: a busy loop (and, far enough below it, into float arithmetic that cannot
#: tell one slot from the next).
MIN_INTERVAL = 0.001


def _finite_number(value: object, what: str) -> float:
    # bool is an int subclass; ``interval=True`` is a bug, not one second. A plain
    # int or float (nearly every call) skips the slower check against ``Real``.
    kind = type(value)
    if (
        kind is not float
        and kind is not int
        and (isinstance(value, bool) or not isinstance(value, Real))
    ):
        raise ConfigurationError(f"{what} must be a number of seconds, got {value!r}")
    try:
        number = float(cast(Real, value))  # an int, a float or another Real: checked above
    except OverflowError:  # an int (or Fraction) beyond float's range
        number = math.inf
    except Exception as exc:  # a Real subclass whose __float__ is broken
        raise ConfigurationError(f"{what} must convert to a float, got {value!r}") from exc
    if not math.isfinite(number):
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    if abs(number) > MAX_SECONDS:
        raise ConfigurationError(
            f"{what} must be at most {MAX_SECONDS:.0f} s (100 years), got {value!r}"
        )
    return number


def validate_interval(value: object) -> float:
    """Return ``value`` as seconds, or raise ``ConfigurationError`` unless finite and >= 1 ms."""
    seconds = _finite_number(value, "interval")
    if seconds < MIN_INTERVAL:
        raise ConfigurationError(
            f"interval must be at least {MIN_INTERVAL} s (1 ms), got {value!r}"
        )
    return seconds


def validate_delay(value: object) -> float:
    """Return ``value`` as seconds, or raise ``ConfigurationError`` unless finite and >= 0."""
    seconds = _finite_number(value, "delay")
    if seconds < 0:
        raise ConfigurationError(f"delay must be 0 or more, got {value!r}")
    return seconds
